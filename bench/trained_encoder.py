"""The trained-encoder row of bench/int8.py (issue #21): the demo encoder's held-out task, every variant
against fp32, and the goals the issue sets int8 on trained weights.

Held-out data: ``word_order_set`` (stdlib docstrings none of which the encoder trained on, each in all
three orders, so the classes are exactly balanced). Per variant:

  accuracy, balanced_accuracy   the task, at the card's length (the first 128 bytes)
  by_length[S]                  the same examples cut to their first S bytes, for each benchmarked S:
                                top-1 class agreement with fp32, the budget metrics against fp32
                                (``budget.measure``: cosine over the hidden states of real tokens and the
                                logits, top-1 on the logits) and whether the variant's budget holds there

Goals (``goals``): int8 latency <= 0.9x optimum-int8 at each S (int8 / optimum-bert-int8, optimum on a
BertModel of the same size, is reported beside it, not judged: see bench/optimum_int8.py); top-1
agreement with fp32 >= 0.95 at each S; the int8 target's budget met at every length (the bench's
lengths on held-out rows, and the lengths of the bundle's own parity cases, read from its manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LATENCY_GOAL = 0.9  # int8 / optimum-int8, at most
AGREEMENT_GOAL = 0.95  # top-1 class agreement with fp32, at least
OURS, PEER, BERT_REFERENCE = "int8", "optimum-int8", "optimum-bert-int8"


def held_out(length: int, examples: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, attention_mask, labels of the held-out word-order set; ``examples`` keeps the first
    ones, a whole number of texts (each text comes in all three orders, so the classes stay balanced)."""
    from edgeformer.data import ORDERS
    from edgeformer.demo import word_order_set

    ids, mask, labels = (t.numpy() for t in word_order_set(length))
    if examples is not None:
        n = max(len(ORDERS), examples - examples % len(ORDERS))
        ids, mask, labels = ids[:n], mask[:n], labels[:n]
    return ids, mask, labels


