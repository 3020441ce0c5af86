"""One of OpenAI's original GPT-2 releases (TensorFlow checkpoints) -> this project's `GPTScratchForCausalLM`.

The input is the folder OpenAI published for 124M, 355M, 774M or 1558M (what `download_model.py`
of openai/gpt-2 and the book's `gpt_download.py` fetch): `hparams.json`, `model.ckpt.index`,
`model.ckpt.data-00000-of-00001`, `encoder.json`, `vocab.bpe`, and `checkpoint` and
`model.ckpt.meta`, which are not needed (the checkpoint is the one `checkpoint` names, else
`model.ckpt`). Variables are named as OpenAI's code names them: `model/wte`, `model/wpe`,
`model/h{i}/ln_1/{g,b}`, `model/h{i}/attn/c_attn/{w,b}` (w is [1, n_embd, 3 n_embd]),
`attn/c_proj`, `ln_2`, `mlp/c_fc`, `mlp/c_proj`, `model/ln_f/{g,b}`.

The checkpoint is read by `tf_checkpoint` (beside this module), a small reader of TensorFlow's
checkpoint format that needs no TensorFlow: the data file is memory-mapped and each tensor is read
once, converted, and its pages handed back, so memory peaks near one copy of the weights (in the
output dtype) plus the largest tensor. Every tensor's crc32c is checked when `google-crc32c` is
installed (`pip install 'gpt-scratch[tf-checkpoint]'`); without it, only sizes are checked.

The output folder holds `GPTScratchForCausalLM` weights as safetensors (sharded above
`max_shard_size`), the config (from hparams.json: Q/K/V bias, no dropout, head tied to the token
embedding, layer-norm epsilon 1e-5, like the gpt2-* presets), the code files, and the tokenizer
built from the release's own encoder.json and vocab.bpe, so that
`AutoModelForCausalLM.from_pretrained(output)` and `AutoTokenizer.from_pretrained(output)` load it.
"""

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..cli import CLIError, atomic_output_dir, one_line
from ..configuration_gpt_scratch import GPTScratchConfig
from ..modeling_gpt_scratch import GPTScratchForCausalLM
from ..tokenization import GPT2_VOCAB_SIZE, tokenizer_from_openai_files
from .common import (
    check_tensors,
    model_from_state_dict,
    parse_dtype,
    parse_shard_size,
    progress_bar,
    read_json_object,
    refuse_to_replace_input,
    save_folder,
    warn,
)
from .gpt2_mapping import BLOCK_MAP_FROM_GPT2
from .tf_checkpoint import CheckpointError, TFCheckpoint, latest_checkpoint

HPARAMS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
HPARAMS_EXAMPLE = '{"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}'
RELEASE_FILES = (
    "checkpoint",
    "hparams.json",
    "model.ckpt.index",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.meta",
    "encoder.json",
    "vocab.bpe",
)
TOKENIZER_FILES = ("encoder.json", "vocab.bpe")
FLOAT_DTYPES = ("float16", "float32", "float64")

# OpenAI's names (after `model/`; blocks `h{i}/...`) -> (GPT-2's name in transformers'
# GPT2LMHeadModel without `transformer.`, shape). GPT-2's names map to ours as in
# `modeling_gpt_scratch.conversion`. Kernels `w` are [1, in, out]: squeezed, GPT-2's Conv1D [in, out].
TOP_LEVEL = {
    "wte": ("wte.weight", lambda hp: (hp["n_vocab"], hp["n_embd"])),
    "wpe": ("wpe.weight", lambda hp: (hp["n_ctx"], hp["n_embd"])),
    "ln_f/g": ("ln_f.weight", lambda hp: (hp["n_embd"],)),
    "ln_f/b": ("ln_f.bias", lambda hp: (hp["n_embd"],)),
}
BLOCK = {
    "ln_1/g": ("ln_1.weight", lambda d: (d,)),
    "ln_1/b": ("ln_1.bias", lambda d: (d,)),
    "attn/c_attn/w": ("attn.c_attn.weight", lambda d: (1, d, 3 * d)),
    "attn/c_attn/b": ("attn.c_attn.bias", lambda d: (3 * d,)),
    "attn/c_proj/w": ("attn.c_proj.weight", lambda d: (1, d, d)),
    "attn/c_proj/b": ("attn.c_proj.bias", lambda d: (d,)),
    "ln_2/g": ("ln_2.weight", lambda d: (d,)),
    "ln_2/b": ("ln_2.bias", lambda d: (d,)),
    "mlp/c_fc/w": ("mlp.c_fc.weight", lambda d: (1, d, 4 * d)),
    "mlp/c_fc/b": ("mlp.c_fc.bias", lambda d: (4 * d,)),
    "mlp/c_proj/w": ("mlp.c_proj.weight", lambda d: (1, 4 * d, d)),
    "mlp/c_proj/b": ("mlp.c_proj.bias", lambda d: (d,)),
}
OURS_TOP_LEVEL = {
    "wte.weight": "model.tok_emb.weight",
    "wpe.weight": "model.pos_emb.weight",
    "ln_f.weight": "model.final_norm.scale",
    "ln_f.bias": "model.final_norm.shift",
}
QKV = ("W_query", "W_key", "W_value")


