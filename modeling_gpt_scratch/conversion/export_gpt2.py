"""This project's model -> a Hugging Face GPT-2 folder that plain `transformers` loads.

The input is a folder saved by `save_pretrained` (or a Hub id; read by `hf_folder`): a
`GPTScratchForCausalLM` becomes a `GPT2LMHeadModel`, a `GPTScratchForSequenceClassification` a
`GPT2ForSequenceClassification`. The output holds a GPT-2 `config.json`, safetensors weights
(sharded above `max_shard_size`), the generation config and the input's tokenizer (GPT-2's when the
input has none and vocab_size is at least 50257), and no code: `AutoModelForCausalLM.from_pretrained(output)`
works without this package and without `trust_remote_code`. The logits are the input model's.

The mapping is `gpt2_mapping.scratch_to_gpt2_state_dict` (the book's `load_weights_into_gpt` read
backwards); without `qkv_bias` the `c_attn` bias is zeros, which computes the same thing. A tied
head stays tied, an untied one stays untied (`tie_word_embeddings=false`).

What GPT-2 cannot express: a classifier that reads the book's way (`classifier_pooling=
"last_position"`, from a converted chapter 6 checkpoint) is refused, since GPT-2 reads the last
non-padding token. GPT-2's classifier head `score` has no bias, ours (the book's chapter-6
head) has one. A zero bias is dropped; any other is an error, unless `fold_score_bias` moves it into
the final LayerNorm's shift (`ln_f.bias += pinv(score.weight) @ score.bias`), which gives the same
logits but shifts the last hidden state (`hidden_states[-1]`) by a constant vector.
"""

import os
from pathlib import Path

import torch

from ..cli import CLIError, atomic_output_dir
from ..configuration_gpt_scratch import GPTScratchConfig
from ..modeling_gpt_scratch import GPTScratchForCausalLM, GPTScratchForSequenceClassification
from . import hf_folder
from .common import (
    check_tensors,
    expected_shapes,
    model_from_state_dict,
    parse_dtype,
    parse_shard_size,
    refuse_to_replace_input,
    save_folder,
)
from .gpt2_mapping import gpt2_config_from, scratch_to_gpt2_state_dict

ARCHITECTURES = {
    "GPTScratchForCausalLM": GPTScratchForCausalLM,
    "GPTScratchForSequenceClassification": GPTScratchForSequenceClassification,
}


# ---------------------------------------------------------------------------------------- input


def model_class_of(config: GPTScratchConfig, tensors: dict, folder: Path):
    """Which of our models the folder holds: its config's `architectures`, else its head's name."""
    names = list(getattr(config, "architectures", None) or [])
    known = [n for n in names if n in ARCHITECTURES]
    if names and not known:
        raise CLIError(
            f"{folder / 'config.json'} has architectures {names}; this exporter handles "
            f"{' and '.join(ARCHITECTURES)}."
        )
    if known:
        return ARCHITECTURES[known[0]]
    return GPTScratchForSequenceClassification if "score.weight" in tensors else GPTScratchForCausalLM


# ------------------------------------------------------------------------------------- convert


def check_weights(tensors: dict, config: GPTScratchConfig, model_class, source: Path) -> None:
    """Every tensor of `model_class(config)`, with its shape, and nothing else."""
    expected = expected_shapes(model_class, config)
    tied = model_class is GPTScratchForCausalLM and config.tie_word_embeddings
    summary = ", ".join(
        f"{k}={getattr(config, k)}"
        for k in ("vocab_size", "context_length", "emb_dim", "n_layers", "qkv_bias")
    )

    def hint(kind: str, name: str) -> str:
        if kind == "shape":
            return f"config.json has {summary}."
        needs = "has no such tensor" if kind == "unexpected" else "needs it"
        return f"{model_class.__name__} with config.json's {summary} {needs}."

    check_tensors(tensors, expected, source, optional=("out_head.weight",) if tied else (), hint=hint)
    head = tensors.get("out_head.weight")
    if tied and head is not None and not torch.equal(head, tensors["model.tok_emb.weight"]):
        raise CLIError(
            f"{source}: `out_head.weight` differs from `model.tok_emb.weight`, but config.json ties them "
            "(tie_word_embeddings true); set it to false to keep a separate head."
        )


