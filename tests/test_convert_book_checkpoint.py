"""conversion/convert_book_checkpoint.py: the book's chapter-4 `GPTModel` (its own code, the
`llms-from-scratch` package) is built with random weights, saved the ways chapters 5-7 save it,
converted, and the converted model must give the book model's logits. Bad inputs must fail with one
`error:` line naming the problem, and leave no output behind."""

import json
from pathlib import Path

import pytest
import torch
from conftest import (
    BAD_OPTIONS,
    RunsCode,
    assert_bad_option_refused,
    assert_close,
    assert_main_fails_cleanly,
    assert_model_folder,
    assert_output_folder_rules,
    assert_process_fails_cleanly,
    book_code,
    book_model,
    load_shards,
    ok,
    run_converter,
)
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
from modeling_gpt_scratch import GPTScratchForCausalLM, GPTScratchForSequenceClassification
from modeling_gpt_scratch.cli import CLIError
from modeling_gpt_scratch.conversion import book as conv
from modeling_gpt_scratch.conversion import common

# A tiny version of the book's config dictionary.
CFG = {
    "vocab_size": 97,
    "context_length": 16,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_config(cfg, folder):
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def save_like_the_book(model, path, layout):
    """Save `model` the ways the book's chapters (and its readers' scripts) do."""
    if layout == "state_dict":  # chapter 5: torch.save(model.state_dict(), "model.pth")
        torch.save(model.state_dict(), path)
    elif layout == "checkpoint":  # chapter 5: model and AdamW state, after a training step
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
        model.train()
        x = torch.randint(0, model.tok_emb.num_embeddings, (2, 8))
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        model.eval()
        torch.save(
            {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}, path
        )
    elif layout == "compiled":  # model = torch.compile(model) before training: keys start with _orig_mod.
        state_dict = torch.compile(model).state_dict()
        assert next(iter(state_dict)).startswith("_orig_mod.")
        torch.save(state_dict, path)
    elif layout == "ddp-no-masks":  # DDP's `module.` prefix; a variant with non-persistent masks
        torch.save({f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith(".mask")}, path)
    elif layout == "bfloat16":  # model.to(torch.bfloat16) before saving, as the book's bonus code does
        torch.save(model.to(torch.bfloat16).state_dict(), path)
        model.float()
    else:
        raise ValueError(layout)
    return path


def book_logits(model, x):
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------- parity


CASES = {
    # name: (config changes, how it is saved)
    "state-dict": ({}, "state_dict"),
    "checkpoint-with-optimizer-qkv-bias": ({"qkv_bias": True}, "checkpoint"),
    "torch-compile": ({"n_layers": 3, "n_heads": 2, "context_length": 24}, "compiled"),
    "ddp-prefix-without-masks": ({"emb_dim": 48, "n_heads": 6, "n_layers": 1}, "ddp-no-masks"),
    "bfloat16-weights": ({"qkv_bias": True}, "bfloat16"),
}


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)  # torch.compile
@pytest.mark.parametrize("name", CASES)
def test_converted_model_matches_the_book(name, tmp_path):
    changes, layout = CASES[name]
    cfg = {**CFG, **changes}
    book = book_model(cfg)
    path = save_like_the_book(book, tmp_path / "model.pth", layout)
    if layout == "bfloat16":
        book = book.to(torch.bfloat16).float()  # the weights the file holds
    out = conv.convert(path, tmp_path / "out", config=write_config(cfg, tmp_path))
    config = assert_model_folder(out, tmp_path / "out")
    assert config["architectures"] == ["GPTScratchForCausalLM"]
    assert {k: config[k] for k in cfg} == cfg
    assert config["tie_word_embeddings"] is False  # the book's head is its own tensor
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "out_head.weight" in keys and not any(k.endswith(".mask") for k in keys)

    x = torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"]))  # the whole context
    expected = book_logits(book, x)
    for attn in ("eager", "sdpa"):
        ours = AutoModelForCausalLM.from_pretrained(out, attn_implementation=attn)
        assert isinstance(ours, GPTScratchForCausalLM) and not ours.training
        assert ours.out_head.weight.data_ptr() != ours.model.tok_emb.weight.data_ptr()
        with torch.no_grad():
            assert_close(ours(x).logits, expected)