# ---------------------------------------------------------------------------------------- input


def read_hparams(folder: Path) -> dict:
    """OpenAI's `hparams.json`, checked to hold the five positive integers GPT-2's shape needs."""
    path = folder / "hparams.json"
    if not path.is_file():
        raise CLIError(
            f"{path} not found: OpenAI's GPT-2 folder has it beside the checkpoint ({HPARAMS_EXAMPLE})."
        )
    hparams = read_json_object(path, f"an object like {HPARAMS_EXAMPLE}")
    for key in HPARAMS:
        value = hparams.get(key)
        if key not in hparams:
            raise CLIError(f"{path} has no `{key}`; expected {', '.join(HPARAMS)}, like {HPARAMS_EXAMPLE}.")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CLIError(f"{path}: `{key}` is {value!r}; expected a positive integer.")
    return hparams


def config_from_hparams(hparams: dict, path: Path) -> GPTScratchConfig:
    """Our config for OpenAI's hparams: the gpt2-* presets' settings (Q/K/V bias, no dropout, tied
    head, epsilon 1e-5) with the release's sizes. `<|endoftext|>`, GPT-2's last token, is the BOS,
    EOS and padding id."""
    eot = hparams["n_vocab"] - 1
    try:
        return GPTScratchConfig.from_preset(
            "gpt2-small",
            vocab_size=hparams["n_vocab"],
            context_length=hparams["n_ctx"],
            emb_dim=hparams["n_embd"],
            n_heads=hparams["n_head"],
            n_layers=hparams["n_layer"],
            layer_norm_epsilon=1e-5,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
        )
    except ValueError as e:
        raise CLIError(f"{path}: {one_line(e)}") from e


def describe(hparams: dict) -> str:
    return ", ".join(f"{key}={hparams[key]}" for key in HPARAMS)


