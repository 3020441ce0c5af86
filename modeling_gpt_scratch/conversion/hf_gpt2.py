"""A Hugging Face GPT-2 checkpoint (`GPT2LMHeadModel`) -> this project's `GPTScratchForCausalLM`.

The input is a folder (or a Hub id, fetched with `huggingface_hub.snapshot_download`) holding
`config.json` and the weights: `model.safetensors`, sharded safetensors with
`model.safetensors.index.json`, or `pytorch_model.bin` (read with `weights_only=True`); see
`hf_folder`. The output folder holds our weights as safetensors (sharded above `max_shard_size`),
our config, the code files, and the tokenizer, so that both
`AutoModelForCausalLM.from_pretrained(output)` (with this package installed) and
`AutoModelForCausalLM.from_pretrained(output, trust_remote_code=True)` load it.

The tokenizer is the input's own when it has one, else GPT-2's (`openai-community/gpt2`), or the
one named by `tokenizer`. A tokenizer with more tokens than the model's `vocab_size` would make ids
the model cannot embed: it is left out with a warning (an error when named by `tokenizer`).
"""

import os
import re
from pathlib import Path

import torch
from transformers import GPT2Config

from ..cli import CLIError, atomic_output_dir, one_line
from ..modeling_gpt_scratch import GPTScratchForCausalLM
from . import hf_folder
from .common import model_from_state_dict, parse_dtype, parse_shard_size, refuse_to_replace_input, save_folder
from .gpt2_mapping import config_from_gpt2, gpt2_to_scratch_state_dict, scratch_to_gpt2_state_dict

# Buffers some GPT-2 checkpoints carry (the causal mask): recomputed by every model, not weights.
IGNORED_TENSOR = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")


def convert_state_dict(gpt2_sd: dict, config, source: Path) -> dict:
    """Our state dict from GPT-2's, with every GPT-2 tensor accounted for."""
    sd = {k: v for k, v in gpt2_sd.items() if not IGNORED_TENSOR.match(k)}
    bare = {k.removeprefix("transformer."): v for k, v in sd.items()}
    head = bare.get("lm_head.weight")
    if not config.tie_word_embeddings and head is None:
        raise CLIError(
            f"{source} has no tensor `lm_head.weight`, but config.json sets tie_word_embeddings=false "
            f"(expected shape [{config.vocab_size}, {config.emb_dim}])."
        )
    try:
        ours = gpt2_to_scratch_state_dict(sd, config)
    except (KeyError, ValueError) as e:
        raise CLIError(f"{source}: {e.args[0] if e.args else e}") from e
    if config.tie_word_embeddings and head is not None and not torch.equal(head, bare["wte.weight"]):
        raise CLIError(
            f"{source}: `lm_head.weight` differs from `wte.weight`, but config.json ties them "
            "(tie_word_embeddings true or unset); set tie_word_embeddings=false to keep a separate head."
        )
    used = {k.removeprefix("transformer.") for k in scratch_to_gpt2_state_dict(ours, config)}
    unexpected = sorted(k for k in bare if k not in used)
    if unexpected:
        raise CLIError(
            f"{source} has tensor `{unexpected[0]}` ({len(unexpected)} unexpected in all), which a GPT2LMHeadModel "
            f"with config.json's n_layer={config.n_layers} does not have."
        )
    return ours


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
    folder `output`; returns `output`. Raises `CLIError` for bad input, leaving no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        folder, hub_id = hf_folder.resolve_input(str(input), revision=revision)
        refuse_to_replace_input(output, folder)
        gpt2_config = hf_folder.read_config(folder, GPT2Config, "a GPT2LMHeadModel checkpoint")
        try:
            config = config_from_gpt2(gpt2_config)
        except ValueError as e:
            raise CLIError(f"{folder / 'config.json'}: {one_line(e)}") from e
        weights = hf_folder.find_weights(folder, hub_id=hub_id)
        state_dict = convert_state_dict(hf_folder.load_weights(weights), config, weights)
        model = model_from_state_dict(GPTScratchForCausalLM, config, state_dict, torch_dtype)
        del state_dict
        model.generation_config = hf_folder.generation_config(folder, model)
        tok = hf_folder.pick_tokenizer(folder, config.vocab_size, tokenizer)
        save_folder(tmp, model, tok, max_shard_size)
    return Path(output)
