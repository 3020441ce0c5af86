"""Convert a Hugging Face GPT-2 checkpoint (`GPT2LMHeadModel`) into this project's model.

    python conversion/convert_hf_gpt2.py --input openai-community/gpt2 --output out/gpt2-scratch
    python conversion/convert_hf_gpt2.py --input path/to/gpt2-folder --output out/x --dtype bfloat16

The input is a folder (or a Hub id, fetched with `huggingface_hub.snapshot_download`) holding
`config.json` and the weights: `model.safetensors`, sharded safetensors with
`model.safetensors.index.json`, or `pytorch_model.bin` (read with `weights_only=True`). The output
folder holds `GPTScratchForCausalLM` weights as safetensors (sharded above `--max_shard_size`), its
config, the code files, and the tokenizer, so that both
`AutoModelForCausalLM.from_pretrained(output)` (with this package installed) and
`AutoModelForCausalLM.from_pretrained(output, trust_remote_code=True)` load it.

The tokenizer is the input's own when it has one, else GPT-2's (`openai-community/gpt2`), or the
one named by `--tokenizer`. A tokenizer with more tokens than the model's `vocab_size` would make
ids the model cannot embed: it is left out with a warning (an error when named by `--tokenizer`).

The output is written to a temporary folder beside `--output` and moved into place at the end.
Bad input stops with one `error: ...` line naming the file or tensor, and leaves no output.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch

try:
    import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_gpt_scratch import GPTScratchForCausalLM
from modeling_gpt_scratch.conversion import (
    config_from_gpt2,
    gpt2_to_scratch_state_dict,
    scratch_to_gpt2_state_dict,
)
from modeling_gpt_scratch.convert_utils import (
    ConversionError,
    add_hub_arguments,
    atomic_output_dir,
    check_hub_arguments,
    one_line,
    parse_dtype,
    parse_shard_size,
    push_output,
    run_cli,
)
from modeling_gpt_scratch.hub import hub_id_or_none
from modeling_gpt_scratch.tokenization import GPT2_HUB_ID, GPT2_VOCAB_SIZE, load_tokenizer

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
# Buffers some GPT-2 checkpoints carry (the causal mask): recomputed by every model, not weights.
IGNORED_TENSOR = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- input


def resolve_input(input: str, revision: str | None = None) -> tuple[Path, str | None]:
    """The local folder for `input` (the folder itself, or a Hub id's snapshot) and the Hub id, if any."""
    path = Path(input).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise ConversionError(f"input {input} is a file; expected a folder with config.json and weights.")
    if not HUB_ID.match(input) or input.startswith("."):
        raise ConversionError(f"input folder {input} does not exist.")
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
        raise ConversionError(
            f"input {input} is not a folder, and fetching it from the Hugging Face Hub failed: {one_line(e)}"
        ) from e
    return folder, input


def read_gpt2_config(folder: Path):
    """The `GPT2Config` in `folder/config.json`, checked to be GPT-2's."""
    from transformers import GPT2Config

    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} not found: a GPT-2 checkpoint folder needs its config.json.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON: {one_line(e)}") from e
    if not isinstance(raw, dict) or raw.get("model_type") != "gpt2":
        found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ConversionError(
            f"{path} has model_type {found!r}; expected 'gpt2' (a GPT2LMHeadModel checkpoint)."
        )
    try:
        return GPT2Config.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{path}: {one_line(e)}") from e


