"""What every converter shares, so that each converter holds only what is particular to its format.

- options: `add_arguments` (the options every converter takes), `parse_dtype`, `parse_shard_size`
  (checked before any work), and `--push_to_hub` (`check_hub_arguments`, `push_output`);
- reading: `load_torch_file` (a `.pth`/`.bin` with `weights_only=True` and one clear message for every
  failure), `check_tensors` (a state dict against the names and shapes a model expects);
- writing: `model_from_state_dict` (the model built on the meta device, holding the tensors as they
  are), `refuse_to_replace_input`, `save_folder`;
- running: `quiet_transformers` (the library's warnings off, its progress bars only for large inputs,
  both restored after), `run_converter` and `converter_main`, the `main()` of every converter script.

Errors are `modeling_gpt_scratch.cli.CLIError`: one line naming the file or tensor and the fix.
"""

import contextlib
import json
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..cli import CLIError, one_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LARGE_INPUT_BYTES = 1 << 30  # from this size on, a conversion shows progress bars on stderr


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- options


def parse_dtype(name: str) -> torch.dtype:
    """`"float32"`, `"bfloat16"` or `"float16"` as a torch dtype."""
    if name not in DTYPES:
        raise CLIError(f"dtype {name!r} is not supported; choose one of {', '.join(DTYPES)}.")
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
        raise CLIError(
            f"max_shard_size {size!r} is not a size: use a whole number and a unit, like 5GB, 500MB or 2GiB."
        )
    return size


