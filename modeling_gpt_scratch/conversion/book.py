"""A checkpoint of the book's `GPTModel` (a `.pth` file) -> this project's model.

The input is what chapters 5-7 of *Build a Large Language Model (From Scratch)* save:
`torch.save(model.state_dict(), "model.pth")`, or the dictionary
`{"model_state_dict": ..., "optimizer_state_dict": ...}`; keys may carry the `_orig_mod.` prefix of a
`torch.compile`d model (or `module.` from DDP). It is read with `torch.load(..., weights_only=True)`,
which never runs code from the file. The `trf_blocks.{i}.att.mask` buffers are checked (the causal
mask of the context length) and dropped: the model builds its mask itself.

The configuration is read from the checkpoint: vocab_size and emb_dim from `tok_emb`, context_length
from `pos_emb`, n_layers from the blocks, qkv_bias from whether `W_query` has a bias, and the head
(language model or chapter-6 classifier) from `out_head`. Two values are not stored in it: n_heads
comes from the book's table by width (768: 12, 1024: 16, 1280: 20, 1600: 25) and drop_rate is the
book's 0.1. `config` (a preset name, or a JSON file with some or all of the book's config keys)
overrides any of them, and must be given for n_heads at other widths; a value the checkpoint
contradicts is an error that names the tensor. What was read and what was assumed is printed.

A language model (an `out_head` of vocab_size rows) becomes a `GPTScratchForCausalLM` whose head
stays its own tensor, as in the book, even when it equals the token embedding (right after
`load_weights_into_gpt`: chapter 7 fine-tunes the two apart); `tie_word_embeddings=True` ties them
when they are equal. A chapter-6 classifier (an `out_head` of num_classes rows, `Linear(emb_dim,
num_classes)`) becomes a `GPTScratchForSequenceClassification` that reads as the book's
`classify_review` does: the last position of the text right-padded with <|endoftext|> to 120
tokens, the SMS data's `max_length` (config `classifier_pooling="last_position"`,
`classifier_padded_length`; another length with `classifier_padded_length`).

The output folder holds the weights as safetensors (sharded above `max_shard_size`), the config, the
code files, and GPT-2's tokenizer (the book's tiktoken encoding) when vocab_size is at least 50257.
"""

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
    read_json_object,
    refuse_to_replace_input,
    save_folder,
    warn,
)

BOOK_CONFIG_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
# What a checkpoint does not store: the heads of the book's GPT-2 sizes (chapter 5), and its dropout.
BOOK_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 20, 1600: 25}
BOOK_DROP_RATE = 0.1
# Chapter 6 pads every SMS message to the longest training message: 120 tokens.
BOOK_CLASSIFIER_PADDED_LENGTH = 120
# Prefixes that wrappers add to every key: torch.compile's OptimizedModule, DDP's `module`.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
MASK = re.compile(r"^trf_blocks\.(\d+)\.att\.mask$")
BLOCK = re.compile(r"^(?:model\.)?trf_blocks\.(\d+)\.")


# ---------------------------------------------------------------------------------------- config


def read_config(config: str) -> tuple[dict, str]:
    """The book's config values named by `config` (a preset, or a JSON file with some or all of the
    book's keys), and a label for messages. Presets may carry `tie_word_embeddings`: not a book key."""
    path = Path(config).expanduser()
    if path.is_file() or path.suffix == ".json":
        if not path.is_file():
            raise CLIError(f"config file {config} not found.")
        raw = read_json_object(
            path, f"the book's config object with keys among {', '.join(BOOK_CONFIG_KEYS)}"
        )
        unknown = [k for k in raw if k not in BOOK_CONFIG_KEYS]
        if unknown:
            raise CLIError(
                f"config file {config} has unknown key {unknown[0]!r}; expected some or all of the book's config "
                f"keys {', '.join(BOOK_CONFIG_KEYS)} (like GPT_CONFIG_124M)."
            )
        if "qkv_bias" in raw and not isinstance(raw["qkv_bias"], bool):
            raise CLIError(f"config file {config}: qkv_bias is {raw['qkv_bias']!r}; expected true or false.")
        return raw, f"config file {config}"
    if config in PRESETS:
        return {k: PRESETS[config][k] for k in BOOK_CONFIG_KEYS}, f"preset {config}"
    raise CLIError(
        f"--config {config!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file with the book's config."
    )