# Chapter 5's training configuration (GPT_CONFIG_124M with a 256-token context), cut to two blocks
# and a small vocabulary: the width decides the heads, the rest is in the checkpoint.
CH05 = {**CFG, "vocab_size": 1000, "context_length": 256, "emb_dim": 768, "n_heads": 12, "n_layers": 2}


def assert_read_from_the_checkpoint(cfg, path, out, said):
    """`out` holds the book's configuration `cfg` with nothing but the checkpoint `path` to go on,
    gives the book model's logits over the whole context, and the output said what it assumed."""
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in cfg} == cfg
    assert config["architectures"] == ["GPTScratchForCausalLM"] and config["tie_word_embeddings"] is False
    read = ", ".join(
        f"{k}={cfg[k]}" for k in ("vocab_size", "emb_dim", "context_length", "n_layers", "qkv_bias")
    )
    assert f"read from the checkpoint: {read}" in said
    assert f"n_heads={cfg['n_heads']}: the book's for emb_dim {cfg['emb_dim']}" in said
    assert "drop_rate=0.1: the book's" in said and "head: its own tensor" in said


def test_config_read_from_a_context_256_checkpoint(tmp_path):
    """The README's line, without --config, on what chapter 5 saves: a 256-token context, no Q/K/V
    bias, the mask buffers in the state dict."""
    book = book_model(CH05)
    path = tmp_path / "model.pth"
    torch.save(book.state_dict(), path)
    assert torch.load(path)["trf_blocks.0.att.mask"].shape == (256, 256)
    out = tmp_path / "out" / "x"
    result = run_converter("convert_book_checkpoint", "--input", path, "--output", out)
    said = ok(result)
    assert f"-> {out}" in said
    assert_read_from_the_checkpoint(CH05, path, out, said)
    ours = AutoModelForCausalLM.from_pretrained(out)
    x = torch.randint(0, CH05["vocab_size"], (1, CH05["context_length"]))
    with torch.no_grad():
        assert_close(ours(x).logits, book_logits(book, x))


@pytest.mark.slow
def test_chapter5_model_pth(tmp_path, capsys, shared_data):
    """The book's chapter 5 model.pth at full size (GPT_CONFIG_124M, context 256: 163M parameters)."""
    cfg = {
        **book_code().ch04.__dict__.get("GPT_CONFIG_124M", CFG),
        **CH05,
        "vocab_size": 50257,
        "n_layers": 12,
    }
    book = book_model(cfg)
    torch.save(book.state_dict(), tmp_path / "model.pth")
    out = conv.convert(tmp_path / "model.pth", tmp_path / "out")
    assert_read_from_the_checkpoint(cfg, tmp_path / "model.pth", out, capsys.readouterr().out)
    ours = AutoModelForCausalLM.from_pretrained(out)
    x = AutoTokenizer.from_pretrained(out)("Every effort moves you", return_tensors="pt").input_ids
    with torch.no_grad():
        assert_close(ours(x).logits, book_logits(book, x))


def test_config_overrides_what_is_read(tmp_path, capsys):
    """A JSON file with some of the book's keys sets those; the rest still comes from the checkpoint."""
    path = tmp_path / "model.pth"
    torch.save(book_model(CFG).state_dict(), path)
    out = conv.convert(path, tmp_path / "out", write_config({"n_heads": 2, "drop_rate": 0.0}, tmp_path))
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in CFG} == {**CFG, "n_heads": 2, "drop_rate": 0.0}
    said = capsys.readouterr().out
    assert (
        "config.json: n_heads=2, drop_rate=0.0" in said and "read from the checkpoint: vocab_size=97" in said
    )