def _outputs(model: Any, ids: np.ndarray, mask: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [model.encode(ids[i : i + 64], mask[i : i + 64]) for i in range(0, len(ids), 64)]


def _scores(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    recalls = [(preds[labels == c] == c).mean() for c in np.unique(labels)]
    return {"accuracy": float((preds == labels).mean()), "balanced_accuracy": float(np.mean(recalls))}


def _budget_of(bundle: Path) -> dict[str, float]:
    from edgeformer.budget import budget_for
    from edgeformer.runtime.bundle import read_bundle

    manifest = read_bundle(bundle, verify=False).manifest
    target = manifest.get("target") or {}
    precision = str(manifest.get("precision") or target.get("precision") or "fp32")
    budget = {k: v for k, v in budget_for(precision, target.get("budget")).items() if k != "perplexity"}
    return budget


def encoder_accuracy(
    bundles: dict[str, Path], lengths: list[int], examples: int | None = None, task_length: int = 128
) -> dict[str, dict[str, Any]]:
    """Per variant (fp32 first: the reference): the task at ``task_length`` and, per length,
    agreement and budget metrics against fp32 (see the module docstring)."""
    from edgeformer.budget import measure, violations
    from edgeformer.runtime import load

    ids, mask, labels = held_out(task_length, examples)
    cuts = {s: (ids[:, :s], mask[:, :s]) for s in sorted({*lengths, task_length})}
    out: dict[str, dict[str, Any]] = {}
    reference: dict[int, list[dict[str, np.ndarray]]] = {}
    for name, path in bundles.items():
        model = load(path, threads=2)
        row: dict[str, Any] = {"examples": len(labels), "budget": _budget_of(path), "by_length": {}}
        for s, (i, m) in cuts.items():
            got = _outputs(model, i, m)
            ref = reference.setdefault(s, got)  # fp32 first
            preds = np.concatenate([g["logits"].argmax(-1) for g in got])
            want = np.concatenate([r["logits"].argmax(-1) for r in ref])
            feeds = [{"input_ids": i[k : k + 64], "attention_mask": m[k : k + 64]} for k in range(0, len(i), 64)]
            metrics = measure(ref, got, feeds)
            cell: dict[str, Any] = {"top1_vs_fp32": float((preds == want).mean()), **_scores(preds, labels)}
            cell |= {"cosine": metrics["cosine"], "cosine_min": metrics["cosine_min"]}
            cell["budget_misses"] = violations({"cosine": cell["cosine"], "top1": cell["top1_vs_fp32"]}, row["budget"])
            row["by_length"][s] = cell
        row |= {k: row["by_length"][task_length][k] for k in ("accuracy", "balanced_accuracy", "top1_vs_fp32")}
        out[name] = row
    return out


def recorded_parity(bundle: Path) -> dict[str, Any]:
    """What the bundle's own checks recorded, by sequence length: parity cases (ok, worst cosine)
    and the verdict on real rows (ok, the lengths it judged)."""
    from edgeformer.runtime.bundle import read_bundle

    manifest = read_bundle(bundle, verify=False).manifest
    by_length: dict[int, dict[str, Any]] = {}
    for case in (manifest.get("parity") or {}).get("cases", []):
        s = int(case.get("dims", {}).get("sequence", 0))
        cell = by_length.setdefault(s, {"ok": True, "cosine": 1.0})
        cell["ok"] = cell["ok"] and bool(case.get("ok"))
        cell["cosine"] = min(cell["cosine"], float(case.get("metrics", {}).get("cosine", 1.0)))
    verdict = ((manifest.get("quantization") or {}).get("verdict")) or {}
    return {
        "parity_by_length": dict(sorted(by_length.items())),
        "verdict": {k: verdict.get(k) for k in ("ok", "lengths", "measured", "bounds", "misses")} if verdict else None,
    }


def goals(
    latency_rows: dict[tuple[str, int], dict[str, Any]],
    accuracy: dict[str, dict[str, Any]],
    recorded: dict[str, Any],
    lengths: list[int],
    peer_note: str | None = None,
) -> dict[str, Any]:
    """The issue's goals for the int8 row, each with its value and whether it holds (None: not measured)."""
    from edgeformer.benchmark import report as report_mod

    by_s: dict[int, dict[str, Any]] = {}
    for s in lengths:
        ours, peer = latency_rows.get((OURS, s)), latency_rows.get((PEER, s))
        ratio = report_mod.ratio(ours, peer) if ours and peer else None
        cell: dict[str, Any] = {
            "latency_vs_optimum": ratio,
            "latency_ok": None if ratio is None else ratio <= LATENCY_GOAL,
        }
        bert = latency_rows.get((BERT_REFERENCE, s))
        cell["latency_vs_optimum_bert"] = report_mod.ratio(ours, bert) if ours and bert else None  # not judged
        for name in (OURS, PEER):
            agree = accuracy[name]["by_length"][s]["top1_vs_fp32"] if name in accuracy else None
            cell[f"{name}_top1_vs_fp32"] = agree
        cell["agreement_ok"] = cell[f"{OURS}_top1_vs_fp32"] >= AGREEMENT_GOAL
        cell["budget_ok"] = not accuracy[OURS]["by_length"][s]["budget_misses"]
        by_s[s] = cell
    parity_ok = all(c["ok"] for c in recorded["parity_by_length"].values())
    verdict_ok = recorded["verdict"] is None or bool(recorded["verdict"]["ok"])
    met = [c[k] for c in by_s.values() for k in ("latency_ok", "agreement_ok", "budget_ok")] + [parity_ok, verdict_ok]
    return {
        "latency_goal": LATENCY_GOAL,
        "agreement_goal": AGREEMENT_GOAL,
        "by_length": by_s,
        "recorded": recorded,
        "recorded_budget_ok": parity_ok and verdict_ok,
        "optimum": peer_note or ("measured" if PEER in accuracy else "not measured"),
        "all_met": None if None in met else all(met),
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def goal_lines(g: dict[str, Any], accuracy: dict[str, dict[str, Any]]) -> list[str]:
    """The goals as a table: a line per length, then balanced accuracy per variant."""
    lines = [f"  trained-encoder goals (optimum: {g['optimum']})"]
    lines.append(
        f"  {'S':>5} {'int8/optimum':>13} {'int8/bert':>10} {'int8 top1':>10} {'optimum top1':>13} {'int8 budget':>12}"
        f"   goals: latency <= {g['latency_goal']}, top-1 agreement >= {g['agreement_goal']}"
    )
    for s, c in g["by_length"].items():
        lines.append(
            f"  {s:>5} {_fmt(c['latency_vs_optimum'], '.3f'):>13} {_fmt(c.get('latency_vs_optimum_bert'), '.3f'):>10}"
            f" {_fmt(c['int8_top1_vs_fp32'], '.4f'):>10}"
            f" {_fmt(c['optimum-int8_top1_vs_fp32'], '.4f'):>13} {'met' if c['budget_ok'] else 'MISSED':>12}"
        )
    parity = ", ".join(
        f"S={s} {'ok' if c['ok'] else 'MISS'} (cos {c['cosine']:.4f})"
        for s, c in g["recorded"]["parity_by_length"].items()
    )
    lines.append(
        f"  int8 bundle's own checks: {parity or 'none recorded'};"
        f" budget {'met' if g['recorded_budget_ok'] else 'MISSED'}"
    )
    for name, row in accuracy.items():
        lines.append(
            f"  balanced accuracy {name:13s} {row['balanced_accuracy']:.4f} ({row['examples']} held-out examples)"
        )
    lines.append(f"  all goals met: {'-' if g['all_met'] is None else 'yes' if g['all_met'] else 'NO'}")
    return lines
