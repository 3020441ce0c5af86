"""conversion/convert_hf_gpt2.py: random `GPT2LMHeadModel`s of several shapes and file layouts are
converted, and the converted model must compute the same logits and generate the same tokens.
Bad inputs must fail with one `error:` line naming the problem, and leave no output behind."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import (
    BAD_OPTIONS,
    RunsCode,
    assert_bad_option_refused,
    assert_fresh_python_says_ok,
    assert_main_fails_cleanly,
    assert_model_folder,
    assert_output_folder_rules,
    assert_process_fails_cleanly,
    assert_same_generations,
    broken_copy,
    convert_sharded_bfloat16,
    prompts,
    random_gpt2,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
from modeling_gpt_scratch import GPTScratchForCausalLM
from modeling_gpt_scratch.cli import CLIError
from modeling_gpt_scratch.conversion import hf_gpt2 as conv

pytestmark = pytest.mark.usefixtures("one_thread")


def gpt2(vocab_size=97, n_positions=48, n_embd=32, n_layer=2, n_head=4, **kwargs):
    """A random GPT-2 with weights large enough (std 0.2) that argmax and beam choices are clear-cut."""
    kwargs.setdefault("bos_token_id", vocab_size - 1)
    kwargs.setdefault("eos_token_id", vocab_size - 1)
    return random_gpt2(vocab_size, n_positions, n_embd, n_layer, n_head, initializer_range=0.2, **kwargs)


def save_gpt2(model, folder, layout="safetensors"):
    """Save as `save_pretrained` does, or as the older layouts on the Hub."""
    folder = Path(folder)
    if layout == "safetensors":
        model.save_pretrained(folder)
    elif layout == "sharded":
        model.save_pretrained(folder, max_shard_size="30KB")
        assert (folder / "model.safetensors.index.json").is_file()
    elif layout == "bin":  # transformers v5 writes only safetensors; an older pytorch_model.bin
        folder.mkdir(parents=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    elif layout == "hub":  # the Hub's gpt2 files: bare names, causal-mask buffers, no lm_head
        folder.mkdir(parents=True)
        model.config.save_pretrained(folder)
        n = model.config.n_positions
        tensors = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            del tensors["lm_head.weight"]
        for i in range(model.config.n_layer):
            tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
            tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        raise ValueError(layout)
    return folder


SHAPES = {
    # name: (GPT-2 config, input layout)
    "tied-safetensors": (dict(n_embd=32, n_head=4, n_layer=2, n_positions=48), "safetensors"),
    "untied-bin": (dict(n_embd=48, n_head=3, n_layer=3, n_positions=40, tie_word_embeddings=False), "bin"),
    "tied-hub-names": (dict(n_embd=64, n_head=8, n_layer=1, n_positions=64), "hub"),
    "untied-sharded": (
        dict(n_embd=32, n_head=2, n_layer=4, n_positions=32, tie_word_embeddings=False),
        "sharded",
    ),
}


@pytest.mark.parametrize("name", SHAPES)
def test_converted_model_matches_gpt2(name, tmp_path):
    shape, layout = SHAPES[name]
    vocab = 97
    src_dir = save_gpt2(gpt2(vocab_size=vocab, **shape), tmp_path / "gpt2", layout)
    out = conv.convert(src_dir, tmp_path / "out")
    config = assert_model_folder(out, tmp_path / "out")
    tied = shape.get("tie_word_embeddings", True)
    assert config["tie_word_embeddings"] is tied

    for attn in ("eager", "sdpa"):
        src = GPT2LMHeadModel.from_pretrained(src_dir, attn_implementation=attn).eval()
        ours = AutoModelForCausalLM.from_pretrained(out, attn_implementation=attn).eval()
        assert isinstance(ours, GPTScratchForCausalLM)
        assert ours.dtype == torch.float32
        assert (ours.out_head.weight is ours.model.tok_emb.weight) is tied
        x = prompts(vocab, length=shape["n_positions"])  # the whole context
        with torch.no_grad():
            expected, got = src(x).logits, ours(x).logits
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-4, attn
        assert_same_generations(
            src, ours, vocab, new_tokens=shape["n_positions"] - 7
        )  # up to the full context


def test_untied_head_stays_untied(tmp_path):
    src = gpt2(tie_word_embeddings=False)
    out = conv.convert(save_gpt2(src, tmp_path / "gpt2"), tmp_path / "out")
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {"out_head.weight", "model.tok_emb.weight"} <= set(f.keys())
        head, emb = f.get_tensor("out_head.weight"), f.get_tensor("model.tok_emb.weight")
    assert torch.equal(head, src.lm_head.weight) and not torch.equal(head, emb)
    ours = AutoModelForCausalLM.from_pretrained(out)
    assert not ours.config.tie_word_embeddings
    assert ours.out_head.weight.data_ptr() != ours.model.tok_emb.weight.data_ptr()
    with torch.no_grad():  # changing one leaves the other as it was
        ours.model.tok_emb.weight.zero_()
    assert torch.equal(ours.out_head.weight, src.lm_head.weight)


def test_trust_remote_code_without_the_package(tmp_path):
    """A fresh process that never imports `modeling_gpt_scratch` loads the folder through the copied
    code files; the logits are the source's."""
    src = gpt2(vocab_size=50257, n_positions=32)
    out = conv.convert(save_gpt2(src, tmp_path / "gpt2"), tmp_path / "out")
    x = torch.tensor([[6109, 3626, 6100, 345]])
    with torch.no_grad():
        torch.save(src(x).logits, tmp_path / "expected.pt")
    code = f"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
