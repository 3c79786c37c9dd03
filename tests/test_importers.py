"""Pretrained Hugging Face directories imported into edgeformer models (edgeformer.importers).

Tiny random BERT, sentence-transformers, GPT-2 and BART models are built here from configs (every
weight randomized, layer norms and biases included, so a swapped tensor shows), saved with
``save_pretrained`` together with tokenizers trained here, and imported. Numbers first: outputs
against transformers' own torch models within 1e-4, sentence embeddings against
sentence-transformers within 1e-5 cosine distance; then behaviour: 32 greedy tokens identical;
each family exported once (module fixture) with full fusion coverage and parity; then bad input.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from edgeformer import runtime
from edgeformer.cli import main
from edgeformer.config import ModelCard, load_card, parse_card, render_card
from edgeformer.errors import BundleError, CheckpointError, ModelImportError, UnsupportedArchitectureError
from edgeformer.export.manifest_read import read_manifest
from edgeformer.export.source import source_from_card
from edgeformer.importers import import_directory, rebuild_source, source_from_directory, write_card
from edgeformer.importers.sentence import read_layout
from edgeformer.nn.checkpoint import load_model
from edgeformer.parity import torch_greedy
from edgeformer.pipeline import export_bundle
from edgeformer.runtime.errors import NoTokenizerError
from edgeformer.verify_bundle import check_bundle
from edgeformer.zoo import resolve_target

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("transformers", "sentence_transformers", "tokenizers")),
    reason="transformers, sentence-transformers and tokenizers (test-only dependencies) are not all installed",
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from the directory; never ask a hub

TOL = 1e-4
STEPS = 32
D, HEADS, LAYERS, FFN, POSITIONS = 32, 4, 2, 64, 48
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a model card describes the architecture of a transformer",
    "export the model to onnx and check parity against torch",
    "edge devices run small transformers with int8 weights",
    "attention is all you need, said the paper in 2017",
    "fusions turn attention and layer norm into single operators",
] * 4
TEXTS = ["the fox jumps over a model", "attention is all you need", "edge"]
WORDS = sorted(set(" ".join(CORPUS).replace(",", "").split()))  # the WordPiece vocabulary's words


# ----- building tiny Hugging Face directories -----------------------------------------------------


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and buffer of the float kind random: norms around 1, the rest around 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in [*model.named_parameters(), *model.named_buffers()]:
            if not p.is_floating_point():
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.2
            is_norm_gain = name.endswith("weight") and p.dim() == 1
            p.copy_(noise + 1.0 if is_norm_gain else noise)
    return model.eval()


def _bpe(specials: list[str], post=None):  # noqa: ANN001, ANN202
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=340,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if post is not None:
        tok.post_processor = post
    return tok


def _wordpiece():  # noqa: ANN202
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    letters = "abcdefghijklmnopqrstuvwxyz0123456789,."
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def _bert_config(vocab: int, **changes):  # noqa: ANN003, ANN202
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=D,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=POSITIONS,
        **changes,
    )


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """name -> (directory, transformers model, tokenizer or None), built once per module."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as st_models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as st_models
    from tokenizers import processors
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertForMaskedLM,
        BertForSequenceClassification,
        BertModel,
        BertTokenizerFast,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("hf")
    out = {}

    wordpiece = _wordpiece()
    bert = _randomize(BertModel(_bert_config(wordpiece.get_vocab_size())), 1)
    bert.save_pretrained(root / "bert")
    BertTokenizerFast(tokenizer_object=wordpiece).save_pretrained(root / "bert")
    out["bert"] = (root / "bert", bert, wordpiece)

    mlm = _randomize(BertForMaskedLM(_bert_config(90, hidden_act="gelu_new")), 2)
    mlm.save_pretrained(root / "bert-mlm")
    out["bert-mlm"] = (root / "bert-mlm", mlm, None)

    cls = _randomize(BertForSequenceClassification(_bert_config(90, num_labels=3)), 3)
    cls.save_pretrained(root / "bert-cls")
    out["bert-cls"] = (root / "bert-cls", cls, None)

    for name, mode, normalize in (("st-mean", "mean", True), ("st-cls", "cls", False)):
        modules = [st_models.Transformer(str(root / "bert")), st_models.Pooling(D, mode)]
        modules += [st_models.Normalize()] if normalize else []
        SentenceTransformer(modules=modules, device="cpu").save(str(root / name))
        out[name] = (root / name, SentenceTransformer(str(root / name), device="cpu"), wordpiece)

    gpt_tok = _bpe(["<|endoftext|>"])
    gpt_cfg = GPT2Config(
        vocab_size=gpt_tok.get_vocab_size(),
        n_embd=D,
        n_layer=LAYERS,
        n_head=HEADS,
        n_positions=POSITIONS,
        bos_token_id=0,
        eos_token_id=0,
    )
    gpt2 = _randomize(GPT2LMHeadModel(gpt_cfg), 4)
    gpt2.save_pretrained(root / "gpt2")
    gpt_tok.save(str(root / "gpt2" / "tokenizer.json"))
    out["gpt2"] = (root / "gpt2", gpt2, gpt_tok)

    post = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    bart_tok = _bpe(["<s>", "<pad>", "</s>", "<unk>"], post)
    bart_cfg = BartConfig(
        vocab_size=bart_tok.get_vocab_size(),
        d_model=D,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_position_embeddings=POSITIONS,
    )
    bart = _randomize(BartForConditionalGeneration(bart_cfg), 5)  # final_logits_bias random too
    bart.save_pretrained(root / "bart")
    bart_tok.save(str(root / "bart" / "tokenizer.json"))
    out["bart"] = (root / "bart", bart, bart_tok)
    return out