def test_greedy_generation_matches_generate_text_simple(tmp_path):
    """Chapter 4's greedy loop and `generate` pick the same tokens, up to the full context."""
    book = book_model(CFG)
    out = conv.convert(
        save_like_the_book(book, tmp_path / "model.pth", "state_dict"),
        tmp_path / "out",
        write_config(CFG, tmp_path),
    )
    ours = AutoModelForCausalLM.from_pretrained(out)
    prompt = torch.tensor([[5, 17, 42]])
    new = CFG["context_length"] - prompt.shape[1]
    expected = book_code().ch04.generate_text_simple(
        book, prompt, max_new_tokens=new, context_size=CFG["context_length"]
    )
    got = ours.generate(prompt, max_new_tokens=new, do_sample=False)
    assert got.tolist() == expected.tolist()


def test_head_equal_to_the_embedding_stays_untied(tmp_path, capsys):
    """After chapter 5's `load_weights_into_gpt`, `out_head.weight` is a copy of `tok_emb.weight`. The
    book keeps two matrices (chapter 7 fine-tunes them apart), and so does the converted model unless
    asked to tie them; the output says which. The logits are the book model's either way."""
    cfg = {**CFG, "qkv_bias": True, "drop_rate": 0.0}
    book = book_model(cfg)
    book.out_head.weight = torch.nn.Parameter(book.tok_emb.weight.detach().clone())
    path = tmp_path / "gpt2-openai.pth"
    torch.save(book.state_dict(), path)
    config = write_config(cfg, tmp_path)
    x = torch.randint(0, 97, (2, 16))
    for tie in (False, True):
        capsys.readouterr()
        out = conv.convert(path, tmp_path / f"out-{tie}", config=config, tie_word_embeddings=tie)
        said = capsys.readouterr().out
        assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is tie
        ours = AutoModelForCausalLM.from_pretrained(out)
        assert (ours.out_head.weight is ours.model.tok_emb.weight) is tie
        assert ("head: tied to the token embedding" in said) is tie
        assert ("head: its own tensor, as in the book" in said) is not tie
        with torch.no_grad():
            assert_close(ours(x).logits, book_logits(book, x))
    with torch.no_grad():  # untied: changing one leaves the other as it was
        untied = AutoModelForCausalLM.from_pretrained(tmp_path / "out-False")
        untied.model.tok_emb.weight.zero_()
    assert torch.equal(untied.out_head.weight, book.out_head.weight)


def test_trained_head_cannot_be_tied(good_files, tmp_path):
    with pytest.raises(
        CLIError, match="--tie_word_embeddings.*`out_head.weight` differs from `tok_emb.weight`"
    ):
        conv.convert(
            good_files / "model.pth", tmp_path / "out", good_files / "config.json", tie_word_embeddings=True
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("head_bias", [True, False])
def test_chapter6_classifier(head_bias, tmp_path, shared_data):
    """Chapter 6 replaces `out_head` by `Linear(emb_dim, num_classes)`: the result is a
    GPTScratchForSequenceClassification whose logits are the book's `model(x)[:, -1, :]` on unpadded
    input. With GPT-2's vocabulary, GPT-2's tokenizer is saved beside it."""
    cfg = {**CFG, "vocab_size": 50257, "emb_dim": 16, "n_heads": 2}
    book = book_model(cfg)
    torch.manual_seed(123)
    book.out_head = torch.nn.Linear(in_features=cfg["emb_dim"], out_features=3, bias=head_bias)
    path = tmp_path / "review_classifier.pth"
    torch.save(book.state_dict(), path)
    out = conv.convert(path, tmp_path / "out", config=write_config(cfg, tmp_path))

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPTScratchForSequenceClassification"]
    assert len(config["id2label"]) == 3 and config["pad_token_id"] == 50256
    # the book's way of reading: the last position of text padded to 120 tokens, here the context length
    assert config["classifier_pooling"] == "last_position" and config["classifier_padded_length"] == 16
    ours = AutoModelForSequenceClassification.from_pretrained(out)
    assert isinstance(ours, GPTScratchForSequenceClassification)
    if not head_bias:
        assert torch.count_nonzero(ours.score.bias) == 0
    x = torch.randint(0, 50256, (3, cfg["context_length"]))  # as long as the padded length
    with torch.no_grad():
        assert_close(ours(x).logits, book_logits(book, x)[:, -1, :])

    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 50257 and tok.pad_token_id == 50256
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]


