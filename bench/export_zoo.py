"""Export and check every card of the zoo, one subprocess per card, reporting wall time, peak
memory (max RSS of the export process), bundle size and the parity summary.

    python bench/export_zoo.py                      # every card
    python bench/export_zoo.py gpt2-small bert-base # some cards
    python bench/export_zoo.py --json zoo.json

The large cards take minutes each (gpt-xl-2048: tens of minutes and ~20 GB); the edge-sized ones
are also covered by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeformer.benchmark.harness import python_command  # noqa: E402
from edgeformer.zoo import card_names  # noqa: E402

# A fresh interpreter per card whose only child is the export, so its children's max RSS is
# exactly the export's peak memory.
WRAP = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)"
)

EXPORT_TIMEOUT_S = 4 * 3600  # the largest card on a small machine


def run_one(card: str, workdir: Path, max_sequence: int | None = None) -> dict:
    out = workdir / card
    export, _ = python_command(["-m", "edgeformer.cli", "export", card, "-o", str(out), "--force", "--json"])
    if max_sequence:
        export += ["--max-sequence", str(max_sequence)]
    wrap, env = python_command(["-c", WRAP, *export])  # the harness's python -P and PYTHONPATH
    start = time.perf_counter()
    proc = subprocess.run(wrap, capture_output=True, text=True, env=env, timeout=EXPORT_TIMEOUT_S)
    seconds = time.perf_counter() - start
    peak = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_KB ")]
    row: dict = {"card": card, "seconds": round(seconds, 1), "exit_code": proc.returncode, "max_sequence": max_sequence}
    row["peak_rss_gb"] = round(int(peak[-1]) / 1e6, 2) if peak else None
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1:] or proc.stdout.strip().splitlines()[-1:]
        return row
    manifest = json.loads(proc.stdout[proc.stdout.index("{") :])
    row["files"] = {name: (out / name).stat().st_size for name in manifest["files"]}
    parity = manifest["parity"]
    row["parity_ok"] = parity["ok"]
    row["worst_max_rel"] = parity["worst_max_rel"]
    row["shapes_checked"] = len(parity["cases"])
    if parity.get("generation"):
        row["greedy_identical"] = parity["generation"]["identical"]
    for graph, report in manifest.get("fusions", {}).items():
        row[f"fused_{graph}"] = {k: f"{v['fused']}/{v['blocks']}" for k, v in report["coverage"].items() if v["blocks"]}
    for name in manifest["files"]:
        (out / name).unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cards", nargs="*", help="cards to export (default: all)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument("--workdir", type=Path, help="where bundles are written (default: a temporary directory)")
    parser.add_argument("--max-sequence", type=int, help="check parity up to this length, not the card's maximum")
    args = parser.parse_args()
    cards = args.cards or card_names()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgeformer-zoo-"))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows = []
    for card in cards:
        row = run_one(card, workdir, args.max_sequence)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