def expected_tensors(hparams: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """OpenAI's tensor name -> (shape, GPT-2's name) for a release of these hparams."""
    expected = {f"model/{name}": (shape(hparams), gpt2) for name, (gpt2, shape) in TOP_LEVEL.items()}
    for i in range(hparams["n_layer"]):
        for name, (gpt2, shape) in BLOCK.items():
            expected[f"model/h{i}/{name}"] = (shape(hparams["n_embd"]), f"h.{i}.{gpt2}")
    return expected


def find_checkpoint(folder: Path) -> Path:
    """The checkpoint prefix: the one the `checkpoint` file names, else `model.ckpt`."""
    if not (folder / "checkpoint").is_file() and not (folder / "model.ckpt.index").is_file():
        raise CLIError(
            f"{folder / 'model.ckpt.index'} not found: expected OpenAI's GPT-2 release files in {folder} "
            f"({', '.join(RELEASE_FILES)})."
        )
    if not (folder / "checkpoint").is_file():
        return folder / "model.ckpt"
    try:
        return latest_checkpoint(folder)
    except CheckpointError as e:
        raise CLIError(str(e)) from e


def open_checkpoint(prefix: Path, hparams: dict, hparams_path: Path) -> TFCheckpoint:
    """The checkpoint, with every tensor's name, shape and dtype checked against hparams.json, and
    its data files checked to hold all their bytes."""
    try:
        ckpt = TFCheckpoint(prefix)
    except CheckpointError as e:
        raise CLIError(str(e)) from e
    if hparams["n_layer"] > len(
        ckpt.tensors
    ):  # before sizing anything by hparams.json (it may say 300000000)
        blocks = {name.split("/")[1] for name in ckpt.tensors if re.fullmatch(r"model/h\d+/.+", name)}
        ckpt.close()
        raise CLIError(
            f"{hparams_path.name} says n_layer {hparams['n_layer']}, but {ckpt.index_path} holds only "
            f"{len(ckpt.tensors)} tensors ({len(blocks)} blocks): the files do not belong together."
        )
    expected = expected_tensors(hparams)

    def hint(kind: str, name: str) -> str:
        if kind == "shape":
            return f"the shapes follow from {hparams_path.name} ({describe(hparams)})."
        last = hparams["n_layer"] - 1
        return (
            f"{hparams_path.name} ({describe(hparams)}) makes OpenAI's GPT-2 tensors model/wte, model/wpe, "
            f"model/h0/... to model/h{last}/... and model/ln_f/{{g,b}}."
        )

    try:
        check_tensors(
            ckpt.tensors, {k: shape for k, (shape, _) in expected.items()}, ckpt.index_path, hint=hint
        )
        for info in ckpt.tensors.values():
            if info.dtype not in FLOAT_DTYPES:
                raise CLIError(
                    f"{ckpt.index_path}: tensor `{info.name}` has dtype {info.dtype}; expected float32 "
                    "(OpenAI's GPT-2 weights are float32)."
                )
        ckpt.check_data_files()
    except (CLIError, CheckpointError) as e:
        ckpt.close()
        raise CLIError(str(e)) from e
    return ckpt


def release_tokenizer(folder: Path, vocab_size: int):
    """GPT-2's tokenizer built from the release's encoder.json and vocab.bpe, or None when its ids
    would not fit the model's vocab_size."""
    encoder, merges = (folder / name for name in TOKENIZER_FILES)
    if vocab_size < GPT2_VOCAB_SIZE:
        return None
    try:
        return tokenizer_from_openai_files(str(encoder), str(merges))
    except json.JSONDecodeError as e:
        raise CLIError(f"{encoder} is not valid JSON: {one_line(e)}") from e
    except UnicodeDecodeError as e:
        raise CLIError(f"{encoder} or {merges} is not UTF-8 text: {one_line(e)}") from e
    except (ValueError, OSError) as e:  # their messages name the file
        raise CLIError(one_line(e)) from e
    except Exception as e:  # `tokenizers` raises a bare Exception for merges it cannot use
        raise CLIError(f"cannot build GPT-2's tokenizer from {encoder} and {merges}: {one_line(e)}") from e


# ------------------------------------------------------------------------------------- convert


def ours_from_openai(gpt2_name: str, array: np.ndarray, d: int) -> list[tuple[str, np.ndarray]]:
    """Our tensors (names and numpy views, no copies) from one OpenAI tensor, given GPT-2's name
    for it: kernels squeezed to Conv1D's [in, out] and transposed to nn.Linear's [out, in]; the
    fused Q/K/V kernel and bias split in three."""
    if gpt2_name in OURS_TOP_LEVEL:
        return [(OURS_TOP_LEVEL[gpt2_name], array)]
    layer, _, rest = gpt2_name.removeprefix("h.").partition(".")
    prefix = f"model.trf_blocks.{layer}."
    if array.ndim == 3:
        array = array[0]
    if rest == "attn.c_attn.weight":
        return [(f"{prefix}att.{q}.weight", array[:, k * d : (k + 1) * d].T) for k, q in enumerate(QKV)]
    if rest == "attn.c_attn.bias":
        return [(f"{prefix}att.{q}.bias", array[k * d : (k + 1) * d]) for k, q in enumerate(QKV)]
    ours, transpose = BLOCK_MAP_FROM_GPT2[rest]
    return [(prefix + ours, array.T if transpose else array)]


def owned_copy(view: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor of its own, in `dtype`, of a (possibly transposed) view of the mapped file."""
    with warnings.catch_warnings():  # torch warns that the view is read-only: it is only read here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(view)
    return source.to(dtype, copy=True, memory_format=torch.contiguous_format)


def convert_weights(ckpt: TFCheckpoint, hparams: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Our state dict in `dtype`, read tensor by tensor in file order; each tensor's file pages are
    handed back once it is converted, so memory holds the output and one tensor in flight."""
    expected = expected_tensors(hparams)
    d = hparams["n_embd"]
    state_dict = {}
    order = sorted(ckpt.tensors.values(), key=lambda info: (info.shard, info.offset))
    with progress_bar(ckpt.nbytes(), f"reading {ckpt.prefix.name}") as bar:
        for info in order:
            try:
                array = ckpt.read(info.name)  # a view of the mapped file; crc32c checked
            except CheckpointError as e:
                raise CLIError(str(e)) from e
            if not array.dtype.isnative:  # a big-endian checkpoint: torch reads native order only
                array = array.astype(array.dtype.newbyteorder("="))
            for name, view in ours_from_openai(expected[info.name][1], array, d):
                state_dict[name] = owned_copy(view, dtype)
            ckpt.release(info.name)
            bar.update(info.size)
    state_dict["out_head.weight"] = state_dict["model.tok_emb.weight"]  # OpenAI's head is wte
    return state_dict


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Convert OpenAI's GPT-2 folder `input` into a `GPTScratchForCausalLM` folder `output`;
    returns `output`. Raises `CLIError` for bad input, leaving no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    folder = Path(input).expanduser()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise CLIError(
            f"input folder {input} {what}; expected OpenAI's GPT-2 folder ({', '.join(RELEASE_FILES)})."
        )
    refuse_to_replace_input(output, folder)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        hparams = read_hparams(folder)
        config = config_from_hparams(hparams, folder / "hparams.json")
        for name in TOKENIZER_FILES:
            if not (folder / name).is_file():
                raise CLIError(
                    f"{folder / name} not found: OpenAI's GPT-2 folder has encoder.json and vocab.bpe, "
                    "from which the tokenizer is built."
                )
        with open_checkpoint(find_checkpoint(folder), hparams, folder / "hparams.json") as ckpt:
            tok = release_tokenizer(folder, config.vocab_size)  # before the long part: fail early
            state_dict = convert_weights(ckpt, hparams, torch_dtype)
        model = model_from_state_dict(
            GPTScratchForCausalLM, config, state_dict, torch_dtype, desc="building the model"
        )
        del state_dict
        save_folder(tmp, model, tok, max_shard_size)
    if tok is None:  # told only now, so that a failed conversion prints nothing but its error
        warn(
            f"n_vocab {config.vocab_size} is smaller than GPT-2's {GPT2_VOCAB_SIZE} tokens (encoder.json); "
            "the output has no tokenizer."
        )
    return Path(output)