def test_chapter6_classifier_padded_length(tmp_path, capsys):
    """The book's 120 tokens when the context allows, another length on request, never past the context."""
    cfg = {**CFG, "vocab_size": 50257, "emb_dim": 16, "n_heads": 2, "context_length": 128}
    book = book_model(cfg)
    book.out_head = torch.nn.Linear(in_features=cfg["emb_dim"], out_features=2)
    path = tmp_path / "review_classifier.pth"
    torch.save(book.state_dict(), path)
    config = write_config(cfg, tmp_path)
    for option, expected in ((None, 120), (64, 64)):
        out = conv.convert(path, tmp_path / f"out-{option}", config, classifier_padded_length=option)
        saved = json.loads((out / "config.json").read_text())
        assert (saved["classifier_pooling"], saved["classifier_padded_length"]) == ("last_position", expected)
        assert f"padded to {expected} tokens (classifier_pooling=last_position" in capsys.readouterr().out
    with pytest.raises(
        CLIError, match="--classifier_padded_length 129 must be between 1 and the context_length 128"
    ):
        conv.convert(path, tmp_path / "too-long", config, classifier_padded_length=129)
    assert not (tmp_path / "too-long").exists()


def test_cli_preset_bfloat16_sharded(tmp_path, shared_data):
    """A preset by name (the book's 'tiny' shape, GPT-2's vocabulary), through the real command line."""
    from modeling_gpt_scratch import PRESETS

    cfg = {k: PRESETS["tiny"][k] for k in CFG}
    book = book_model(cfg)
    path = tmp_path / "model.pth"
    torch.save(book.state_dict(), path)
    out = tmp_path / "nested" / "out"
    args = [
        "--input",
        path,
        "--config",
        "tiny",
        "--output",
        out,
        "--dtype",
        "bfloat16",
        "--max_shard_size",
        "8MB",
    ]
    result = run_converter("convert_book_checkpoint", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and f"-> {out}" in result.stdout

    tensors = load_shards(out, torch.bfloat16)
    assert torch.equal(
        tensors["model.trf_blocks.3.att.W_key.weight"], book.trf_blocks[3].att.W_key.weight.to(torch.bfloat16)
    )
    assert (out / "tokenizer.json").is_file()

    ours = AutoModelForCausalLM.from_pretrained(out)
    assert ours.dtype == torch.bfloat16 and ours.config.context_length == 256
    x = torch.randint(0, 50256, (1, 32))
    with torch.no_grad():
        expected = book.to(torch.bfloat16)(x).float()
        got = ours(x).logits.float()
    assert (got - expected).abs().max().item() <= 0.05 * expected.abs().max().item()


def test_progress_bar_for_large_inputs(tmp_path, monkeypatch, capfd):
    path = save_like_the_book(book_model(CFG), tmp_path / "model.pth", "state_dict")
    config = write_config(CFG, tmp_path)
    conv.convert(path, tmp_path / "small", config=config)
    assert "reading model.pth" not in capfd.readouterr().err
    monkeypatch.setattr(common, "LARGE_INPUT_BYTES", 1000)  # "large" from 1 kB on
    conv.convert(path, tmp_path / "large", config=config)
    err = capfd.readouterr().err
    assert "reading model.pth" in err and "100%" in err


# ---------------------------------------------------------------------------- bad inputs


def _edit(fn):
    """Break a copy of the good state dict with `fn(state_dict)`."""

    def apply(path, config):
        state_dict = torch.load(path, weights_only=True)
        fn(state_dict)
        torch.save(state_dict, path)

    return apply


def _edit_config(**changes):
    def apply(path, config):
        config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))

    return apply


