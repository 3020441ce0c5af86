"""A checkpoint of the book's `GPTModel` (a `.pth` file) -> this project's model.

The input is what chapters 5-7 of *Build a Large Language Model (From Scratch)* save:
`torch.save(model.state_dict(), "model.pth")`, or the dictionary
`{"model_state_dict": ..., "optimizer_state_dict": ...}`; keys may carry the `_orig_mod.` prefix of a
`torch.compile`d model (or `module.` from DDP). It is read with `torch.load(..., weights_only=True)`,
which never runs code from the file. The `trf_blocks.{i}.att.mask` buffers are checked (the causal
mask of the configured `context_length`) and dropped: the model builds its mask itself.

`--config` is a preset name (GPT_CONFIG_124M, gpt2-small, gpt2-medium, gpt2-large, gpt2-xl, tiny)
or a JSON file holding the book's config dictionary (vocab_size, context_length, emb_dim, n_heads,
n_layers, drop_rate, qkv_bias), e.g. `json.dump(BASE_CONFIG, f)`.

A language model (an `out_head` of vocab_size rows) becomes a `GPTScratchForCausalLM`; its head is
tied to the token embedding only when the two are equal, as right after the book's
`load_weights_into_gpt`, and is otherwise kept as its own tensor. A chapter-6 classifier (an
`out_head` of num_classes rows) becomes a `GPTScratchForSequenceClassification` with
`num_labels=num_classes`, which gives the book's `model(x)[:, -1, :]` on unpadded input (on padded
input it reads the last non-padding token, where the book reads the last position).

The output folder holds the weights as safetensors (sharded above `--max_shard_size`), the config,
the code files, and GPT-2's tokenizer (the book's tiktoken encoding) when vocab_size is at least
50257. It is written to a temporary folder beside `--output` and moved into place at the end.
Bad input stops with one `error: ...` line naming the file or tensor, and leaves no output.
"""

import json
import os
import re
from pathlib import Path

import torch

from ..cli import CLIError, atomic_output_dir, one_line
from ..configuration_gpt_scratch import EOT_ID, PRESETS, GPTScratchConfig
from ..modeling_gpt_scratch import GPTScratchForCausalLM, GPTScratchForSequenceClassification
from ..tokenization import GPT2_VOCAB_SIZE, load_tokenizer
from .common import (
    check_tensors,
    expected_shapes,
    load_torch_file,
    model_from_state_dict,
    parse_dtype,
    parse_shard_size,
    refuse_to_replace_input,
    save_folder,
    warn,
)

BOOK_CONFIG_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
# Prefixes that wrappers add to every key: torch.compile's OptimizedModule, DDP's `module`.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
MASK = re.compile(r"^trf_blocks\.(\d+)\.att\.mask$")
BLOCK = re.compile(r"^(?:model\.)?trf_blocks\.(\d+)\.")


# ---------------------------------------------------------------------------------------- config


def read_config(config: str) -> tuple[dict, str]:
    """The book's config dictionary named by `--config` (a preset or a JSON file), and a label for messages.
    Presets may carry `tie_word_embeddings`; it is decided from the weights instead."""
    path = Path(config).expanduser()
    if path.is_file() or path.suffix == ".json":
        if not path.is_file():
            raise CLIError(f"config file {config} not found.")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CLIError(f"config file {config} is not valid JSON: {one_line(e)}") from e
        if not isinstance(raw, dict):
            raise CLIError(
                f"config file {config} holds a JSON {type(raw).__name__}; expected the book's config "
                f"object with {', '.join(BOOK_CONFIG_KEYS)}."
            )
        missing = [k for k in BOOK_CONFIG_KEYS if k not in raw]
        unknown = [k for k in raw if k not in BOOK_CONFIG_KEYS]
        if missing or unknown:
            problem = f"lacks {', '.join(missing)}" if missing else f"has unknown key {unknown[0]!r}"
            raise CLIError(
                f"config file {config} {problem}; expected the book's config dictionary with exactly "
                f"{', '.join(BOOK_CONFIG_KEYS)} (like GPT_CONFIG_124M)."
            )
        if not isinstance(raw["qkv_bias"], bool):
            raise CLIError(f"config file {config}: qkv_bias is {raw['qkv_bias']!r}; expected true or false.")
        return raw, f"config file {config}"
    if config in PRESETS:
        return {k: PRESETS[config][k] for k in BOOK_CONFIG_KEYS}, f"preset {config}"
    raise CLIError(
        f"--config {config!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file with the book's config."
    )