assert "modeling_gpt_scratch" not in sys.modules, "the package was imported"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
tok = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)
ids = tok("Every effort moves you", return_tensors="pt").input_ids
assert ids.tolist() == [[6109, 3626, 6100, 345]], ids
assert tok.pad_token_id == 50256
with torch.no_grad():
    diff = (model(ids).logits - torch.load({str(tmp_path / "expected.pt")!r})).abs().max().item()
assert diff <= 1e-4, diff
print("ok")
"""
    assert_fresh_python_says_ok(code, cwd=tmp_path)


def test_cli_bfloat16_sharded(tmp_path):
    src = gpt2(n_embd=64, n_head=4, n_layer=2, n_positions=64)
    src_dir = save_gpt2(src, tmp_path / "gpt2")
    out = tmp_path / "nested" / "out"
    tensors = convert_sharded_bfloat16("convert_hf_gpt2", src_dir, out, "40KB")
    d = 64  # Q is the first third of GPT-2's fused c_attn, transposed to nn.Linear's [out, in]
    c_attn = src.transformer.h[1].attn.c_attn.weight
    assert torch.equal(tensors["model.trf_blocks.1.att.W_query.weight"], c_attn[:, :d].T.to(torch.bfloat16))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"

    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    assert ours.dtype == torch.bfloat16
    x = prompts(97, length=20)
    with torch.no_grad():
        expected = src.to(torch.bfloat16)(x).logits.float()
        got = ours(x).logits.float()
    assert (got - expected).abs().max().item() <= 0.1 * expected.abs().max().item()


def test_float16(tmp_path):
    out = conv.convert(save_gpt2(gpt2(), tmp_path / "gpt2"), tmp_path / "out", dtype="float16")
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float16


# --------------------------------------------------------------------------------- tokenizer


def test_gpt2_vocab_gets_gpt2_tokenizer(tmp_path):
    out = conv.convert(save_gpt2(gpt2(vocab_size=50257, n_positions=32), tmp_path / "gpt2"), tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 50257 and tok.pad_token_id == 50256
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.pad_token_id == model.generation_config.pad_token_id == 50256


def test_input_tokenizer_is_copied(tmp_path, shared_data):
    """The input's own tokenizer (here GPT-2's plus a token) is the one saved, not the default."""
    src_dir = save_gpt2(gpt2(vocab_size=50258, n_positions=32), tmp_path / "gpt2")
    tok = AutoTokenizer.from_pretrained(shared_data / "gpt2_tokenizer" / "hf")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tok.save_pretrained(src_dir)
    out = conv.convert(src_dir, tmp_path / "out")
    reloaded = AutoTokenizer.from_pretrained(out)
    assert len(reloaded) == 50258
    assert reloaded.encode("Hi<|im_end|>") == [17250, 50257]
    assert reloaded.pad_token_id == 50256


def test_small_vocab_gets_no_tokenizer(tmp_path, capfd):
    """GPT-2's tokenizer would give ids the 97-token model cannot embed: none is saved, with a warning."""
    out = conv.convert(save_gpt2(gpt2(vocab_size=97), tmp_path / "gpt2"), tmp_path / "out")
    assert not any("tokenizer" in p.name for p in out.iterdir())
    assert "no tokenizer" in capfd.readouterr().err
    AutoModelForCausalLM.from_pretrained(out)

    with pytest.raises(CLIError, match="50257 tokens but the model's vocab_size is 97"):
        conv.convert(tmp_path / "gpt2", tmp_path / "out2", tokenizer="openai-community/gpt2")
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------------- output folder


def test_output_folder_rules(tmp_path):
    src_dir = save_gpt2(gpt2(), tmp_path / "in" / "gpt2")
    assert_output_folder_rules(
        lambda output, **options: conv.convert(src_dir, output, **options),
        src_dir,
        tmp_path,
        break_source=lambda: (src_dir / "model.safetensors").write_bytes(b"not safetensors"),
        error="model.safetensors",
        replaces="would replace the input folder",
    )