def add_arguments(parser, input_help: str) -> None:
    """The options of every converter: --input, --output, --dtype, --max_shard_size, --overwrite and
    the `--push_to_hub` group (named as in transformers' example scripts)."""
    parser.add_argument("--input", required=True, help=input_help)
    parser.add_argument("--output", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
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
    if args.push_to_hub:
        from ..hub import check_push_target

        args.hub_model_id = check_push_target(args.hub_model_id, args.output)


def push_output(args, output: Path, base_model: str | None = None) -> None:
    """Push the converted folder (see `modeling_gpt_scratch.hub.push_folder`) and say where it went."""
    from ..hub import HubError, push_folder

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
        raise CLIError(f"{output} was written, but {e}") from e
    print(f"Pushed {output} -> {info.commit_url}")


# ---------------------------------------------------------------------------------------- reading


def load_torch_file(path: Path):
    """`torch.load(path, weights_only=True)`, memory-mapped when the file allows (a large model is then
    read tensor by tensor while converting), with one clear message for every failure. Never runs
    code from the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # pickle, zip and I/O errors come in many types
        text = str(e)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            is_class = found.group(1).rsplit(".", 1)[-1][:1].isupper()
            hint = (
                " (a pickled object: save `model.state_dict()` instead, as the book does)" if is_class else ""
            )
            raise CLIError(
                f"{path} needs to unpickle `{found.group(1)}`{hint}; this converter loads with weights_only=True "
                "and will not unpickle arbitrary objects, only tensors and plain containers."
            ) from e
        # torch's message is long; its useful part follows "WeightsUnpickler error:" when there is one
        unpickler = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        reason = unpickler.group(1) if unpickler else (text.splitlines()[0].split(". ")[0] if text else "")
        reason = one_line(f"{type(e).__name__}: {reason}" if reason else type(e).__name__, limit=200)
        raise CLIError(
            f"{path} cannot be read as a PyTorch checkpoint with weights_only=True (truncated or corrupt?): {reason}"
        ) from e


def read_json_object(path: Path, expected: str) -> dict:
    """The JSON object in the file `path`; `expected` says what it should hold, for the messages."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CLIError(f"{path} is not valid JSON: {one_line(e)}") from e
    if not isinstance(raw, dict):
        raise CLIError(f"{path} holds a JSON {type(raw).__name__}; expected {expected}.")
    return raw


def check_tensors(
    tensors: dict,
    expected: dict,
    source: object,
    optional: tuple[str, ...] = (),
    hint: Callable[[str, str], str] | None = None,
) -> None:
    """Check a state dict against `expected` (name -> shape); raise `CLIError` for the first missing
    tensor (names in `optional` may be missing), else the first of the wrong shape, else the first
    that `expected` does not have. `hint(kind, name)`, kind "missing", "shape" or "unexpected", may
    return a sentence to add (why, and what to do)."""

    def fail(kind: str, name: str, message: str):
        extra = hint(kind, name) if hint else ""
        raise CLIError(f"{source}: {message}" + (f"; {extra}" if extra else "."))

    for name, shape in expected.items():
        if name not in tensors and name not in optional:
            fail("missing", name, f"tensor `{name}` is missing (expected shape {list(shape)})")
    for name, shape in expected.items():
        if name in tensors and tuple(tensors[name].shape) != tuple(shape):
            found = list(tensors[name].shape)
            fail("shape", name, f"tensor `{name}` has shape {found}, expected {list(shape)}")
    unexpected = [name for name in tensors if name not in expected]
    if unexpected:
        more = f" ({len(unexpected)} unexpected in all)" if len(unexpected) > 1 else ""
        fail("unexpected", unexpected[0], f"unexpected tensor `{unexpected[0]}`{more}")


def expected_shapes(model_class, config, rename: Callable[[str], str] = lambda name: name) -> dict:
    """Name -> shape of every tensor of `model_class(config)`, built on the meta device (no memory)."""
    with torch.device("meta"):
        reference = model_class(config)
    return {rename(k): tuple(v.shape) for k, v in reference.state_dict().items()}


# ---------------------------------------------------------------------------------------- writing


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


def refuse_to_replace_input(output, input: Path, what: str = "the input folder") -> None:
    """`--output` may not be the input's folder or one above it (`--overwrite` would delete the input)."""
    input = Path(input).expanduser()
    if not input.exists():
        return
    folder = input.resolve() if input.is_dir() else input.resolve().parent
    if Path(output).resolve() in (folder, *folder.parents):
        raise CLIError(f"output {output} would replace {what} {input}; choose another.")


def save_folder(folder: Path, model, tokenizer, max_shard_size) -> None:
    """The model (safetensors, config, code files) and the tokenizer, if any, into `folder`."""
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------------------------------- running


def input_bytes(input: str) -> int:
    """The size of a local input (a file, or the files of a folder); 0 for a Hub id."""
    path = Path(input).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return 0


@contextlib.contextmanager
def quiet_transformers(progress_bars: bool = False):
    """transformers' warnings off (each problem is told once, in our words) and its progress bars
    (writing shards) off unless `progress_bars`; both as they were afterwards, for callers that run a
    `main()` in their own process."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    if not progress_bars:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def run_converter(
    args,
    convert: Callable[..., Path],
    done: str = "Converted",
    base_model: str | None = None,
    **options,
) -> Path:
    """The body of every converter's `main()` once its options are parsed: check the Hub options,
    convert quietly (progress bars only for inputs of at least `LARGE_INPUT_BYTES`), print one line
    naming the files written (`done`: what happened, e.g. "Exported ... as GPT-2"), and push when
    asked. `options` go to `convert` beside the common ones."""
    check_hub_arguments(args)
    with quiet_transformers(progress_bars=input_bytes(args.input) >= LARGE_INPUT_BYTES):
        out = convert(
            args.input,
            args.output,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            **options,
        )
    files = sorted(p.name for p in out.iterdir())
    verb, _, suffix = done.partition(" ... ")
    print(f"{verb} {args.input} -> {out}{' ' + suffix if suffix else ''} ({args.dtype}): {', '.join(files)}")
    if args.push_to_hub:
        push_output(args, out, base_model=base_model)
    return out


def converter_main(
    argv, doc: str, convert: Callable[..., Path], input_help: str, add_options=None, folder_input=False, **run
) -> Path:
    """The `main()` of every converter script: its docstring as --help, the common options, the
    script's own (`add_options(parser)`, each passed to `convert` under its name), and for an input
    that is a folder or Hub id (`folder_input`) --tokenizer and --revision, the input named as the
    base model on the Hub; then `run_converter` (`run`: its `done`)."""
    import argparse

    from ..hub import hub_id_or_none
    from . import hf_folder

    parser = argparse.ArgumentParser(**script_description(doc))
    add_arguments(parser, input_help)
    common = {action.dest for action in parser._actions}
    if add_options is not None:
        add_options(parser)
    if folder_input:
        hf_folder.add_arguments(parser)
    args = parser.parse_args(argv)
    options = {key: value for key, value in vars(args).items() if key not in common}
    base_model = hub_id_or_none(args.input) if folder_input else None
    return run_converter(args, convert, base_model=base_model, **run, **options)


def script_description(doc: str) -> dict:
    """argparse keyword arguments for a converter script: its docstring's first paragraph, as written,
    and what every converter promises about its output."""
    import argparse

    return dict(
        description=doc.split("\n\n")[0],
        epilog="The output is written to a temporary folder beside --output and moved into place at the end\n"
        "(with --overwrite, the old output stays until then). Bad input stops with one `error: ...` line\n"
        "and leaves no output.",
        formatter_class=argparse.RawTextHelpFormatter,
    )


__all__ = [
    "CLIError",
    "LARGE_INPUT_BYTES",
    "add_arguments",
    "check_tensors",
    "expected_shapes",
    "input_bytes",
    "load_torch_file",
    "model_from_state_dict",
    "parse_dtype",
    "parse_shard_size",
    "progress_bar",
    "read_json_object",
    "quiet_transformers",
    "refuse_to_replace_input",
    "run_converter",
    "save_folder",
    "warn",
]