def make_config(book: dict, label: str, **overrides) -> GPTScratchConfig:
    """Our config from the book's dictionary. Without GPT-2's vocabulary there is no <|endoftext|>."""
    if isinstance(book["vocab_size"], int) and book["vocab_size"] <= EOT_ID:
        overrides = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None, **overrides}
    try:
        return GPTScratchConfig.from_book_dict(book, **overrides)
    except (TypeError, ValueError) as e:
        raise CLIError(f"{label}: {one_line(e)}") from e


def describe(config: GPTScratchConfig) -> str:
    return ", ".join(f"{k}={getattr(config, k)}" for k in BOOK_CONFIG_KEYS if k != "drop_rate")


# ----------------------------------------------------------------------------------------- input


def load_checkpoint(path: Path):
    """What `torch.save` wrote to `path` (see `common.load_torch_file`)."""
    if not path.exists():
        raise CLIError(f"input file {path} not found.")
    if path.is_dir():
        raise CLIError(f"input {path} is a folder; expected the .pth file that torch.save wrote.")
    return load_torch_file(path)


def book_state_dict(loaded, path: Path) -> dict:
    """The model's state dict in what `torch.load` gave: the dict itself, or its `model_state_dict`
    (chapter 5's checkpoint with the optimizer state), with wrapper prefixes removed."""
    if isinstance(loaded, dict) and "model_state_dict" in loaded:
        loaded = loaded["model_state_dict"]
        where = f"{path} (its model_state_dict)"
    else:
        where = str(path)
    if not isinstance(loaded, dict) or not loaded:
        raise CLIError(
            f"{where} holds {'an empty dict' if isinstance(loaded, dict) else 'a ' + type(loaded).__name__}; expected a "
            "state dict (model.state_dict()) or a dict with a `model_state_dict`."
        )
    not_tensor = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensor:
        keys = ", ".join(repr(k) for k in list(loaded)[:5])
        raise CLIError(
            f"{where}: `{not_tensor[0]}` is not a tensor ({type(loaded[not_tensor[0]]).__name__}); expected "
            f"a state dict (model.state_dict()) or a dict with a `model_state_dict` (found keys {keys}...)."
        )
    out = {}
    for key, tensor in loaded.items():
        name = str(key)
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in out:
            raise CLIError(
                f"{where} holds `{name}` twice (with and without a `_orig_mod.`/`module.` prefix)."
            )
        out[name] = tensor
    return out


# --------------------------------------------------------------------------------------- convert


def check_masks(sd: dict, config: GPTScratchConfig, where: str) -> None:
    """The book's `mask` buffers must be the causal mask of the configured context length."""
    n = config.context_length
    causal = None
    for name in [k for k in sd if MASK.match(k)]:
        mask = sd[name]
        if tuple(mask.shape) != (n, n):
            found = (
                f"; the checkpoint was saved with context_length {mask.shape[0]}"
                if mask.ndim == 2 and mask.shape[0] == mask.shape[1]
                else ""
            )
            raise CLIError(
                f"{where}: buffer `{name}` has shape {list(mask.shape)}, expected the causal mask [{n}, {n}] "
                f"of context_length {n}{found}: use a config with that context_length."
            )
        if causal is None:
            causal = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
        if not torch.equal(mask.bool(), causal):
            raise CLIError(
                f"{where}: buffer `{name}` is not the causal mask (ones above the diagonal) that the book's "
                "MultiHeadAttention registers; this converter handles only that model."
            )