# ------------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def good_src(tmp_path_factory):
    return save_gpt2(gpt2(n_layer=2), tmp_path_factory.mktemp("good") / "gpt2")


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_weights(folder, fn):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _as_bin(folder):
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _shard_with_missing_file(folder):
    shutil.rmtree(folder)
    save_gpt2(gpt2(), folder, "sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (folder / victim).unlink()
    return victim


# name: (how to break a copy of a good GPT-2 folder, or the --input to use; words the message must hold)
BAD_INPUTS = {
    "missing-folder": ("does/not/exist", ["does/not/exist", "not"]),
    "hub-id-not-cached": ("nobody-here/no-such-model", ["nobody-here/no-such-model", "Hub"]),
    "hub-cache-without-weights": (
        "openai-community/gpt2",
        ["openai-community/gpt2", "no weights file", "model.safetensors", "HF_HUB_OFFLINE"],
    ),
    "no-weights-file": (
        lambda d: (d / "model.safetensors").unlink(),
        ["no weights file", "model.safetensors"],
    ),
    "no-config": (lambda d: (d / "config.json").unlink(), ["config.json", "not found"]),
    "config-not-json": (lambda d: (d / "config.json").write_text("{oops"), ["config.json", "not valid JSON"]),
    "config-not-gpt2": (lambda d: _edit_config(d, model_type="llama"), ["config.json", "'llama'", "'gpt2'"]),
    "config-unsupported-activation": (
        lambda d: _edit_config(d, activation_function="relu"),
        ["config.json", "activation_function='relu'", "gelu_new"],
    ),
    "config-unsupported-n-inner": (lambda d: _edit_config(d, n_inner=100), ["config.json", "n_inner=100"]),
    "config-cross-attention": (
        lambda d: _edit_config(d, add_cross_attention=True),
        ["config.json", "add_cross_attention"],
    ),
    "config-heads-do-not-divide": (lambda d: _edit_config(d, n_head=5), ["n_heads", "divisible"]),
    "truncated-safetensors": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:3000]),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "empty-safetensors": (
        lambda d: (d / "model.safetensors").write_bytes(b""),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "corrupt-bin": (
        lambda d: (
            (d / "model.safetensors").unlink(),
            (d / "pytorch_model.bin").write_bytes(b"\x80\x02garbage"),
        ),
        ["pytorch_model.bin", "weights_only=True"],
    ),
    "truncated-bin": (
        lambda d: (
            _as_bin(d),
            (d / "pytorch_model.bin").write_bytes((d / "pytorch_model.bin").read_bytes()[:5000]),
        ),
        ["pytorch_model.bin", "cannot be read", "truncated"],
    ),
    "bin-with-code": (  # weights_only=True refuses to run what a pickle asks for
        lambda d: (
            (d / "model.safetensors").unlink(),
            torch.save({"x": RunsCode()}, d / "pytorch_model.bin"),
        ),
        ["pytorch_model.bin", "weights_only=True", "`print`"],
    ),
    "bin-not-a-state-dict": (
        lambda d: ((d / "model.safetensors").unlink(), torch.save([1, 2, 3], d / "pytorch_model.bin")),
        ["pytorch_model.bin", "state dict"],
    ),
    "missing-tensor": (
        lambda d: _edit_weights(d, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias")),
        ["model.safetensors", "h.1.mlp.c_fc.bias", "[128]"],
    ),
    "wrong-shape": (
        lambda d: _edit_weights(
            d, lambda t: t.update({"transformer.h.0.attn.c_attn.weight": torch.zeros(32, 64)})
        ),
        ["h.0.attn.c_attn.weight", "[32, 64]", "expected [32, 96]"],
    ),
    "wrong-vocab": (
        lambda d: _edit_config(d, vocab_size=100),
        ["wte.weight", "[97, 32]", "expected [100, 32]"],
    ),
    "more-layers-in-config": (lambda d: _edit_config(d, n_layer=3), ["h.2.attn.c_attn.weight", "no tensor"]),
    "more-layers-in-weights": (lambda d: _edit_config(d, n_layer=1), ["h.1.", "n_layer=1"]),
    "untied-without-head": (
        lambda d: (
            _edit_config(d, tie_word_embeddings=False),
            _edit_weights(d, lambda t: t.pop("lm_head.weight", None)),
        ),
        ["lm_head.weight", "tie_word_embeddings"],
    ),
    "tied-but-head-differs": (
        lambda d: _edit_weights(d, lambda t: t.update({"lm_head.weight": torch.zeros(97, 32)})),
        ["lm_head.weight", "differs from `wte.weight`"],
    ),
    "shard-missing": (_shard_with_missing_file, ["model-0000", "not found"]),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input(name, good_src, tmp_path, capfd):
    source, words = broken_copy(BAD_INPUTS[name], good_src, tmp_path / "gpt2")
    assert_main_fails_cleanly("convert_hf_gpt2", ["--input", source], words, tmp_path, capfd)


@pytest.mark.parametrize("name", ["wrong-shape", "hub-cache-without-weights"])
def test_bad_input_cli(name, good_src, tmp_path):
    """The same, as a real process: no library warnings or tracebacks on stderr either."""
    source, words = broken_copy(BAD_INPUTS[name], good_src, tmp_path / "gpt2")
    assert_process_fails_cleanly("convert_hf_gpt2", ["--input", source], words, tmp_path)


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS)
def test_bad_options(option, value, words, good_src, tmp_path):
    convert = lambda output, **options: conv.convert(good_src, output, **options)  # noqa: E731
    assert_bad_option_refused(convert, option, value, words, tmp_path / "out")
