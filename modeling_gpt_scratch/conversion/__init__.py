"""Conversion between this project's model and other formats: one module per format, each holding the
reader of its files beside the code that uses them. The scripts in the repository's `conversion/`
folder are their command lines.

- `gpt2_mapping`: the state-dict mapping between Hugging Face GPT-2 and our names and layouts
  (used by the three GPT-2 converters and the parity tests).
- `book`: the book's `GPTModel` checkpoint (`.pth`) -> our model; the configuration is read from
  the checkpoint.
- `hf_folder`: reading a Hugging Face model folder or Hub id (config, weights, tokenizer).
- `hf_gpt2`: a Hugging Face GPT-2 folder -> our model.
- `export_gpt2`: our model -> a Hugging Face GPT-2 folder that plain `transformers` loads.
- `openai_gpt2` and `tf_checkpoint`: OpenAI's original TensorFlow release -> our model, read without
  TensorFlow.
- `common`: what the converters share (options, checks, building and saving the model, `main()`).

Every `convert(input, output, ...)` raises `modeling_gpt_scratch.cli.CLIError` for bad input and
writes its output through `modeling_gpt_scratch.cli.atomic_output_dir`, so a failed or interrupted
conversion leaves no output (and `--overwrite` keeps the old one).
"""

from .gpt2_mapping import (
    BLOCK_MAP,
    config_from_gpt2,
    gpt2_config_from,
    gpt2_to_scratch_state_dict,
    scratch_to_gpt2_state_dict,
)

__all__ = [
    "BLOCK_MAP",
    "config_from_gpt2",
    "gpt2_config_from",
    "gpt2_to_scratch_state_dict",
    "scratch_to_gpt2_state_dict",
]