def fold_bias(state: dict, weight: torch.Tensor, bias: torch.Tensor, source: Path) -> None:
    """Move the classifier's bias `b` into `ln_f.bias`: `W (x + d) = W x + b` for `d = pinv(W) b`,
    exact when W's rows are independent. Checked in float64."""
    w, b = weight.double(), bias.double()
    delta = torch.linalg.pinv(w) @ b
    error = (w @ delta - b).abs().max().item()
    if error > 1e-6 * (1.0 + b.abs().max().item()):
        raise CLIError(
            f"{source}: the bias of `score` cannot be folded into the final LayerNorm (the rows of "
            f"`score.weight` are not independent; residual {error:.2g}), so GPT-2's bias-free head cannot express it."
        )
    shift = state["transformer.ln_f.bias"]
    state["transformer.ln_f.bias"] = (shift.double() + delta).to(shift.dtype)


def gpt2_state_and_config(
    tensors: dict, config: GPTScratchConfig, model_class, source: Path, fold_score_bias: bool
):
    """(GPT-2 model class, GPT2Config, GPT-2 state dict) for our tensors."""
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    gpt2_config = gpt2_config_from(config)
    state = scratch_to_gpt2_state_dict(tensors, config)
    if model_class is GPTScratchForCausalLM:
        if config.tie_word_embeddings:
            state["lm_head.weight"] = state["transformer.wte.weight"]
        return GPT2LMHeadModel, gpt2_config, state

    if getattr(config, "classifier_pooling", "last_token") != "last_token":
        raise CLIError(
            f"{source.parent / 'config.json'}: this classifier reads the book's way (classifier_pooling="
            f"{config.classifier_pooling!r}: the last position of text padded to {config.classifier_padded_length} "
            "tokens), and GPT2ForSequenceClassification reads the last non-padding token, so GPT-2 would give "
            "other answers; keep it in this project's format."
        )
    del state["lm_head.weight"]
    gpt2_config.tie_word_embeddings = False
    gpt2_config.id2label = dict(config.id2label)
    gpt2_config.label2id = dict(config.label2id or {label: i for i, label in config.id2label.items()})
    gpt2_config.problem_type = config.problem_type
    weight, bias = tensors["score.weight"], tensors["score.bias"]
    state["score.weight"] = weight
    if torch.count_nonzero(bias):
        if not fold_score_bias:
            raise CLIError(
                f"{source}: `score.bias` is not zero, and GPT2ForSequenceClassification's head has no bias, so "
                "GPT-2 cannot express this classifier as it is; pass --fold_score_bias to move the bias into the "
                "final LayerNorm's shift (same logits; the last hidden state shifts by a constant vector)."
            )
        fold_bias(state, weight, bias, source)
    return GPT2ForSequenceClassification, gpt2_config, state


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    fold_score_bias: bool = False,
    tokenizer: str | None = None,
    revision: str | None = None,
) -> Path:
    """Export our model folder (or Hub id) `input` as a GPT-2 folder `output`; returns `output`.
    Raises `CLIError` for bad input or a model GPT-2 cannot express, leaving no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        folder, hub_id = hf_folder.resolve_input(str(input), revision=revision)
        refuse_to_replace_input(output, folder)
        holds = f"a folder saved from {' or '.join(ARCHITECTURES)}"
        config = hf_folder.read_config(folder, GPTScratchConfig, holds)
        weights = hf_folder.find_weights(folder, hub_id=hub_id)
        tensors = hf_folder.load_weights(weights)
        model_class = model_class_of(config, tensors, folder)
        check_weights(tensors, config, model_class, weights)
        gpt2_class, gpt2_config, state = gpt2_state_and_config(
            tensors, config, model_class, weights, fold_score_bias
        )
        del tensors
        model = model_from_state_dict(
            gpt2_class, gpt2_config, state, torch_dtype, desc=f"exporting {folder.name}"
        )
        del state
        if model.can_generate():
            model.generation_config = hf_folder.generation_config(folder, model)
        tok = hf_folder.pick_tokenizer(folder, config.vocab_size, tokenizer)
        save_folder(tmp, model, tok, max_shard_size)
    return Path(output)
