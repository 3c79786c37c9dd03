"""Several files replaced as one unit (io.atomic_group): `import --force` writes a card, its
checkpoint and its tokenizer; a kill at any moment leaves the complete earlier set or the complete
new one once the next reader or writer has repaired the directory. And `import` writes over nothing
the user owns."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from killharness import EDGEFORMER, run_and_kill

from edgeformer.cli import main
from edgeformer.config import load_card
from edgeformer.io import atomic_group, repair_groups, sha256_file

NAMES = ["a.toml", "a.safetensors", "a.tokenizer.json"]
POINTS = [
    "atomic_group:journaled",
    "atomic_group:moved-old:a.toml",
    "atomic_group:moved-old:a.tokenizer.json",
    "atomic_group:moved-new:a.toml",
    "atomic_group:moved-new:a.safetensors",
    "atomic_group:committed",
]
WRITER = """
import shutil
import sys
from pathlib import Path
from edgeformer.io import atomic_group
d = Path(sys.argv[1])
with atomic_group([d / n for n in {names!r}]) as tmps:
    for t in tmps:
        t.write_text("new " + t.name.split(".")[1])
"""


def _state(directory: Path, old: dict[str, str]) -> str:
    """ "old" or "new": every file of the group from the same write, and nothing else left."""
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted(old), names  # no temporaries, no journal, no .old file
    texts = {n: (directory / n).read_text() for n in old}
    if texts == old:
        return "old"
    assert all(t.startswith("new ") for t in texts.values()), texts
    return "new"


@pytest.mark.parametrize("point", POINTS)
def test_a_group_killed_anywhere_is_all_old_or_all_new(tmp_path, point):
    old = {n: f"old {n}" for n in NAMES}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    script = WRITER.format(names=NAMES)
    result = run_and_kill([sys.executable, "-c", script, str(tmp_path)], at_point=point, timeout=60)
    assert result.killed and result.paused_at == point, result.log
    load_card_dir = repair_groups(tmp_path)  # what the next reader or writer does first
    assert len(load_card_dir) == 1
    want = "new" if point == "atomic_group:committed" else "old"
    assert _state(tmp_path, old) == want


def test_a_group_where_no_file_existed_is_rolled_back_to_nothing(tmp_path):
    script = WRITER.format(names=NAMES)
    point = "atomic_group:moved-new:a.safetensors"
    result = run_and_kill([sys.executable, "-c", script, str(tmp_path)], at_point=point, timeout=60)
    assert result.killed, result.log
    assert (tmp_path / "a.toml").exists()  # half the group is in place until repaired
    repair_groups(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_inside_the_group_keeps_the_earlier_files(tmp_path):
    (tmp_path / "a.toml").write_text("old")
    with pytest.raises(RuntimeError), atomic_group([tmp_path / "a.toml", tmp_path / "a.safetensors"]) as tmps:
        tmps[0].write_text("new")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["a.toml"] and (tmp_path / "a.toml").read_text() == "old"


# ----- import ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 directory with a tokenizer.json."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(directory)
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(directory / "tokenizer.json"))
    return directory


def _import(*args: object):
    return CliRunner().invoke(main, ["import", *map(str, args)], catch_exceptions=False)


def test_import_checks_every_file_it_writes(hf_dir, tmp_path):
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"the user's own weights")
    result = _import(hf_dir, "-o", tmp_path / "mine.toml")
    assert result.exit_code == 1 and "mine.safetensors already exists" in result.output, result.output
    result = _import(hf_dir, "-o", tmp_path / "mine.toml", "--force")
    assert result.exit_code == 1 and "not written by an earlier `edgeformer import`" in result.output
    assert mine.read_bytes() == b"the user's own weights" and not (tmp_path / "mine.toml").exists()


def test_import_force_replaces_an_earlier_import(hf_dir, tmp_path):
    card = tmp_path / "mine.toml"
    assert _import(hf_dir, "-o", card).exit_code == 0
    assert _import(hf_dir, "-o", card, "--name", "renamed", "--force").exit_code == 0
    assert load_card(card).name == "renamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.safetensors", "mine.tokenizer.json", "mine.toml"]


@pytest.mark.parametrize("point", ["atomic_group:moved-new:mine.toml", "atomic_group:committed"])
def test_import_force_killed_between_its_writes(hf_dir, tmp_path, point):
    card = tmp_path / "mine.toml"
    assert _import(hf_dir, "-o", card, "--name", "first").exit_code == 0
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = [*EDGEFORMER, "import", str(hf_dir), "-o", str(card), "--name", "second", "--force"]
    result = run_and_kill(args, at_point=point)
    assert result.killed, result.log
    loaded = load_card(card)  # the reader repairs first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)
    assert loaded.name == ("second" if point.endswith("committed") else "first")
    assert sha256_file(loaded.checkpoint) == loaded.checkpoint_sha256
    if loaded.name == "first":
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old


def test_a_long_directory_name_makes_a_card_name_within_the_limit(hf_dir, tmp_path, monkeypatch):
    long_dir = tmp_path / ("m" * 200)
    shutil.copytree(hf_dir, long_dir)
    monkeypatch.chdir(tmp_path)
    result = _import(long_dir)
    assert result.exit_code == 0, result.output
    assert load_card(tmp_path / f"{'m' * 100}.toml").name == "m" * 100


def test_a_planted_journal_touches_no_file_of_the_user(tmp_path):
    """A card directory from a stranger may hold a journal: the card reader's repair must not let it
    delete, replace or reach any file (only a group's own temporaries, by name and digest)."""
    import json

    (tmp_path / "thesis.txt").write_text("mine")
    (tmp_path / ".thesis.txt.999999.ab.old").write_text("the stranger's version")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("mine too")
    plants = {
        "replace": [{"path": "thesis.txt", "new": ".thesis.txt.999999.ab.tmp", "old": ".thesis.txt.999999.ab.old"}],
        "delete": [{"path": "thesis.txt", "new": ".thesis.txt.999999.cd.tmp", "old": None}],
        "escape": [{"path": "outside/keep.txt", "new": ".keep.txt.999999.ab.tmp", "old": None}],
        "absolute": [{"path": str(tmp_path / "outside" / "keep.txt"), "new": ".k.999999.ab.tmp", "old": None}],
    }
    for i, (why, entries) in enumerate(plants.items()):
        for entry in entries:
            entry["sha256"] = "0" * 64
        (tmp_path / f".card.toml.999999.{i}{why}.journal").write_text(json.dumps({"entries": entries}))
    repair_groups(tmp_path)
    (tmp_path / "card.toml").write_text('name = "x"\n[model]\nfamily = "encoder"\n')
    with pytest.raises(Exception, match="vocab_size"):
        load_card(tmp_path / "card.toml")  # the reader repairs first, too
    assert (tmp_path / "thesis.txt").read_text() == "mine"
    assert (tmp_path / "outside" / "keep.txt").read_text() == "mine too"
