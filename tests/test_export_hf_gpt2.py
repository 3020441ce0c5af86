"""conversion/export_hf_gpt2.py: random models of ours are exported to GPT-2 folders, which stock
`transformers` (without this package, without remote code) must load and run to the same logits.
What GPT-2 cannot express, and bad inputs, must fail with one `error:` line and leave no output."""

import json
import shutil

import pytest
import torch
import transformers
from conftest import (
    BAD_OPTIONS,
    assert_bad_option_refused,
    assert_close,
    assert_fresh_python_says_ok,
    assert_main_fails_cleanly,
    assert_process_fails_cleanly,
    book_model,
    broken_copy,
    convert_sharded_bfloat16,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM, GPTScratchForSequenceClassification
from modeling_gpt_scratch.cli import CLIError
from modeling_gpt_scratch.conversion import book as book_converter
from modeling_gpt_scratch.conversion import export_gpt2 as export
from modeling_gpt_scratch.tokenization import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def ours(model_class=GPTScratchForCausalLM, **kwargs):
    """A random model of ours; every tensor nudged, so no LayerNorm is the identity and no bias zero."""
    vocab = kwargs.setdefault("vocab_size", 97)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        kwargs.setdefault(key, vocab - 1)
    defaults = dict(context_length=24, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)
    model = model_class(GPTScratchConfig(**{**defaults, **kwargs}, initializer_range=0.2))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def assert_plain_gpt2_folder(out):
    """Nothing in the folder needs this package: GPT-2's config, no code files, no auto_map."""
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "auto_map" not in config
    assert not any(p.suffix == ".py" for p in out.iterdir())
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder
    return config


# ------------------------------------------------------------------------------- causal LM

CASES = {
    # name: (our config, how the input folder is saved)
    "tied-no-qkv-bias": (dict(tie_word_embeddings=True, qkv_bias=False), {}),
    "untied-qkv-bias": (dict(tie_word_embeddings=False, qkv_bias=True, n_layers=3, n_heads=2), {}),
    "untied-sharded-input": (
        dict(tie_word_embeddings=False, qkv_bias=False, emb_dim=48, n_heads=3, context_length=16),
        {"max_shard_size": "30KB"},
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_exported_gpt2_matches(name, tmp_path):
    config, save = CASES[name]
    src = ours(**config)
    src.save_pretrained(tmp_path / "ours", **save)
    out = export.convert(tmp_path / "ours", tmp_path / "out")
    assert out == tmp_path / "out"
    gpt2_config = assert_plain_gpt2_folder(out)
    tied = config["tie_word_embeddings"]
    assert gpt2_config["architectures"] == ["GPT2LMHeadModel"]
    assert gpt2_config["tie_word_embeddings"] is tied
    with safe_open(out / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in f.keys()) is not tied
        c_attn_bias = f.get_tensor("transformer.h.0.attn.c_attn.bias")
    assert (torch.count_nonzero(c_attn_bias) == 0) is not config["qkv_bias"]  # no Q/K/V bias: zeros

    x = torch.randint(0, 96, (2, src.config.context_length))  # the whole context
    with torch.no_grad():
        expected = src(x).logits
    for attn in ("eager", "sdpa"):
        gpt2, info = GPT2LMHeadModel.from_pretrained(out, attn_implementation=attn, output_loading_info=True)
        assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
        assert (gpt2.lm_head.weight is gpt2.transformer.wte.weight) is tied
        with torch.no_grad():
            assert_close(gpt2(x).logits, expected)
    prompt = x[:1, :5]
    kwargs = dict(max_new_tokens=src.config.context_length - 5, do_sample=False, pad_token_id=96)
    assert gpt2.generate(prompt, **kwargs).tolist() == src.generate(prompt, **kwargs).tolist()


def test_plain_transformers_loads_it(tmp_path):
    """A fresh process where `import modeling_gpt_scratch` fails loads the folder with GPT2LMHeadModel and
    AutoModelForCausalLM, without trust_remote_code: the untied head stays untied, logits and greedy
    tokens are ours, and the tokenizer came along."""
    src = ours(vocab_size=50257, emb_dim=16, n_heads=2, tie_word_embeddings=False)
    src.save_pretrained(tmp_path / "ours")
    load_tokenizer().save_pretrained(tmp_path / "ours")
    out = export.convert(tmp_path / "ours", tmp_path / "out")
    assert_plain_gpt2_folder(out)
    x = torch.tensor([[6109, 3626, 6100, 345]])
    with torch.no_grad():
        torch.save(
            {
                "logits": src(x).logits,
                "greedy": src.generate(x, max_new_tokens=8, do_sample=False),
                "head": src.out_head.weight,
            },
            tmp_path / "expected.pt",
        )
    code = f"""
import sys
sys.modules["modeling_gpt_scratch"] = None  # `import modeling_gpt_scratch` raises ImportError
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel
expected = torch.load({str(tmp_path / "expected.pt")!r})
for cls in (GPT2LMHeadModel, AutoModelForCausalLM):
    model, info = cls.from_pretrained({str(out)!r}, output_loading_info=True)
    assert type(model) is GPT2LMHeadModel, type(model)
    assert not any(info.values()), info
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, expected["head"])
    tok = AutoTokenizer.from_pretrained({str(out)!r})
    ids = tok("Every effort moves you", return_tensors="pt").input_ids
    assert ids.tolist() == [[6109, 3626, 6100, 345]], ids
    with torch.no_grad():
        diff = (model(ids).logits - expected["logits"]).abs().max().item()
        assert diff <= 1e-4, diff
        greedy = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert greedy.tolist() == expected["greedy"].tolist(), (greedy, expected["greedy"])
assert "transformers_modules" not in str(sys.modules.keys())
print("ok")
"""
    assert_fresh_python_says_ok(code, cwd=tmp_path)


def test_book_checkpoint_to_gpt2(tmp_path):
    """The whole road: the book's model.pth -> our folder -> GPT-2, with the book model's logits."""
    cfg = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2}
    cfg.update(drop_rate=0.1, qkv_bias=False)
    book = book_model(cfg)
    torch.save(book.state_dict(), tmp_path / "model.pth")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    book_converter.convert(tmp_path / "model.pth", tmp_path / "ours", config=tmp_path / "cfg.json")
    out = export.convert(tmp_path / "ours", tmp_path / "gpt2")
    gpt2 = GPT2LMHeadModel.from_pretrained(out)
    x = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        assert_close(gpt2(x).logits, book(x))


def test_cli_bfloat16_sharded(tmp_path):
    src = ours(emb_dim=64, n_heads=4, tie_word_embeddings=False)
    src.save_pretrained(tmp_path / "ours")
    out = tmp_path / "nested" / "out"
    tensors = convert_sharded_bfloat16("export_hf_gpt2", tmp_path / "ours", out, "40KB")
    d = 64  # K is the middle third of GPT-2's fused c_attn, in Conv1D's [in, out] layout
    k = src.model.trf_blocks[1].att.W_key.weight
    assert torch.equal(tensors["transformer.h.1.attn.c_attn.weight"][:, d : 2 * d], k.T.to(torch.bfloat16))

    gpt2 = GPT2LMHeadModel.from_pretrained(out)
    assert gpt2.dtype == torch.bfloat16
    x = torch.randint(0, 96, (2, 20))
    with torch.no_grad():
        expected = src.to(torch.bfloat16)(x).logits.float()
        got = gpt2(x).logits.float()
    assert (got - expected).abs().max().item() <= 0.05 * expected.abs().max().item()


# ------------------------------------------------------------------------------- classifier


def classifier(bias):
    model = ours(GPTScratchForSequenceClassification, num_labels=3, id2label={0: "ham", 1: "spam", 2: "eggs"})
    with torch.no_grad():
        if bias == "zero":
            model.score.bias.zero_()
        elif bias == "rank-deficient":  # two equal rows with different biases: no shift of ln_f gives both
            model.score.weight[1] = model.score.weight[0]
    return model


def classifier_inputs():
    """Unpadded rows, and right-padded ones (with the pad id 96) read at their last real token."""
    x = torch.randint(0, 96, (3, 12))
    padded = x.clone()
    padded[0, 7:] = 96
    padded[2, 10:] = 96
    return x, padded


@pytest.mark.parametrize("bias", ["zero", "folded"])
def test_classifier_export(bias, tmp_path):
    src = classifier(bias)
    src.save_pretrained(tmp_path / "ours")
    out = export.convert(tmp_path / "ours", tmp_path / "out", fold_score_bias=bias == "folded")
    config = assert_plain_gpt2_folder(out)
    assert config["architectures"] == ["GPT2ForSequenceClassification"]
    assert config["id2label"] == {"0": "ham", "1": "spam", "2": "eggs"} and config["pad_token_id"] == 96
    gpt2, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, output_loading_info=True
    )
    assert isinstance(gpt2, GPT2ForSequenceClassification) and not any(info.values()), info
    ln_f_moved = not torch.equal(gpt2.transformer.ln_f.bias, src.model.final_norm.shift)
    assert ln_f_moved is (bias == "folded")
    for x in classifier_inputs():
        with torch.no_grad():
            assert_close(gpt2(x).logits, src(x).logits)


def test_classifier_with_bias_needs_folding(tmp_path):
    """GPT-2's classifier head has no bias: a non-zero bias is an error that says so, unless folded;
    a bias that cannot be folded is an error even then."""
    classifier("random").save_pretrained(tmp_path / "ours")
    with pytest.raises(CLIError, match=r"`score.bias` is not zero.*no bias.*--fold_score_bias"):
        export.convert(tmp_path / "ours", tmp_path / "out")
    classifier("rank-deficient").save_pretrained(tmp_path / "bad")
    with pytest.raises(CLIError, match="cannot be folded.*not independent"):
        export.convert(tmp_path / "bad", tmp_path / "out", fold_score_bias=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ours"]


def test_book_pooling_classifier_is_refused(tmp_path):
    """A converted chapter 6 classifier reads the last position of padded text; GPT-2 cannot."""
    model = classifier("zero")
    model.config.classifier_pooling, model.config.classifier_padded_length = "last_position", 12
    model.save_pretrained(tmp_path / "ours")
    with pytest.raises(CLIError, match="classifier_pooling='last_position'.*padded to 12 tokens.*GPT-2"):
        export.convert(tmp_path / "ours", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def good_src(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good") / "ours"
    ours(tie_word_embeddings=True).save_pretrained(folder)
    return folder


def _edit_config(**changes):
    def apply(folder):
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return apply


def _edit_weights(fn):
    def apply(folder):
        path = folder / "model.safetensors"
        tensors = load_file(path)
        fn(tensors)
        save_file(tensors, path, metadata={"format": "pt"})

    return apply


def _gpt2_folder(folder):
    shutil.rmtree(folder)
    GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=97)).save_pretrained(
        folder
    )


# name: (how to break a copy of a good folder of ours, or the --input to use; words the message must hold)
BAD_INPUTS = {
    "missing-folder": ("does/not/exist", ["does/not/exist", "not"]),
    "no-config": (lambda d: (d / "config.json").unlink(), ["config.json", "not found"]),
    "config-not-json": (lambda d: (d / "config.json").write_text("{oops"), ["config.json", "not valid JSON"]),
    "a-gpt2-folder": (_gpt2_folder, ["config.json", "model_type 'gpt2'", "'gpt_scratch'"]),
    "unknown-architecture": (
        _edit_config(architectures=["GPTScratchForTokenClassification"]),
        ["config.json", "GPTScratchForTokenClassification", "GPTScratchForCausalLM"],
    ),
    "no-weights": (lambda d: (d / "model.safetensors").unlink(), ["no weights file", "model.safetensors"]),
    "truncated-safetensors": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:3000]),
        ["model.safetensors", "not a valid safetensors file"],
    ),
    "missing-tensor": (
        _edit_weights(lambda t: t.pop("model.trf_blocks.1.ff.layers.0.bias")),
        ["model.safetensors", "`model.trf_blocks.1.ff.layers.0.bias` is missing", "[128]", "n_layers=2"],
    ),
    "unexpected-tensor": (
        _edit_weights(lambda t: t.update({"model.trf_blocks.0.att.W_query.bias": torch.zeros(32)})),
        ["unexpected tensor `model.trf_blocks.0.att.W_query.bias`", "qkv_bias=False", "no such tensor"],
    ),
    "wrong-shape": (
        _edit_weights(lambda t: t.update({"model.pos_emb.weight": torch.zeros(16, 32)})),
        ["`model.pos_emb.weight` has shape [16, 32], expected [24, 32]", "context_length=24"],
    ),
    "more-layers-in-config": (
        _edit_config(n_layers=3),
        ["`model.trf_blocks.2.att.W_query.weight` is missing", "n_layers=3"],
    ),
    "tied-but-head-differs": (
        _edit_weights(lambda t: t.update({"out_head.weight": torch.zeros(97, 32)})),
        ["`out_head.weight` differs from `model.tok_emb.weight`", "tie_word_embeddings"],
    ),
    "untied-without-head": (
        _edit_config(tie_word_embeddings=False),
        ["`out_head.weight` is missing", "[97, 32]"],
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input(name, good_src, tmp_path, capfd):
    source, words = broken_copy(BAD_INPUTS[name], good_src, tmp_path / "ours")
    assert_main_fails_cleanly("export_hf_gpt2", ["--input", source], words, tmp_path, capfd)


def test_bad_input_cli(tmp_path):
    """A real process: one line on stderr for a classifier GPT-2 cannot express, nothing else."""
    classifier("random").save_pretrained(tmp_path / "ours")
    words = ["`score.bias` is not zero", "--fold_score_bias"]
    assert_process_fails_cleanly("export_hf_gpt2", ["--input", tmp_path / "ours"], words, tmp_path)


def test_output_may_not_replace_the_input(good_src, tmp_path):
    for output in (good_src, good_src.parent):
        with pytest.raises(CLIError, match="would replace the input folder"):
            export.convert(good_src, output, overwrite=True)
    assert (good_src / "model.safetensors").is_file()


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS)
def test_bad_options(option, value, words, good_src, tmp_path):
    convert = lambda output, **options: export.convert(good_src, output, **options)  # noqa: E731
    assert_bad_option_refused(convert, option, value, words, tmp_path / "out")
