"""Export this project's model to a Hugging Face GPT-2 folder that plain `transformers` loads.

    python conversion/export_hf_gpt2.py --input my-gpt --output my-gpt-hf
    python conversion/export_hf_gpt2.py --input spam-classifier --output spam-hf --fold_score_bias

The input is a folder saved by `save_pretrained` (or a Hub id): a `GPTScratchForCausalLM` becomes a
`GPT2LMHeadModel`, a `GPTScratchForSequenceClassification` a `GPT2ForSequenceClassification`. The
output holds a GPT-2 `config.json`, safetensors weights (sharded above `--max_shard_size`), the
generation config and the input's tokenizer (GPT-2's when the input has none and vocab_size is at
least 50257), and no code: `AutoModelForCausalLM.from_pretrained(output)` works without this package
and without `trust_remote_code`. The logits are the input model's.

The mapping is the book's `load_weights_into_gpt` read backwards: Q, K and V fused into `c_attn`,
`nn.Linear` weights transposed into GPT-2's `Conv1D` layout; without `qkv_bias` the `c_attn` bias
is zeros, which computes the same thing. A tied head stays tied, an untied one stays untied
(`tie_word_embeddings=false`).

What GPT-2 cannot express: GPT-2's classifier head `score` has no bias, ours (the book's chapter-6
head) has one. A zero bias is dropped; any other is an error, unless `--fold_score_bias` moves it into
the final LayerNorm's shift (`ln_f.bias += pinv(score.weight) @ score.bias`), which gives the same
logits but shifts the last hidden state (`hidden_states[-1]`) by a constant vector.

The output is written to a temporary folder beside `--output` and moved into place at the end.
Bad input stops with one `error: ...` line naming the file or tensor, and leaves no output.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

try:
    import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling converter, for its readers
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert_hf_gpt2 import find_weights, generation_config, load_weights, pick_tokenizer, resolve_input

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM, GPTScratchForSequenceClassification
from modeling_gpt_scratch.conversion import gpt2_config_from, scratch_to_gpt2_state_dict
from modeling_gpt_scratch.convert_utils import (
    LARGE_INPUT_BYTES,
    ConversionError,
    add_hub_arguments,
    atomic_output_dir,
    check_hub_arguments,
    check_tensors,
    model_from_state_dict,
    one_line,
    parse_dtype,
    parse_shard_size,
    push_output,
    run_cli,
)
from modeling_gpt_scratch.hub import hub_id_or_none

ARCHITECTURES = {
    "GPTScratchForCausalLM": GPTScratchForCausalLM,
    "GPTScratchForSequenceClassification": GPTScratchForSequenceClassification,
}


# ---------------------------------------------------------------------------------------- input


def read_config(folder: Path) -> GPTScratchConfig:
    """Our config in `folder/config.json`."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} not found: a model folder needs its config.json.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON: {one_line(e)}") from e
    if not isinstance(raw, dict) or raw.get("model_type") != GPTScratchConfig.model_type:
        found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ConversionError(
            f"{path} has model_type {found!r}; expected {GPTScratchConfig.model_type!r} (a folder saved from "
            "GPTScratchForCausalLM or GPTScratchForSequenceClassification)."
        )
    try:
        return GPTScratchConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{path}: {one_line(e)}") from e


def model_class_of(config: GPTScratchConfig, tensors: dict, folder: Path):
    """Which of our models the folder holds: its config's `architectures`, else its head's name."""
    names = list(getattr(config, "architectures", None) or [])
    known = [n for n in names if n in ARCHITECTURES]
    if names and not known:
        raise ConversionError(
            f"{folder / 'config.json'} has architectures {names}; this exporter handles "
            f"{' and '.join(ARCHITECTURES)}."
        )
    if known:
        return ARCHITECTURES[known[0]]
    return GPTScratchForSequenceClassification if "score.weight" in tensors else GPTScratchForCausalLM


# ------------------------------------------------------------------------------------- convert


def check_weights(tensors: dict, config: GPTScratchConfig, model_class, source: Path) -> None:
    """Every tensor of `model_class(config)`, with its shape, and nothing else."""
    with torch.device("meta"):
        reference = model_class(config)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
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
        raise ConversionError(
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
        raise ConversionError(
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

    del state["lm_head.weight"]
    gpt2_config.tie_word_embeddings = False
    gpt2_config.id2label = dict(config.id2label)
    gpt2_config.label2id = dict(config.label2id or {label: i for i, label in config.id2label.items()})
    gpt2_config.problem_type = config.problem_type
    weight, bias = tensors["score.weight"], tensors["score.bias"]
    state["score.weight"] = weight
    if torch.count_nonzero(bias):
        if not fold_score_bias:
            raise ConversionError(
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
    Raises `ConversionError` for bad input or a model GPT-2 cannot express, leaving no output."""
    torch_dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        folder, hub_id = resolve_input(str(input), revision=revision)
        if Path(output).resolve() in (folder.resolve(), *folder.resolve().parents):
            raise ConversionError(f"output {output} would replace the input folder {folder}; choose another.")
        config = read_config(folder)
        weights = find_weights(folder, hub_id=hub_id)
        tensors = load_weights(weights)
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
            model.generation_config = generation_config(folder, model)
        tok = pick_tokenizer(folder, config.vocab_size, tokenizer)
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        if tok is not None:
            tok.save_pretrained(tmp)
    return Path(output)


# -------------------------------------------------------------------------------------------- CLI


def input_bytes(input: str) -> int:
    path = Path(input)
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--input", required=True, help="our model folder (save_pretrained) or Hub id")
    parser.add_argument("--output", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument(
        "--fold_score_bias",
        action="store_true",
        help="classifier: move the head's bias into ln_f.bias (GPT-2's head has none)",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or Hub id (default: the input's, else GPT-2's)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision of --input")
    add_hub_arguments(parser)
    args = parser.parse_args(argv)
    check_hub_arguments(args)

    from transformers.utils import logging

    # One line per problem, ours, without the library's warnings; its progress bars (writing shards)
    # only for large inputs. Both restored after, for callers that run main() in their own process.
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    if input_bytes(args.input) < LARGE_INPUT_BYTES:
        logging.disable_progress_bar()
    try:
        out = convert(
            args.input,
            args.output,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            fold_score_bias=args.fold_score_bias,
            tokenizer=args.tokenizer,
            revision=args.revision,
        )
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    files = sorted(p.name for p in out.iterdir())
    print(f"Exported {args.input} -> {out} as GPT-2 ({args.dtype}): {', '.join(files)}")
    if args.push_to_hub:
        push_output(args, out, base_model=hub_id_or_none(args.input))


if __name__ == "__main__":
    sys.exit(run_cli(main))