def infer_config(sd: dict, given: dict, label: str, where: str) -> tuple[dict, list[str]]:
    """The book's config dictionary for the state dict `sd`: what `given` (from `label`) sets, the
    rest read from the tensors or, for what they do not hold, the book's values. Also sentences
    saying where each value came from."""
    found, missing = {}, []
    embedding, positions = sd.get("tok_emb.weight"), sd.get("pos_emb.weight")
    if embedding is not None and embedding.ndim == 2:
        found["vocab_size"], found["emb_dim"] = embedding.shape
    else:
        missing += ["vocab_size", "emb_dim"]
    if positions is not None and positions.ndim == 2:
        found["context_length"] = positions.shape[0]
    else:
        missing.append("context_length")
    layers = {int(m.group(1)) for k in sd if (m := BLOCK.match(k))}
    found["n_layers"] = max(layers) + 1 if layers else 0
    found["qkv_bias"] = "trf_blocks.0.att.W_query.bias" in sd
    found = {k: int(v) if k != "qkv_bias" else v for k, v in found.items() if k not in given}
    needed = [k for k in missing if k not in given]
    if needed:
        tensor = "tok_emb.weight" if "emb_dim" in needed or "vocab_size" in needed else "pos_emb.weight"
        raise CLIError(
            f"{where}: tensor `{tensor}` is missing or not a matrix, so {' and '.join(needed)} cannot be read from "
            "the checkpoint; expected a state dict of the book's GPTModel."
        )
    book = {**found, **given}
    notes = []
    if found:
        notes.append(f"read from the checkpoint: {', '.join(f'{k}={v}' for k, v in found.items())}")
    if given:
        notes.append(f"from {label}: {', '.join(f'{k}={v}' for k, v in given.items())}")
    if "n_heads" not in given:
        width = book["emb_dim"]
        if width not in BOOK_HEADS_BY_WIDTH:
            sizes = ", ".join(f"{d}: {h}" for d, h in BOOK_HEADS_BY_WIDTH.items())
            raise CLIError(
                f"{where}: emb_dim {width} is not one of the book's GPT-2 sizes (emb_dim: n_heads {sizes}), so the "
                'number of attention heads cannot be inferred: pass --config with a JSON file like {"n_heads": 4}.'
            )
        book["n_heads"] = BOOK_HEADS_BY_WIDTH[width]
        notes.append(
            f"n_heads={book['n_heads']}: the book's for emb_dim {width} (a checkpoint does not store it)"
        )
    if "drop_rate" not in given:
        book["drop_rate"] = BOOK_DROP_RATE
        notes.append(f"drop_rate={BOOK_DROP_RATE}: the book's (a checkpoint does not store it)")
    return book, notes


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
                f"of context_length {n}{found}: use a config with that context_length, or none (it is read from the checkpoint)."
            )
        if causal is None:
            causal = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
        if not torch.equal(mask.bool(), causal):
            raise CLIError(
                f"{where}: buffer `{name}` is not the causal mask (ones above the diagonal) that the book's "
                "MultiHeadAttention registers; this converter handles only that model."
            )