def convert_state_dict(sd: dict, book: dict, label: str, where: str):
    """(model class, config, our state dict) for the book's state dict `sd`."""
    config = make_config(book, label)
    head, embedding = sd.get("out_head.weight"), sd.get("tok_emb.weight")
    vocab = embedding.shape[0] if embedding is not None and embedding.ndim == 2 else config.vocab_size
    rows = head.shape[0] if head is not None and head.ndim == 2 else vocab
    classifier = rows != vocab  # chapter 6: num_classes rows instead of one per token
    if not classifier and "out_head.bias" in sd:
        raise CLIError(
            f"{where}: tensor `out_head.bias` is unexpected: the book's GPTModel has a language-model head "
            f"without bias ({config.vocab_size} rows = vocab_size), and a classifier head has num_classes rows."
        )
    if classifier:
        config = make_config(book, label, num_labels=rows, tie_word_embeddings=False)
        model_class = GPTScratchForSequenceClassification
    else:
        model_class = GPTScratchForCausalLM
        tied = head is not None and embedding is not None and torch.equal(head, embedding)
        config = make_config(book, label, tie_word_embeddings=bool(tied))
    rename = {"score.weight": "out_head.weight", "score.bias": "out_head.bias"}
    expected = expected_shapes(model_class, config, lambda k: rename.get(k, k.removeprefix("model.")))

    def hint(kind: str, name: str) -> str:
        summary = f"{label} has {describe(config)}"
        if name.endswith(("W_query.bias", "W_key.bias", "W_value.bias")):
            if kind == "missing":
                return f"{summary}; for a checkpoint without Q/K/V biases (trained from scratch) set qkv_bias false."
            if kind == "unexpected":
                return f"{summary}; the checkpoint has Q/K/V biases (OpenAI's weights): set qkv_bias true."
        block = BLOCK.match(name)
        layers = 1 + max((int(m.group(1)) for k in sd if (m := BLOCK.match(k))), default=-1)
        if block and int(block.group(1)) >= min(layers, config.n_layers):
            return (
                f"the checkpoint has {layers} transformer blocks but {label} has n_layers={config.n_layers}."
            )
        if name == "out_head.bias":
            return "a classifier head without bias gets a zero bias."
        if kind == "shape":
            return f"{summary}: use the config the model was built with."
        if kind == "unexpected":
            return f"the book's GPTModel ({label}) has no such tensor."
        return f"expected a state dict of the book's GPTModel ({label})."

    check_masks(sd, config, where)
    weights = {k: v for k, v in sd.items() if not MASK.match(k)}
    optional = ("out_head.bias",) if classifier else ()
    check_tensors(weights, expected, where, optional=optional, hint=hint)

    ours = {}
    for name, tensor in weights.items():
        if name.startswith("out_head."):
            ours[name.replace("out_head.", "score." if classifier else "out_head.")] = tensor
        else:
            ours[f"model.{name}"] = tensor
    if classifier and "score.bias" not in ours:
        ours["score.bias"] = torch.zeros(rows, dtype=weights["out_head.weight"].dtype)
    if config.tie_word_embeddings:
        ours["out_head.weight"] = ours["model.tok_emb.weight"]
    return model_class, config, ours


def pick_tokenizer(vocab_size: int):
    """GPT-2's tokenizer (the book's tiktoken "gpt2" encoding, as a transformers tokenizer), when its
    ids fit the model; else None, with a warning."""
    if vocab_size < GPT2_VOCAB_SIZE:
        warn(
            f"vocab_size {vocab_size} is smaller than GPT-2's {GPT2_VOCAB_SIZE} tokens; the output has no tokenizer."
        )
        return None
    try:
        return load_tokenizer()
    except (OSError, ValueError) as e:
        warn(
            f"GPT-2's tokenizer could not be loaded ({one_line(e, 200)}); the output has no tokenizer. "
            "Save one there with modeling_gpt_scratch.tokenization.load_tokenizer().save_pretrained(output)."
        )
        return None


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    config: str,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Convert the book checkpoint `input` (.pth) built with `config` (a preset name or a JSON file)
    into a model folder `output`; returns `output`. Raises `CLIError` for bad input, leaving no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    book, label = read_config(str(config))
    path = Path(input).expanduser()
    refuse_to_replace_input(output, path, "the folder of the input")
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        sd = book_state_dict(load_checkpoint(path), path)
        model_class, model_config, state_dict = convert_state_dict(sd, book, label, str(path))
        del sd
        model = model_from_state_dict(
            model_class, model_config, state_dict, torch_dtype, desc=f"reading {path.name}"
        )
        del state_dict
        tok = pick_tokenizer(model_config.vocab_size)
        save_folder(tmp, model, tok, max_shard_size)
    return Path(output)
