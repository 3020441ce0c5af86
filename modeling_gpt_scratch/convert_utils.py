"""Pieces shared by the checkpoint converters in `conversion/`.

- `ConversionError`: a problem with a converter's input or output, told in one line that names
  the file or tensor and what was expected.
- `atomic_output_dir`: write into a temporary folder beside the output and move it into place only
  when everything has been written, so a failed run leaves no half-written output behind.
- `run_cli`: run a converter's `main`, turning a `ConversionError` (or an `OSError`, or Ctrl-C)
  into one `error: ...` line on stderr and a non-zero exit status, with no traceback.
- `parse_dtype`, `parse_shard_size`: the `--dtype` and `--max_shard_size` options, checked up front.

A converter is written as a function `convert(input, output, ...)` that raises `ConversionError`,
and a `main(argv)` that parses arguments and calls it; the script ends with
`sys.exit(run_cli(main))`.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ConversionError(Exception):
    """A converter's input or output is not what it expects. The message is one line for the user."""


def one_line(text: object, limit: int = 400) -> str:
    """`text` squeezed onto one line (library messages often span several), at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


def _remove_new_parents(created: list[Path]) -> None:
    for folder in reversed(created):  # innermost first; only folders this run made and left empty
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def atomic_output_dir(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `output`; move it to `output` when the block succeeds.

    `output` may not exist yet (missing parents are created) or be an empty folder; a non-empty one
    is a `ConversionError` unless `overwrite`, in which case it is replaced only once the new one is
    complete. If the block raises (or is interrupted), the temporary folder and any parents made
    for it are removed, so no output is left behind.
    """
    output = Path(output).absolute()
    if output.exists() and not output.is_dir():
        raise ConversionError(f"output {output} exists and is not a folder.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConversionError(
            f"output folder {output} exists and is not empty; pass --overwrite to replace it."
        )

    created = [p for p in reversed(output.parents) if not p.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    except OSError as e:
        _remove_new_parents(created)
        raise ConversionError(f"cannot create the output folder beside {output}: {one_line(e)}") from e

    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); give it a normal folder's mode
        old = None
        if output.is_dir() and any(output.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old)  # onto the empty folder mkdtemp made
        elif output.is_dir():
            output.rmdir()
        try:
            os.replace(tmp, output)
        except BaseException:
            if old is not None:
                os.replace(old, output)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_new_parents(created)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run `main(argv)` and return an exit status for `sys.exit`.

    A `ConversionError` or `OSError` (a file that cannot be read or written, a full disk) becomes
    one `error: ...` line on stderr and status 1; Ctrl-C becomes status 130. Any other exception is
    a bug in the converter and keeps its traceback.
    """
    try:
        main(argv)
    except (ConversionError, OSError) as e:
        print(f"error: {one_line(e, limit=2000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no output was written.", file=sys.stderr)
        return 130
    return 0


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
