"""Pieces shared by the checkpoint converters in `conversion/`.

- `ConversionError`, `atomic_output_dir`, `run_cli`: the command-line basics every script shares,
  from `modeling_gpt_scratch.cli` (`ConversionError` is its `CLIError`).
- `parse_dtype`, `parse_shard_size`: the `--dtype` and `--max_shard_size` options, checked up front.

A converter is written as a function `convert(input, output, ...)` that raises `ConversionError`,
and a `main(argv)` that parses arguments and calls it; the script ends with
`sys.exit(run_cli(main))`.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from .cli import CLIError, atomic_output_dir, one_line, run_cli

ConversionError = CLIError  # the converters' name for it
__all__ = ["ConversionError", "atomic_output_dir", "one_line", "run_cli"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """`"float32"`, `"bfloat16"` or `"float16"` as a torch dtype."""
    if name not in DTYPES:
        raise ConversionError(f"dtype {name!r} is not supported; choose one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def parse_shard_size(size: int | str) -> int | str:
    """Checks a `max_shard_size` the way `save_pretrained` reads it (an int of bytes, or `"5GB"`,
    `"500MB"`, `"2GiB"`...), so a typo fails before any work is done."""
    from transformers.utils.hub import convert_file_size_to_int

    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    try:
        value = convert_file_size_to_int(size)
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, int) or value <= 0:
        raise ConversionError(
            f"max_shard_size {size!r} is not a size: use a whole number and a unit, like 5GB, 500MB or 2GiB."
        )
    return size


# ------------------------------------------- tensors and models (the book and export converters)

LARGE_INPUT_BYTES = 1 << 30  # from this size on, a conversion shows a progress bar on stderr


def tensor_bytes(tensors) -> int:
    """The bytes the tensors of a dict (or any iterable of tensors) hold."""
    values = tensors.values() if hasattr(tensors, "values") else tensors
    return sum(t.numel() * t.element_size() for t in values)


def progress_bar(total_bytes: int, desc: str):
    """A tqdm bar on stderr counting bytes, shown only when `total_bytes >= LARGE_INPUT_BYTES`
    (small conversions take a second and print nothing but their result)."""
    from tqdm import tqdm

    return tqdm(
        total=total_bytes,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=total_bytes < LARGE_INPUT_BYTES,
        file=sys.stderr,
        leave=False,
    )


def _shape(shape) -> str:
    return str(list(shape))


def check_tensors(
    tensors: dict,
    expected: dict,
    source: object,
    optional: tuple[str, ...] = (),
    hint: Callable[[str, str], str] | None = None,
) -> None:
    """Check a state dict against `expected` (name -> shape); raise `ConversionError` for the first
    missing tensor (names in `optional` may be missing), else the first of the wrong shape, else the
    first that `expected` does not have. `hint(kind, name)`, kind "missing", "shape" or "unexpected",
    may return a sentence to add (why, and what to do)."""

    def fail(kind: str, name: str, message: str):
        extra = hint(kind, name) if hint else ""
        raise ConversionError(f"{source}: {message}" + (f"; {extra}" if extra else "."))

    for name, shape in expected.items():
        if name not in tensors and name not in optional:
            fail("missing", name, f"tensor `{name}` is missing (expected shape {_shape(shape)})")
    for name, shape in expected.items():
        if name in tensors and tuple(tensors[name].shape) != tuple(shape):
            fail(
                "shape",
                name,
                f"tensor `{name}` has shape {_shape(tensors[name].shape)}, expected {_shape(shape)}",
            )
    unexpected = [name for name in tensors if name not in expected]
    if unexpected:
        more = f" ({len(unexpected)} unexpected in all)" if len(unexpected) > 1 else ""
        fail("unexpected", unexpected[0], f"unexpected tensor `{unexpected[0]}`{more}")


def model_from_state_dict(
    model_class, config, state_dict: dict, dtype: torch.dtype, desc: str = "converting"
):
    """`model_class(config)` holding `state_dict` cast to `dtype`, in eval mode.

    The model is built on the meta device (no throw-away random initialization) and takes the
    tensors as they are (`assign=True`), so a memory-mapped input is read once, tensor by tensor,
    under a progress bar for large inputs. Tied weights are tied again afterwards."""
    cast = {}
    with progress_bar(tensor_bytes(state_dict), desc) as bar:
        for name, tensor in state_dict.items():
            cast[name] = tensor.to(dtype).contiguous()
            bar.update(tensor.numel() * tensor.element_size())
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(cast, strict=True, assign=True)
    model.tie_weights()  # `assign` gives a tied head its own Parameter; share it again
    model.config.dtype = dtype
    return model.eval()


# ------------------------------------------------------------------------- --push_to_hub (all converters)


def add_hub_arguments(parser) -> None:
    """The options of `--push_to_hub`, named as in transformers' example scripts."""
    g = parser.add_argument_group("Hugging Face Hub")
    g.add_argument("--push_to_hub", action="store_true", help="push the output folder, with a model card")
    g.add_argument(
        "--hub_model_id", help="repo to push to: NAME or OWNER/NAME (default: the output folder's name)"
    )
    g.add_argument("--hub_token", help="Hub token (default: HF_TOKEN, or the one `hf auth login` saved)")
    g.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    g.add_argument("--base_model", help="the Hub id the weights come from, for the model card")


def check_hub_arguments(args) -> None:
    """A bad repo id or an offline Hub fails before the conversion, not after it."""
    if not args.push_to_hub:
        return
    from modeling_gpt_scratch.hub import HubError, check_repo_id

    args.hub_model_id = args.hub_model_id or Path(args.output).absolute().name
    try:
        check_repo_id(args.hub_model_id)
    except HubError as e:
        raise ConversionError(f"--hub_model_id: {e}") from None
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ConversionError(
            "--push_to_hub needs the network, but HF_HUB_OFFLINE=1 is set: run with HF_HUB_OFFLINE=0."
        )


def push_output(args, output: Path, base_model: str | None = None) -> None:
    """Push the converted folder (see `modeling_gpt_scratch.hub.push_folder`) and say where it went."""
    from modeling_gpt_scratch.hub import HubError, push_folder

    try:
        info = push_folder(
            output,
            args.hub_model_id,
            token=args.hub_token,
            private=args.hub_private_repo or None,
            base_model=args.base_model or base_model,
            commit_message=f"Upload {Path(output).name} ({Path(sys.argv[0]).name})",
        )
    except HubError as e:
        raise ConversionError(f"{output} was written, but {e}") from e
    print(f"Pushed {output} -> {info.commit_url}")
