"""What a script's model options mean, resolved the same way by every script.

- `load_config(config_name, model_name_or_path, overrides)`: a preset (`tiny`, `gpt2-small`, ...), a
  config JSON file, or a folder / Hub id, with `--config_overrides "key=value,..."` applied: known keys
  only, each value of its field's type, checked by the config.
- `load_tokenizer_for(tokenizer_name, model_name_or_path)`: the named tokenizer, else the model folder's
  own when `has_tokenizer(folder)`, else GPT-2's; `<|endoftext|>` pads when the tokenizer has no pad.
- `load_pretrained(auto_class, source, **kwargs)`: `from_pretrained` whose failures are one line;
  `load_causal_lm(...)`: the model a fine-tuning script starts from.

Every failure is a `CLIError` naming the option and the problem.
"""

import math
import os
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.utils import logging as hf_logging

from .cli import CLIError
from .configuration_gpt_scratch import PRESETS, GPTScratchConfig
from .tokenization import load_tokenizer


def describe(error: BaseException) -> str:
    """`Type: first line of the message`, for errors from libraries whose messages run long."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


# ------------------------------------------------------------------------------------------ config
def _typed(key: str, text: str, current):
    """`text` as a value of `current`'s type (a new key's value: bool, int, float or text)."""
    lowered = text.lower()
    if isinstance(current, bool) or (current is None and lowered in ("true", "false")):
        if lowered not in ("true", "false"):
            raise CLIError(f"--config_overrides {key}={text}: {key} is true or false")
        return lowered == "true"
    kinds = (int,) if isinstance(current, int) else (float,) if isinstance(current, float) else ()
    if current is None:
        kinds = (int, float)
    for kind in kinds:
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise CLIError(f"--config_overrides {key}={text}: {key} must be a finite number")
        return value
    if kinds and current is not None:
        what = "an integer" if kinds == (int,) else "a number"
        raise CLIError(f"--config_overrides {key}={text}: {key} is {what}")
    if isinstance(current, dict | list):
        raise CLIError(f"--config_overrides {key}: {key} is not a single value; edit a config.json instead")
    return text


def parse_overrides(text: str | None, config: PretrainedConfig) -> dict:
    """`"context_length=256,drop_rate=0.0"` as {key: typed value}, for the fields `config` has (a
    typo is an error that lists them); booleans are true/false."""
    known = {**config.to_dict(), **{k: getattr(config, k, None) for k in config.attribute_map}}
    overrides = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise CLIError(f"--config_overrides wants key=value pairs separated by commas, got {item!r}")
        if key not in known or key.startswith("_"):
            fields = sorted(k for k in known if not k.startswith("_"))
            raise CLIError(
                f"--config_overrides: {config.model_type} has no field {key!r}; it has {', '.join(fields)}"
            )
        overrides[key] = _typed(key, value, known[key])
    return overrides


def load_config(
    config_name: str | None = None,
    model_name_or_path: str | None = None,
    overrides: str | None = None,
    **fields,
) -> PretrainedConfig:
    """The config that `config_name` (a preset, a JSON file or a folder) or else `model_name_or_path`
    (a folder or Hub id) names, with `overrides` (the --config_overrides text) and `fields` (e.g. labels) set."""
    source = config_name or model_name_or_path
    if source is None:
        raise CLIError(
            "say which model: --config_name PRESET (or a config.json) or --model_name_or_path FOLDER"
        )
    if config_name and config_name not in PRESETS and not os.path.exists(config_name):
        raise CLIError(
            f"--config_name {config_name!r} is neither a preset ({', '.join(PRESETS)}) nor a config file or folder"
        )
    try:
        if config_name in PRESETS:
            config = GPTScratchConfig.from_preset(config_name)
        elif config_name and Path(config_name).is_file():
            config = GPTScratchConfig.from_json_file(config_name)
        else:
            config = AutoConfig.from_pretrained(source)
    except Exception as error:  # a missing or broken file fails in many ways; the first line says which
        option = "--config_name" if config_name else "--model_name_or_path"
        raise CLIError(f"cannot read a model config from {option} {source!r}: {describe(error)}") from error
    changes = {**parse_overrides(overrides, config), **fields}
    for key, value in changes.items():
        setattr(config, key, value)
    validate = getattr(config, "_validate", None)
    try:
        if changes and validate is not None:
            validate()
    except (ValueError, TypeError) as error:
        raise CLIError(f"--config_overrides: {describe(error)}") from error
    return config


# --------------------------------------------------------------------------------------- tokenizer
def has_tokenizer(folder: str | os.PathLike) -> bool:
    """A folder holds a tokenizer when `AutoTokenizer.from_pretrained` can read one from it: a
    tokenizer.json or tokenizer_config.json (what `save_pretrained` writes), or GPT-2's original pair
    vocab.json + merges.txt (a model folder from the Hub)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        return True
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


def load_tokenizer_for(tokenizer_name: str | None = None, model_name_or_path: str | None = None, **kwargs):
    """`tokenizer_name` if given; else the model's own (a folder with `has_tokenizer`, or a Hub id);
    else GPT-2's. Pads with its end-of-text token when it has no padding token."""
    source = tokenizer_name
    if source is None and model_name_or_path:
        local = os.path.isdir(model_name_or_path)
        if (local and has_tokenizer(model_name_or_path)) or not (local or os.path.exists(model_name_or_path)):
            source = model_name_or_path
    try:
        tokenizer = (
            load_tokenizer(**kwargs) if source is None else AutoTokenizer.from_pretrained(source, **kwargs)
        )
    except Exception as error:  # a broken file or an unreachable Hub id; the first line says which
        raise CLIError(f"cannot load the tokenizer ({source or 'GPT-2'}): {describe(error)}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # the book pads with <|endoftext|>
    return tokenizer


def check_vocab_fits(tokenizer, config) -> None:
    """A tokenizer whose ids the model has no embedding for fails deep inside training (an index
    error in the Trainer); say so before: one line, naming both sizes."""
    if len(tokenizer) > config.vocab_size:
        raise CLIError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}: "
            "choose the model's own tokenizer (--tokenizer_name) or a model with a vocabulary this large"
        )


# ------------------------------------------------------------------------------------------ models
def load_pretrained(auto_class, source: str, quiet: bool = False, **kwargs):
    """`auto_class.from_pretrained(source, **kwargs)`; a failure is one line naming the folder. With
    `quiet`, transformers' load report is not printed (a new head's missing weights are expected)."""
    level = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except Exception as error:  # a broken folder fails in many ways; the first line says which
        raise CLIError(f"cannot load a model from {source!r}: {describe(error)}") from error
    finally:
        hf_logging.set_verbosity(level)


def load_causal_lm(config_name=None, model_name_or_path=None, config_overrides=None):
    """The float32 causal LM a fine-tuning script starts from: random weights of `config_name` (with
    `config_overrides`), else the saved or converted model `model_name_or_path`."""
    import torch

    if config_name:
        config = load_config(config_name, None, config_overrides)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return load_pretrained(AutoModelForCausalLM, model_name_or_path, dtype=torch.float32)