def find_weights(folder: Path, hub_id: str | None = None) -> Path:
    """The checkpoint's weights file (or shard index), in the order of `WEIGHT_FILES`."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    where = f"Hub model {hub_id} ({folder})" if hub_id else str(folder)
    hint = ""
    if hub_id and os.environ.get("HF_HUB_OFFLINE"):
        hint = "; HF_HUB_OFFLINE is set, so only files already in the Hub cache can be used"
    raise ConversionError(f"no weights file in {where}: expected one of {', '.join(WEIGHT_FILES)}{hint}.")


def _load_file(path: Path, index: Path | None = None) -> dict:
    """The tensors of one safetensors or PyTorch file (a shard listed in `index`)."""
    if not path.is_file():
        listed = f" (listed in {index.name})" if index else ""
        raise ConversionError(f"weights file {path}{listed} not found.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as e:
            raise ConversionError(
                f"{path} is not a valid safetensors file (truncated or corrupt?): {one_line(e)}"
            ) from e
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        # torch's message is long; its useful part follows "WeightsUnpickler error:" when there is one
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
        reason = found.group(1) if found else str(e).split("\n")[0]
        reason = one_line(f"{type(e).__name__}: {reason}" if reason else type(e).__name__, limit=200)
        raise ConversionError(
            f"{path} cannot be read as a PyTorch checkpoint with weights_only=True (corrupt, truncated, or holding "
            f"objects other than tensors): {reason}"
        ) from e
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ConversionError(f"{path} does not hold a state dict (a dict of tensor names to tensors).")
    return tensors


def load_weights(path: Path) -> dict:
    """All tensors of a checkpoint: one file, or the shards listed by an index file."""
    if not path.name.endswith(".index.json"):
        return _load_file(path)
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ConversionError(
            f"{path} is not a shard index (JSON with a `weight_map` object): {one_line(e)}"
        ) from e
    tensors = {}
    for shard in shards:
        tensors.update(_load_file(path.parent / shard, index=path))
    missing = [name for name in weight_map if name not in tensors]
    if missing:
        raise ConversionError(
            f"{path} lists tensor `{missing[0]}` in {weight_map[missing[0]]}, which does not hold it."
        )
    return tensors


# ------------------------------------------------------------------------------------- convert


def convert_state_dict(gpt2_sd: dict, config, source: Path) -> dict:
    """Our state dict from GPT-2's, with every GPT-2 tensor accounted for."""
    sd = {k: v for k, v in gpt2_sd.items() if not IGNORED_TENSOR.match(k)}
    bare = {k.removeprefix("transformer."): v for k, v in sd.items()}
    head = bare.get("lm_head.weight")
    if not config.tie_word_embeddings and head is None:
        raise ConversionError(
            f"{source} has no tensor `lm_head.weight`, but config.json sets tie_word_embeddings=false "
            f"(expected shape [{config.vocab_size}, {config.emb_dim}])."
        )
    try:
        ours = gpt2_to_scratch_state_dict(sd, config)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{source}: {e.args[0] if e.args else e}") from e
    if config.tie_word_embeddings and head is not None and not torch.equal(head, bare["wte.weight"]):
        raise ConversionError(
            f"{source}: `lm_head.weight` differs from `wte.weight`, but config.json ties them "
            "(tie_word_embeddings true or unset); set tie_word_embeddings=false to keep a separate head."
        )
    used = {k.removeprefix("transformer.") for k in scratch_to_gpt2_state_dict(ours, config)}
    unexpected = sorted(k for k in bare if k not in used)
    if unexpected:
        raise ConversionError(
            f"{source} has tensor `{unexpected[0]}` ({len(unexpected)} unexpected in all), which a GPT2LMHeadModel "
            f"with config.json's n_layer={config.n_layers} does not have."
        )
    return ours


def build_model(config, state_dict: dict, dtype: torch.dtype) -> GPTScratchForCausalLM:
    """The model holding `state_dict` in `dtype`, built without a throw-away random initialization."""
    state_dict = {k: v.to(dtype) for k, v in state_dict.items()}
    with torch.device("meta"):
        model = GPTScratchForCausalLM(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()  # `assign` gives the tied head its own Parameter; share it again
    model.config.dtype = dtype
    return model.eval()


def pick_tokenizer(folder: Path, vocab_size: int, tokenizer: str | None):
    """The tokenizer to save next to the model, or None (with a warning) when none fits."""
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
            raise ConversionError(f"cannot load the tokenizer from {source}: {one_line(e)}") from e
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
    if len(tok) > vocab_size:
        message = (
            f"the tokenizer from {source} has {len(tok)} tokens but the model's vocab_size is {vocab_size}: "
            "its ids would fall outside the embedding"
        )
        if explicit:
            raise ConversionError(message + ".")
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
        raise ConversionError(f"{folder / 'generation_config.json'}: {one_line(e)}") from e
    if gen.pad_token_id is None:
        gen.pad_token_id = model.config.pad_token_id
    return gen


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    tokenizer: str | None = None,
    revision: str | None = None,
) -> Path:
    """Convert the GPT-2 checkpoint `input` (folder or Hub id) into a `GPTScratchForCausalLM`
    folder `output`; returns `output`. Raises `ConversionError` for bad input, leaving no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        folder, hub_id = resolve_input(str(input), revision=revision)
        if Path(output).resolve() in (folder.resolve(), *folder.resolve().parents):
            raise ConversionError(f"output {output} would replace the input folder {folder}; choose another.")
        gpt2_config = read_gpt2_config(folder)
        try:
            config = config_from_gpt2(gpt2_config)
        except ValueError as e:
            raise ConversionError(f"{folder / 'config.json'}: {one_line(e)}") from e
        weights = find_weights(folder, hub_id=hub_id)
        state_dict = convert_state_dict(load_weights(weights), config, weights)
        model = build_model(config, state_dict, torch_dtype)
        del state_dict
        model.generation_config = generation_config(folder, model)
        tok = pick_tokenizer(folder, config.vocab_size, tokenizer)
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        if tok is not None:
            tok.save_pretrained(tmp)
    return Path(output)


# -------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--input", required=True, help="GPT-2 folder (config.json + weights) or Hub id")
    parser.add_argument("--output", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or Hub id (default: the input's, else GPT-2's)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision of --input")
    add_hub_arguments(parser)
    args = parser.parse_args(argv)
    check_hub_arguments(args)

    from transformers.utils import logging

    # One line per problem, ours, without the library's warnings and progress bars (restored after,
    # for callers that run main() in their own process).
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        out = convert(
            args.input,
            args.output,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            tokenizer=args.tokenizer,
            revision=args.revision,
        )
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    files = sorted(p.name for p in out.iterdir())
    print(f"Converted {args.input} -> {out} ({args.dtype}): {', '.join(files)}")
    if args.push_to_hub:
        push_output(args, out, base_model=hub_id_or_none(args.input))


if __name__ == "__main__":
    sys.exit(run_cli(main))