def _write(data):
    def apply(path, config):
        path.write_bytes(data(path) if callable(data) else data)

    return apply


def _save(obj):
    def apply(path, config):
        torch.save(obj() if callable(obj) else obj, path)

    return apply


def _masks(value):
    def fn(state_dict):
        for key in [k for k in state_dict if k.endswith(".mask")]:
            state_dict[key] = value(state_dict[key])

    return _edit(fn)


# name: (how to break a copy of a good model.pth + config.json, or the --input/--config to use; words the
# message must hold). "{input}" and "{config}" stand for the good files' paths.
BAD_INPUTS = {
    "missing-file": (("does/not/exist.pth", "{config}"), ["does/not/exist.pth", "not found"]),
    "input-is-a-folder": (("{folder}", "{config}"), ["is a folder", ".pth"]),
    "truncated": (_write(lambda p: p.read_bytes()[:3000]), ["model.pth", "cannot be read", "truncated"]),
    "empty": (_write(b""), ["model.pth", "cannot be read", "truncated or corrupt"]),
    "garbage": (_write(b"\x80\x02garbage that is no pickle"), ["model.pth", "cannot be read"]),
    "pickle-runs-code": (
        _save({"x": RunsCode()}),
        ["model.pth", "`print`", "weights_only=True", "will not unpickle arbitrary objects"],
    ),
    "whole-pickled-model": (
        _save(lambda: book_code().ch04.GPTModel(CFG)),
        [
            "model.pth",
            "`llms_from_scratch.ch04.GPTModel`",
            "model.state_dict()",
            "will not unpickle arbitrary objects",
        ],
    ),
    "not-a-dict": (_save([1, 2, 3]), ["model.pth", "holds a list", "state dict"]),
    "not-a-state-dict": (
        _save(lambda: {"epoch": 3, "weights": torch.zeros(2)}),
        ["model.pth", "`epoch`", "not a tensor", "model_state_dict"],
    ),
    "missing-tensor": (
        _edit(lambda sd: sd.pop("trf_blocks.1.ff.layers.0.bias")),
        ["model.pth", "`trf_blocks.1.ff.layers.0.bias` is missing", "[128]"],
    ),
    "missing-head": (
        _edit(lambda sd: sd.pop("out_head.weight")),
        ["`out_head.weight` is missing", "[97, 32]"],
    ),
    "unknown-tensor": (
        _edit(lambda sd: sd.update({"trf_blocks.0.att.cache_k": torch.zeros(1)})),
        ["model.pth", "unexpected tensor `trf_blocks.0.att.cache_k`", "no such tensor"],
    ),
    "wrong-shape": (
        _edit(lambda sd: sd.update({"trf_blocks.0.att.W_query.weight": torch.zeros(32, 16)})),
        ["`trf_blocks.0.att.W_query.weight` has shape [32, 16], expected [32, 32]", "emb_dim=32"],
    ),
    "head-with-bias": (
        _edit(lambda sd: sd.update({"out_head.bias": torch.zeros(97)})),
        ["`out_head.bias`", "without bias"],
    ),
    "qkv-bias-in-weights-not-config": (
        _edit(lambda sd: sd.update({"trf_blocks.0.att.W_query.bias": torch.zeros(32)})),
        ["`trf_blocks.0.att.W_query.bias`", "set qkv_bias true"],
    ),
    "qkv-bias-in-config-not-weights": (
        _edit_config(qkv_bias=True),
        ["`trf_blocks.0.att.W_query.bias` is missing", "set qkv_bias false"],
    ),
    "more-layers-in-config": (
        _edit_config(n_layers=3),
        ["`trf_blocks.2.att.W_query.weight` is missing", "2 transformer blocks", "n_layers=3"],
    ),
    "more-layers-in-weights": (
        _edit_config(n_layers=1),
        ["unexpected tensor `trf_blocks.1.", "2 transformer blocks", "n_layers=1"],
    ),
    "context-length-differs": (
        _edit_config(context_length=32),
        ["`trf_blocks.0.att.mask`", "[16, 16]", "[32, 32]", "saved with context_length 16"],
    ),
    "mask-not-causal": (_masks(torch.zeros_like), ["`trf_blocks.0.att.mask`", "not the causal mask"]),
    "vocab-differs": (
        _edit_config(vocab_size=100),
        ["`tok_emb.weight` has shape [97, 32], expected [100, 32]", "vocab_size=100"],
    ),
    "preset-does-not-fit": (
        ("{input}", "GPT_CONFIG_124M"),
        ["`trf_blocks.0.att.mask`", "[1024, 1024]", "context_length 16"],
    ),
    "unknown-preset": (("{input}", "gpt3"), ["'gpt3'", "neither a preset", "GPT_CONFIG_124M", "JSON"]),
    "config-file-missing": (("{input}", "nowhere/cfg.json"), ["nowhere/cfg.json", "not found"]),
    "config-not-json": (lambda p, c: c.write_text("{oops"), ["config.json", "not valid JSON"]),
    "config-not-an-object": (lambda p, c: c.write_text("[1, 2]"), ["config.json", "list", "book's config"]),
    "heads-not-inferable": (
        ("{input}", None),
        ["emb_dim 32", "book's GPT-2 sizes", "768: 12", "n_heads", "--config"],
    ),
    "config-unknown-key": (_edit_config(n_kv_groups=2), ["config.json", "unknown key 'n_kv_groups'"]),
    "config-heads-do-not-divide": (_edit_config(n_heads=5), ["config.json", "divisible by `n_heads`"]),
    "config-qkv-bias-not-bool": (_edit_config(qkv_bias="false"), ["config.json", "qkv_bias is 'false'"]),
}


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    torch.save(book_model(CFG).state_dict(), folder / "model.pth")
    write_config(CFG, folder)
    return folder


