"""Reading a Hugging Face model folder, or a Hub id fetched into the cache: its config, its weights
(safetensors, sharded safetensors, or a PyTorch `.bin`, read with `weights_only=True`), its
tokenizer and generation config. Used by `hf_gpt2` (GPT-2 -> ours) and `export_gpt2` (ours -> GPT-2).
"""

import json
import os
import re
from pathlib import Path

import torch

from ..cli import CLIError, one_line
from ..tokenization import GPT2_HUB_ID, GPT2_VOCAB_SIZE, load_tokenizer
from .common import load_torch_file, read_json_object, warn

# Weight files in the order they are looked for: safetensors first, then PyTorch pickles.
WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
HUB_CONFIG_FILES = [
    "config.json",
    "generation_config.json",
    *TOKENIZER_FILES,
    "merges.txt",
    "special_tokens_map.json",
]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_input(input: str, revision: str | None = None) -> tuple[Path, str | None]:
    """The local folder for `input` (the folder itself, or a Hub id's snapshot) and the Hub id, if any."""
    path = Path(input).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise CLIError(f"input {input} is a file; expected a folder with config.json and weights.")
    if not HUB_ID.match(input) or input.startswith("."):
        raise CLIError(f"input folder {input} does not exist.")
    from huggingface_hub import snapshot_download

    try:  # config and tokenizer with safetensors weights; a second call for .bin weights only if needed
        folder = Path(
            snapshot_download(
                input,
                revision=revision,
                allow_patterns=[*HUB_CONFIG_FILES, "model*.safetensors", "model.safetensors.index.json"],
            )
        )
        if not any(folder.glob("*.safetensors")) and not os.environ.get("HF_HUB_OFFLINE"):
            folder = Path(
                snapshot_download(
                    input,
                    revision=revision,
                    allow_patterns=[*HUB_CONFIG_FILES, "pytorch_model*.bin", "pytorch_model.bin.index.json"],
                )
            )
    except Exception as e:  # huggingface_hub raises many kinds: not found, offline, gated, network
        raise CLIError(
            f"input {input} is not a folder, and fetching it from the Hugging Face Hub failed: {one_line(e)}"
        ) from e
    return folder, input


def read_config(folder: Path, config_class, holds: str):
    """`config_class` from `folder/config.json`, whose model_type must be the class's; `holds` says
    what such a folder is, for the message."""
    path = folder / "config.json"
    if not path.is_file():
        raise CLIError(f"{path} not found: a model folder needs its config.json.")
    raw = read_json_object(path, f"a config with model_type {config_class.model_type!r} ({holds})")
    if raw.get("model_type") != config_class.model_type:
        found = raw.get("model_type")
        raise CLIError(f"{path} has model_type {found!r}; expected {config_class.model_type!r} ({holds}).")
    try:
        return config_class.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CLIError(f"{path}: {one_line(e)}") from e


def find_weights(folder: Path, hub_id: str | None = None) -> Path:
    """The checkpoint's weights file (or shard index), in the order of `WEIGHT_FILES`."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    where = f"Hub model {hub_id} ({folder})" if hub_id else str(folder)
    hint = ""
    if hub_id and os.environ.get("HF_HUB_OFFLINE"):
        hint = "; HF_HUB_OFFLINE is set, so only files already in the Hub cache can be used"
    raise CLIError(f"no weights file in {where}: expected one of {', '.join(WEIGHT_FILES)}{hint}.")


def _load_file(path: Path, index: Path | None = None) -> dict:
    """The tensors of one safetensors or PyTorch file (a shard listed in `index`)."""
    if not path.is_file():
        listed = f" (listed in {index.name})" if index else ""
        raise CLIError(f"weights file {path}{listed} not found.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as e:
            raise CLIError(
                f"{path} is not a valid safetensors file (truncated or corrupt?): {one_line(e)}"
            ) from e
    tensors = load_torch_file(path)
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise CLIError(f"{path} does not hold a state dict (a dict of tensor names to tensors).")
    return tensors


def load_weights(path: Path) -> dict:
    """All tensors of a checkpoint: one file, or the shards listed by an index file."""
    if not path.name.endswith(".index.json"):
        return _load_file(path)
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CLIError(f"{path} is not a shard index (JSON with a `weight_map` object): {one_line(e)}") from e
    tensors = {}
    for shard in shards:
        tensors.update(_load_file(path.parent / shard, index=path))
    missing = [name for name in weight_map if name not in tensors]
    if missing:
        raise CLIError(
            f"{path} lists tensor `{missing[0]}` in {weight_map[missing[0]]}, which does not hold it."
        )
    return tensors


def pick_tokenizer(folder: Path, vocab_size: int, tokenizer: str | None):
    """The tokenizer to save next to the model: `tokenizer` when given, else the folder's own, else
    GPT-2's; None (with a warning) when its ids would not fit `vocab_size`."""
    from transformers import AutoTokenizer

    explicit = tokenizer is not None
    if explicit:
        source = tokenizer
    elif any((folder / name).is_file() for name in TOKENIZER_FILES):
        source = str(folder)
    elif vocab_size < GPT2_VOCAB_SIZE:
        warn(
            f"the input has no tokenizer and GPT-2's ({GPT2_VOCAB_SIZE} tokens) does not fit the model's "
            f"vocab_size {vocab_size}; the output has no tokenizer (pass --tokenizer to choose one)."
        )
        return None
    else:
        source = GPT2_HUB_ID
    try:
        tok = load_tokenizer(source)  # GPT-2's BPE: pads with <|endoftext|>, decodes like tiktoken
    except (OSError, ValueError):  # not GPT-2's: take it as it is
        try:
            tok = AutoTokenizer.from_pretrained(source)
        except Exception as e:
            raise CLIError(f"cannot load the tokenizer from {source}: {one_line(e)}") from e
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
    if len(tok) > vocab_size:
        message = (
            f"the tokenizer from {source} has {len(tok)} tokens but the model's vocab_size is {vocab_size}: "
            "its ids would fall outside the embedding"
        )
        if explicit:
            raise CLIError(message + ".")
        warn(message + "; the output has no tokenizer (pass --tokenizer to choose one).")
        return None
    return tok


def generation_config(folder: Path, model):
    """The input's generation_config.json if it has one (padding with the model's pad id), else the model's."""
    from transformers import GenerationConfig

    if not (folder / "generation_config.json").is_file():
        return model.generation_config
    try:
        gen = GenerationConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as e:
        raise CLIError(f"{folder / 'generation_config.json'}: {one_line(e)}") from e
    if gen.pad_token_id is None:
        gen.pad_token_id = model.config.pad_token_id
    return gen


def add_arguments(parser) -> None:
    """The options of a converter whose input is a folder or Hub id: --tokenizer and --revision."""
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or Hub id (default: the input's, else GPT-2's)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision of --input")