@pytest.fixture(scope="module")
def imported(hf):
    return {name: import_directory(entry[0]) for name, entry in hf.items()}


@pytest.fixture(scope="module")
def bundles(hf, tmp_path_factory):
    """One export per family, on the default target (fused, parity-checked): the sentence-transformers
    BERT directory, GPT-2 through the CLI (`edgeformer export DIR`), BART."""
    root = tmp_path_factory.mktemp("bundles")
    target = resolve_target("cpu-fp32")
    out = {}
    for name in ("st-mean", "bart"):
        out[name] = (root / name, export_bundle(source_from_directory(hf[name][0]), target, root / name))
    result = CliRunner().invoke(main, ["export", str(hf["gpt2"][0]), "-o", str(root / "gpt2")])
    assert result.exit_code == 0, result.output
    out["gpt2"] = (root / "gpt2", json.loads((root / "gpt2" / "manifest.json").read_text()))
    return out


def _ids(vocab: int, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1 and length > 2:
        mask[-1, length - length // 3 :] = 0  # the last row right-padded
    return ids, mask


SHAPES = [(1, 1), (2, 9), (1, POSITIONS)]


def _close(want: torch.Tensor, got: torch.Tensor) -> float:
    assert want.shape == got.shape
    err = float((want - got).abs().max())
    assert err <= TOL, err
    return err


# ----- numbers: the imported torch model computes what transformers computes ----------------------


@pytest.mark.parametrize(("batch", "length"), SHAPES)
def test_bert_matches_transformers(hf, imported, batch, length):
    _, ref_model, _ = hf["bert"]
    model = imported["bert"].model
    ids, mask = _ids(model.config.vocab_size, batch, length, seed=length)
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask)
        got = model(ids, mask)
    _close(ref.last_hidden_state, got["last_hidden_state"])
    _close(ref.pooler_output, got["embeddings"])  # BertModel's pooler is the embedding head
    assert imported["bert"].config.pooling == "pooler" and imported["bert"].config.type_vocab_size == 2


@pytest.mark.parametrize("name", ["bert-mlm", "bert-cls"])
def test_bert_heads_match_transformers(hf, imported, name):
    _, ref_model, _ = hf[name]
    model = imported[name].model
    ids, mask = _ids(model.config.vocab_size, 2, 9, seed=7)
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask).logits
        got = model(ids, mask)["logits"]
    _close(ref, got)
    cfg = imported[name].config
    if name == "bert-mlm":
        assert cfg.activation == "gelu_tanh" and cfg.lm_head_transform and cfg.lm_head_bias
        assert "bert.pooler.dense.weight" not in imported[name].ignored  # BertForMaskedLM has no pooler
    else:
        assert cfg.head == "classification" and cfg.num_labels == 3 and cfg.pooling == "pooler"