def _bad_input(name, good_files, tmp_path):
    source, words = BAD_INPUTS[name]
    folder = tmp_path / "in"
    folder.mkdir()
    path, config = folder / "model.pth", folder / "config.json"
    path.write_bytes((good_files / "model.pth").read_bytes())
    config.write_bytes((good_files / "config.json").read_bytes())
    if isinstance(source, tuple):
        paths = {"{input}": str(path), "{config}": str(config), "{folder}": str(folder)}
        return paths.get(source[0], source[0]), paths.get(source[1], source[1]), words
    source(path, config)
    return str(path), str(config), words


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input(name, good_files, tmp_path, capfd):
    path, config, words = _bad_input(name, good_files, tmp_path)
    argv = ["--input", path] + (["--config", config] if config else [])
    assert_main_fails_cleanly("convert_book_checkpoint", argv, words, tmp_path, capfd)


def test_bad_input_cli(good_files, tmp_path):
    """The same as a real process: nothing on stderr but the one line."""
    path, config, words = _bad_input("qkv-bias-in-weights-not-config", good_files, tmp_path)
    assert_process_fails_cleanly(
        "convert_book_checkpoint", ["--input", path, "--config", config], words, tmp_path
    )


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS)
def test_bad_options(option, value, words, good_files, tmp_path):
    convert = lambda output, **options: conv.convert(  # noqa: E731
        good_files / "model.pth", output, good_files / "config.json", **options
    )
    assert_bad_option_refused(convert, option, value, words, tmp_path / "out")


def test_output_folder_rules(good_files, tmp_path):
    (tmp_path / "in").mkdir()
    path, config = tmp_path / "in" / "model.pth", tmp_path / "in" / "config.json"
    path.write_bytes((good_files / "model.pth").read_bytes())
    config.write_bytes((good_files / "config.json").read_bytes())
    assert_output_folder_rules(
        lambda output, **options: conv.convert(path, output, config, **options),
        path,
        tmp_path,
        break_source=lambda: path.write_bytes(b"not a checkpoint"),
        error="cannot be read",
        replaces="would replace the folder of the input",
    )