def head_config(sd: dict, book: dict, label: str, where: str, tie: bool, padded_length: int | None):
    """(model class, config, sentence) for the checkpoint's head: a language model's head kept
    separate unless `tie` (allowed only when it equals the embedding), or a chapter-6 classifier read
    at the last position of inputs padded to `padded_length` (default: the book's 120, at most the
    context length)."""
    head, embedding = sd.get("out_head.weight"), sd.get("tok_emb.weight")
    vocab = book["vocab_size"]
    rows = head.shape[0] if head is not None and head.ndim == 2 else vocab
    if rows == vocab:  # a language model
        if "out_head.bias" in sd:
            raise CLIError(
                f"{where}: tensor `out_head.bias` is unexpected: the book's GPTModel has a language-model head "
                f"without bias ({vocab} rows = vocab_size), and a classifier head has num_classes rows."
            )
        equal = head is not None and embedding is not None and torch.equal(head, embedding)
        if tie and not equal:
            raise CLIError(
                f"{where}: --tie_word_embeddings shares one matrix between the head and the token embedding, but "
                "`out_head.weight` differs from `tok_emb.weight` (a trained head); convert without it."
            )
        config = make_config(book, label, tie_word_embeddings=tie)
        if tie:
            note = "head: tied to the token embedding (--tie_word_embeddings)"
        else:
            same = " (it equals tok_emb; --tie_word_embeddings would share one matrix)" if equal else ""
            note = f"head: its own tensor, as in the book (tie_word_embeddings=false){same}"
        return GPTScratchForCausalLM, config, note
    if tie:
        raise CLIError(
            f"{where}: --tie_word_embeddings is for a language model, but this is a {rows}-class classifier."
        )
    context = book["context_length"]
    if padded_length is not None and not 0 < padded_length <= context:
        raise CLIError(
            f"--classifier_padded_length {padded_length} must be between 1 and the context_length {context}."
        )
    length = padded_length or min(BOOK_CLASSIFIER_PADDED_LENGTH, context)
    pooling = dict(num_labels=rows, tie_word_embeddings=False)
    if vocab > EOT_ID:  # the book pads with <|endoftext|>; a vocabulary without it keeps our pooling
        pooling.update(classifier_pooling="last_position", classifier_padded_length=length)
        note = (
            f"head: a chapter 6 classifier of {rows} classes, read as the book does at the last position of the "
            f"text padded to {length} tokens (classifier_pooling=last_position; --classifier_padded_length)"
        )
    else:
        note = f"head: a classifier of {rows} classes, read at the last real token (no <|endoftext|> to pad with)"
    return GPTScratchForSequenceClassification, make_config(book, label, **pooling), note


def convert_state_dict(sd: dict, book: dict, label: str, where: str, tie: bool = False, padded_length=None):
    """(model class, config, our state dict, sentence about the head) for the book's state dict `sd`."""
    model_class, config, note = head_config(sd, book, label, where, tie, padded_length)
    classifier = model_class is GPTScratchForSequenceClassification
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
        ours["score.bias"] = torch.zeros(config.num_labels, dtype=weights["out_head.weight"].dtype)
    if config.tie_word_embeddings:
        ours["out_head.weight"] = ours["model.tok_emb.weight"]
    return model_class, config, ours, note


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
    config: str | os.PathLike | None = None,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    tie_word_embeddings: bool = False,
    classifier_padded_length: int | None = None,
) -> Path:
    """Convert the book checkpoint `input` (.pth) into a model folder `output`, with the configuration
    read from the checkpoint (`config`, a preset name or a JSON file, overrides it); returns `output`
    and prints where each configuration value came from. Raises `CLIError` for bad input, leaving
    no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    given, label = read_config(str(config)) if config is not None else ({}, "the checkpoint")
    path = Path(input).expanduser()
    refuse_to_replace_input(output, path, "the folder of the input")
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        sd = book_state_dict(load_checkpoint(path), path)
        book, notes = infer_config(sd, given, label, str(path))
        model_class, model_config, state_dict, head = convert_state_dict(
            sd, book, label, str(path), tie=tie_word_embeddings, padded_length=classifier_padded_length
        )
        del sd
        model = model_from_state_dict(
            model_class, model_config, state_dict, torch_dtype, desc=f"reading {path.name}"
        )
        del state_dict
        tok = pick_tokenizer(model_config.vocab_size)
        save_folder(tmp, model, tok, max_shard_size)
    print(f"{path.name}: {'; '.join(notes)}.")
    print(f"{path.name}: {head}.")
    return Path(output)