@pytest.mark.parametrize("name", ["st-mean", "st-cls"])
def test_sentence_transformers_embeddings(hf, imported, name):
    _, st, tok = hf[name]
    layout = read_layout(hf[name][0])
    want = torch.from_numpy(st.encode(TEXTS, convert_to_numpy=True))
    rows = [tok.encode(t).ids for t in TEXTS]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        got = imported[name].model(ids, mask)["embeddings"]
    cosine = torch.nn.functional.cosine_similarity(want, got, dim=-1)
    assert float((1 - cosine).max()) <= 1e-5
    _close(want, got)
    cfg = imported[name].config
    assert (cfg.pooling, cfg.normalize_embeddings) == (layout.pooling, layout.normalize)
    if layout.normalize:
        assert torch.allclose(got.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-6)
    assert "pooler.dense.weight" in imported[name].ignored  # mean/CLS pooling leaves BERT's pooler unused


@pytest.mark.parametrize(("batch", "length"), SHAPES)
def test_gpt2_matches_transformers(hf, imported, batch, length):
    _, ref_model, _ = hf["gpt2"]
    model = imported["gpt2"].model
    ids, _ = _ids(model.config.vocab_size, batch, length, seed=length)
    with torch.no_grad():
        ref = ref_model(input_ids=ids)
        got = model(ids)
    _close(ref.logits, got["logits"])
    past = ref.past_key_values
    for layer, (k, v) in enumerate(got["present_key_values"]):  # the KV cache too
        _close(past.layers[layer].keys, k)
        _close(past.layers[layer].values, v)


