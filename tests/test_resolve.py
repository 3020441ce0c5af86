"""modeling_gpt_scratch.resolve: every script reads --config_name / --config_overrides /
--model_name_or_path / --tokenizer_name the same way, and a mistake is one line."""

import json

import pytest
from transformers import AutoModelForCausalLM, GPT2Config

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
from modeling_gpt_scratch.cli import CLIError
from modeling_gpt_scratch.resolve import (
    has_tokenizer,
    load_config,
    load_pretrained,
    load_tokenizer_for,
    parse_overrides,
)
from modeling_gpt_scratch.tokenization import load_tokenizer

SMALL = dict(emb_dim=32, n_layers=2, n_heads=2, context_length=32)


@pytest.mark.parametrize(
    "files, expected",
    [
        ((), False),
        (("tokenizer.json",), True),  # what save_pretrained writes
        (("tokenizer_config.json",), True),
        (("vocab.json", "merges.txt"), True),  # GPT-2's original pair, as on the Hub
        (
            ("vocab.json",),
            False,
        ),  # half a pair reads as no tokenizer (the old pretrain/generate rule said yes)
        (("merges.txt",), False),
        (("config.json", "model.safetensors"), False),
    ],
)
def test_which_folders_have_a_tokenizer(tmp_path, files, expected):
    for name in files:
        (tmp_path / name).write_text("{}")
    assert has_tokenizer(tmp_path) is expected


def test_tokenizer_choice(tmp_path):
    """--tokenizer_name wins; else the model folder's own; else GPT-2's. Padding is <|endoftext|>."""
    bare = tmp_path / "bare"
    GPTScratchForCausalLM(GPTScratchConfig.from_preset("tiny", **SMALL)).save_pretrained(bare)
    own = tmp_path / "own"
    tokenizer = load_tokenizer()
    tokenizer.add_tokens(["<|extra|>"])
    tokenizer.save_pretrained(own)
    assert len(load_tokenizer_for(None, str(bare))) == 50257  # GPT-2's
    assert len(load_tokenizer_for(None, str(own))) == 50258  # the folder's
    assert len(load_tokenizer_for(str(own), str(bare))) == 50258
    assert load_tokenizer_for(None, None).pad_token == "<|endoftext|>"
    with pytest.raises(CLIError, match="cannot load the tokenizer"):
        load_tokenizer_for(str(bare), None)


def test_overrides_are_typed_and_known():
    config = GPTScratchConfig.from_preset("tiny")
    assert parse_overrides("context_length=64, drop_rate=0,qkv_bias=true", config) == {
        "context_length": 64, "drop_rate": 0.0, "qkv_bias": True
    }  # fmt: skip
    assert parse_overrides("hidden_size=64", config) == {"hidden_size": 64}  # a standard name works too
    for text, message in [
        ("context_lenght=64", "has no field 'context_lenght'; it has"),
        ("vocab_size=50k", "vocab_size=50k: vocab_size is an integer"),
        ("drop_rate=nan", "drop_rate must be a finite number"),
        ("qkv_bias=yes", "qkv_bias is true or false"),
        ("emb_dim", "wants key=value pairs"),
    ]:
        with pytest.raises(CLIError, match=message):
            parse_overrides(text, config)


def test_configs_from_presets_files_and_folders(tmp_path):
    assert load_config("tiny", overrides="n_layers=2").n_layers == 2
    GPTScratchConfig.from_preset("tiny", **SMALL).to_json_file(tmp_path / "c.json")
    assert load_config(str(tmp_path / "c.json"), overrides="n_layers=3").n_layers == 3
    GPTScratchConfig.from_preset("tiny", **SMALL).save_pretrained(tmp_path / "folder")
    assert load_config(None, str(tmp_path / "folder"), num_labels=3).num_labels == 3
    with pytest.raises(CLIError, match="neither a preset"):
        load_config("tiny2")
    with pytest.raises(CLIError, match="must be divisible by"):
        load_config("tiny", overrides="n_heads=3")
    # A config.json whose numbers are strings: one line, not the Hub library's traceback.
    data = json.loads((tmp_path / "folder" / "config.json").read_text())
    (tmp_path / "folder" / "config.json").write_text(json.dumps({**data, "vocab_size": "50257"}))
    with pytest.raises(CLIError, match="cannot read a model config from --model_name_or_path"):
        load_config(None, str(tmp_path / "folder"))


def test_a_broken_model_folder_is_one_line(tmp_path):
    GPT2Config(n_embd=32, n_layer=1, n_head=2).save_pretrained(tmp_path)  # a config, no weights
    with pytest.raises(CLIError, match=r"cannot load a model from .*: OSError"):
        load_pretrained(AutoModelForCausalLM, str(tmp_path))