def test_import_skips_the_random_init_its_weights_overwrite(hf, monkeypatch):
    """The model an import builds is not randomly initialised first (~0.9 s on BERT-base): no
    torch.nn.init initializer runs, the buffers computed in __init__ are a fresh model's, and the
    initializers are torch's again afterwards."""
    from edgeformer.nn.models import build_model

    calls = []
    for name in ("normal_", "uniform_", "kaiming_uniform_", "ones_", "zeros_"):
        real = getattr(torch.nn.init, name)
        monkeypatch.setattr(torch.nn.init, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    counted = torch.nn.init.normal_
    for name in ("bert", "gpt2", "bart"):
        got = import_directory(hf[name][0], memory=None)  # (the memory check counts parameters on "meta")
        assert calls == [], (name, sorted(set(calls)))
        fresh = dict(build_model(got.config).named_buffers())
        assert "normal_" in calls  # a model built outside an import is still initialised
        calls.clear()
        buffers = dict(got.model.named_buffers())
        assert sorted(buffers) == sorted(fresh)
        for key, value in buffers.items():
            assert torch.equal(value, fresh[key]), (name, key)
    assert torch.nn.init.normal_ is counted


def test_bart_matches_transformers(hf, imported):
    _, ref_model, _ = hf["bart"]
    model = imported["bart"].model
    for batch, length in SHAPES:
        ids, mask = _ids(model.config.vocab_size, batch, length, seed=length)
        dec = _ids(model.config.vocab_size, batch, max(1, length // 2), seed=length + 1)[0]
        with torch.no_grad():
            ref = ref_model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
            got = model(ids, dec, mask)
            memory = model.encode(ids, mask)
        _close(ref.logits, got["logits"])
        _close(ref.encoder_last_hidden_state, memory)
    cfg = imported["bart"].config
    assert (cfg.position_offset, cfg.share_positions, cfg.lm_head_bias, cfg.bos_token_id) == (2, False, True, 2)


# ----- behaviour: greedy generation ---------------------------------------------------------------


def _hf_greedy(model, ids: torch.Tensor, **kwargs) -> list[int]:  # noqa: ANN001, ANN003
    """transformers' own generate, greedy, never stopping early (no eos, no forced tokens)."""
    gen = model.generation_config
    gen.eos_token_id = gen.forced_eos_token_id = gen.forced_bos_token_id = None
    gen.no_repeat_ngram_size, gen.num_beams, gen.do_sample, gen.min_length = 0, 1, False, 0
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=STEPS, pad_token_id=0, generation_config=gen, **kwargs)
    return out[0].tolist()


def test_gpt2_greedy_identical(hf, imported, bundles):
    _, ref_model, tok = hf["gpt2"]
    prompts = [tok.encode(t).ids for t in TEXTS[:2]]
    model = runtime.load(bundles["gpt2"][0], spinning=False)
    ours = model.generate(prompts, STEPS, stop_tokens=())  # left-padded batch through the ONNX bundle
    for prompt, got in zip(prompts, ours, strict=True):
        want = _hf_greedy(ref_model, torch.tensor([prompt]))[len(prompt) :]
        assert len(want) == STEPS and got == want
        torch_tokens = torch_greedy(imported["gpt2"].model, imported["gpt2"].config, np.array([prompt]), STEPS)
        assert torch_tokens[0].tolist() == want


def test_bart_greedy_identical(hf, imported, bundles):
    _, ref_model, tok = hf["bart"]
    sources = [tok.encode(t).ids for t in TEXTS[:2]]
    model = runtime.load(bundles["bart"][0], spinning=False)
    ours = model.generate(sources, STEPS, stop_tokens=())
    for source, got in zip(sources, ours, strict=True):
        want = _hf_greedy(
            ref_model, torch.tensor([source]), attention_mask=torch.ones(1, len(source), dtype=torch.long)
        )
        assert want[0] == ref_model.config.decoder_start_token_id and len(want) == STEPS + 1
        assert got == want[1:]


# ----- the imported models export, fully fused, with parity ---------------------------------------


@pytest.mark.parametrize("name", ["st-mean", "gpt2", "bart"])
def test_export_fuses_completely_with_parity(bundles, name):
    path, manifest = bundles[name]
    parity = manifest["parity"]
    assert parity["ok"] and parity["worst_max_rel"] <= TOL
    if name != "st-mean":
        assert parity["generation"]["identical"] and parity["generation"]["steps"] == STEPS
    for graph, report in manifest["fusions"].items():
        for kind in ("attention", "layer_norm", "gelu"):
            cov = report["coverage"][kind]
            assert cov["blocks"] > 0 and cov["fused"] == cov["blocks"], (graph, kind, cov, report["not_fused"])
        assert report["complete"] and not report["not_fused"]
    assert manifest["tokenizer"] == "tokenizer.json" and "tokenizer.json" in manifest["files"]
    assert manifest["source"]["kind"] == "huggingface"


def test_bundle_outputs_match_transformers(hf, bundles):
    """The ONNX bundles against transformers directly (not only against edgeformer's torch model)."""
    ids, mask = _ids(hf["gpt2"][1].config.vocab_size, 1, 11, seed=3)
    with torch.no_grad():
        want = hf["gpt2"][1](input_ids=ids).logits
    got = runtime.load(bundles["gpt2"][0], spinning=False).logits(ids.numpy())
    _close(want, torch.from_numpy(got))
    st = hf["st-mean"][1]
    got = runtime.load(bundles["st-mean"][0], spinning=False).encode(TEXTS)["embeddings"]
    want = st.encode(TEXTS, convert_to_numpy=True)
    cosine = (want * got).sum(-1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    assert float((1 - cosine).max()) <= 1e-5


def test_check_rebuilds_from_the_directory(hf, bundles):
    report = check_bundle(bundles["gpt2"][0], generation_steps=8)
    assert report.ok and report.generation["identical"]
    recipe = dict(read_manifest(bundles["gpt2"][0])["source"])
    recipe["weights_sha256"] = {"model.safetensors": "0" * 64}
    with pytest.raises(BundleError, match="changed since the bundle was exported"):
        rebuild_source(recipe)


# ----- the tokenizer travels: text in, text out ---------------------------------------------------


def test_runtime_text_to_embeddings_and_text(hf, bundles):
    encoder = runtime.load(bundles["st-mean"][0], spinning=False)
    single = encoder.encode(TEXTS[0])["embeddings"]  # [CLS] ... [SEP] added by tokenizer.json
    want = hf["st-mean"][1].encode([TEXTS[0]], convert_to_numpy=True)
    assert single.shape == (1, D) and float(np.abs(single - want).max()) <= 1e-5

    tok = hf["gpt2"][2]
    decoder = runtime.load(bundles["gpt2"][0], spinning=False)
    text = decoder.generate(TEXTS[0], STEPS, stop_tokens=())
    want_ids = _hf_greedy(hf["gpt2"][1], torch.tensor([tok.encode(TEXTS[0]).ids]))[len(tok.encode(TEXTS[0]).ids) :]
    assert text == tok.decode(want_ids) and len(text) > 0
    steps = list(decoder.stream(TEXTS[0], STEPS, stop_tokens=()))
    assert "".join(s.text for s in steps) == text and [s.token for s in steps] == want_ids

    tok = hf["bart"][2]
    seq2seq = runtime.load(bundles["bart"][0], spinning=False)
    text = seq2seq.generate(TEXTS[1], STEPS, stop_tokens=())
    ids = tok.encode(TEXTS[1]).ids
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s> from the tokenizer's post-processor
    want = _hf_greedy(hf["bart"][1], torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    assert text == tok.decode(want[1:], skip_special_tokens=True)


def test_runtime_needs_tokenizers_only_for_text(bundles, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the optional library were absent
    model = runtime.load(bundles["st-mean"][0], spinning=False)
    assert model.encode([[2, 7, 8, 3]])["embeddings"].shape == (1, D)
    with pytest.raises(NoTokenizerError, match="pip install tokenizers"):
        model.encode("the fox")


def test_runtime_stays_torch_free_with_a_tokenizer(bundles):
    script = (
        "import sys, json; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
        "from edgeformer import runtime; "
        f"m = runtime.load({str(bundles['st-mean'][0])!r}); e = m.encode('the fox')['embeddings']; "
        "print(json.dumps({'n': e.shape[1], 'torch': [k for k in sys.modules if k.split('.')[0] == 'torch' "
        "and sys.modules[k] is not None]}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == {"n": D, "torch": []}


# ----- cards: `edgeformer import`, round trips ----------------------------------------------------


def test_import_cli_writes_card_checkpoint_and_tokenizer(hf, imported, tmp_path):
    card_path = tmp_path / "cards" / "my-bart.toml"
    result = CliRunner().invoke(main, ["import", str(hf["bart"][0]), "-o", str(card_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["architecture"] == "BartForConditionalGeneration" and report["family"] == "encoder-decoder"
    assert sorted(p.name for p in card_path.parent.iterdir()) == [
        "my-bart.safetensors",
        "my-bart.tokenizer.json",
        "my-bart.toml",
    ]
    card = load_card(card_path)
    assert card.config == imported["bart"].config and card.tokenizer == "my-bart.tokenizer.json"
    model = load_model(card)  # edgeformer's own loader, sha256 verified, edgeformer's tensor names
    ids, mask = _ids(card.config.vocab_size, 2, 9, seed=1)
    dec = ids[:, :4]
    with torch.no_grad():
        assert torch.equal(model(ids, dec, mask)["logits"], imported["bart"].model(ids, dec, mask)["logits"])
    source = source_from_card(card)
    assert source.tokenizer == "tokenizer.json"
    assert source.files == {"tokenizer.json": card_path.parent / "my-bart.tokenizer.json"}
    again = CliRunner().invoke(main, ["import", str(hf["bart"][0]), "-o", str(card_path)])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output


@pytest.mark.parametrize("name", ["bert", "bert-mlm", "bert-cls", "st-mean", "st-cls", "gpt2", "bart"])
def test_imported_config_round_trips_through_the_card(imported, name):
    import tomllib

    cfg = imported[name].config
    text = render_card(ModelCard(name, cfg))
    assert parse_card(tomllib.loads(text)).config == cfg


def test_write_card_refuses_a_non_toml_path(imported, tmp_path):
    with pytest.raises(ModelImportError, match=r"\.toml"):
        write_card(imported["gpt2"], tmp_path / "card.txt")


# ----- weights: .bin with weights_only, pickles that run code, missing and mis-shaped tensors ------


def _copy_config(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


def test_pytorch_model_bin_loads_with_weights_only(hf, imported, tmp_path):
    directory = _copy_config(hf["gpt2"][0], tmp_path / "gpt2-bin")
    torch.save(hf["gpt2"][1].state_dict(), directory / "pytorch_model.bin")  # includes the tied lm_head.weight
    model = import_directory(directory)
    assert model.weight_files == [directory / "pytorch_model.bin"]
    assert "lm_head.weight" in model.ignored
    for ours, theirs in zip(
        model.model.state_dict().values(), imported["gpt2"].model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - what a malicious checkpoint does on unpickling
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_pickle_that_runs_code_is_refused_and_not_run(hf, tmp_path):
    directory = _copy_config(hf["gpt2"][0], tmp_path / "evil")
    marker = tmp_path / "ran.txt"
    torch.save(
        {"transformer.wte.weight": torch.zeros(3), "payload": _RunsCode(marker)}, directory / "pytorch_model.bin"
    )
    with pytest.raises(CheckpointError, match="refused.*weights_only"):
        import_directory(directory)
    assert not marker.exists()
    result = CliRunner().invoke(main, ["import", str(directory), "-o", str(tmp_path / "evil.toml")])
    assert result.exit_code == 1 and "refused" in result.output and "Traceback" not in result.output
    assert not marker.exists() and not (tmp_path / "evil.toml").exists()


def test_unknown_architecture_lists_the_supported_ones(tmp_path):
    directory = tmp_path / "t5"
    directory.mkdir()
    (directory / "config.json").write_text(
        json.dumps({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"})
    )
    with pytest.raises(UnsupportedArchitectureError) as info:
        import_directory(directory)
    message = str(info.value)
    assert "T5ForConditionalGeneration" in message
    for arch in (
        "BertModel",
        "BertForMaskedLM",
        "GPT2LMHeadModel",
        "BartForConditionalGeneration",
        "sentence-transformers",
    ):
        assert arch in message
    result = CliRunner().invoke(main, ["export", str(directory)])
    assert result.exit_code == 1 and "GPT2LMHeadModel" in result.output and "Traceback" not in result.output


def test_missing_unexpected_and_misshaped_tensors_are_named(hf, tmp_path):
    state = load_file(str(hf["gpt2"][0] / "model.safetensors"))
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.wpe.weight"] = torch.zeros(POSITIONS - 8, D)
    state["transformer.extra.weight"] = torch.zeros(3, 3)
    directory = _copy_config(hf["gpt2"][0], tmp_path / "broken")
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        import_directory(directory)
    message = str(info.value)
    assert f"missing tensors: transformer.h.1.mlp.c_fc.weight (expected ({D}, {4 * D}))" in message
    assert f"transformer.wpe.weight: expected ({POSITIONS}, {D}), found ({POSITIONS - 8}, {D})" in message
    assert "unexpected tensors: transformer.extra.weight (3, 3)" in message


def test_directory_problems_are_typed_messages(hf, tmp_path):
    with pytest.raises(ModelImportError, match="no config.json"):
        import_directory(tmp_path)
    no_weights = _copy_config(hf["gpt2"][0], tmp_path / "empty")
    with pytest.raises(ModelImportError, match="has no weights: looked for model.safetensors"):
        import_directory(no_weights)
    config = json.loads((hf["gpt2"][0] / "config.json").read_text())
    config["scale_attn_by_inverse_layer_idx"] = True
    odd = tmp_path / "odd"
    shutil.copytree(hf["gpt2"][0], odd)
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelImportError, match="scale_attn_by_inverse_layer_idx = true is not supported"):
        import_directory(odd)
    st = tmp_path / "st-dense"
    shutil.copytree(hf["st-mean"][0], st)
    modules = json.loads((st / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (st / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelImportError, match="Transformer, Pooling, Dense, Normalize"):
        import_directory(st)
