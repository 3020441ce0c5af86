"""What every command-line script of the project shares: one error type, one runner, one exit-code
convention, option checks, and atomic output folders.

- `CLIError`: a problem with the user's input or output (a file, an option, a folder), told in one
  line that names the thing and the fix. Scripts raise it; they never print-and-exit themselves.
- `run_cli(main)`: run a script's `main(argv)`. A `CLIError` or `OSError` becomes one `error: ...`
  line on stderr and exit status 1; Ctrl-C and SIGTERM become status 130 (SIGTERM is turned into
  `KeyboardInterrupt`, so cleanup such as removing a temporary output folder runs for both).
  Any other exception is a bug and keeps its traceback.
- `atomic_output_dir(output, overwrite)`: write into a temporary folder beside the output and move it
  into place only when everything has been written. `publish_into(folder)`: the same for model files
  written into a folder that also holds other things (a training run's checkpoints): config.json,
  which makes a folder a model, arrives last.
- `check_output_dir(...)`, `lock_output_dir(...)`: refuse a non-empty output without
  --overwrite_output_dir, an output that is the script's own input, and a second writer.
- `ArgumentParser`: argparse whose mistakes are a `CLIError` too; `check_number(flag, value, ...)`:
  finite and in range; `ModelSource`: the fine-tuning scripts' options for the model they start from.

A script ends with `sys.exit(run_cli(main))`; a distributed one with `exit_process(run_cli(main))`.
"""

import argparse
import contextlib
import errno
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXIT_ERROR = 1  # bad input or output: one `error:` line
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


class CLIError(Exception):
    """The user's input, options or output are not what a script expects. The message is one line
    that names the problem and the fix."""


def one_line(text: object, limit: int = 400) -> str:
    """`text` squeezed onto one line (library messages often span several), at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _remove_new_parents(created: list[Path]) -> None:
    for folder in reversed(created):  # innermost first; only folders this run made and left empty
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def atomic_output_dir(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `output`; move it to `output` when the block succeeds.

    `output` may not exist yet (missing parents are created) or be an empty folder; a non-empty one
    is a `CLIError` unless `overwrite`, in which case it is replaced only once the new one is
    complete. If the block raises (or is interrupted), the temporary folder and any parents made
    for it are removed, so no output is left behind.
    """
    output = Path(output).absolute()
    if output.exists() and not output.is_dir():
        raise CLIError(f"output {output} exists and is not a folder.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise CLIError(f"output folder {output} exists and is not empty; pass --overwrite to replace it.")

    created = [p for p in reversed(output.parents) if not p.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    except OSError as e:
        _remove_new_parents(created)
        raise CLIError(f"cannot create the output folder beside {output}: {one_line(e)}") from e

    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); give it a normal folder's mode
        with signals_deferred():
            _swap_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_new_parents(created)
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux's renameat2 RENAME_EXCHANGE): at every instant, even
    under kill -9, each name holds a whole folder. False where the system cannot (then nothing moved)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):  # a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_into_place(tmp: Path, output: Path) -> None:
    """Move the finished `tmp` to `output`. A non-empty `output` is swapped with `tmp` in one step
    where the system can (`exchange`), so even kill -9 finds the old folder or the new one there;
    elsewhere it is moved aside first, two renames, and if anything stops the swap between or during
    them (an error, Ctrl-C, SIGTERM) the old folder is put back."""
    old, emptied = None, False
    if output.is_dir() and any(output.iterdir()) and exchange(tmp, output):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    try:
        if output.is_dir() and any(output.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old)  # onto the empty folder mkdtemp made
        elif output.is_dir():
            output.rmdir()
            emptied = True
        os.replace(tmp, output)
    except BaseException:
        if not tmp.exists():  # the new folder is in place after all: only the old one is left to remove
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        elif old is not None and output.exists():  # the first rename did not happen: mkdtemp's empty folder
            old.rmdir()
        elif old is not None:
            os.replace(old, output)
        elif emptied and not output.exists():
            output.mkdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside the block are acted on when it ends: for the few renames
    that move a finished output into place, which must not stop half-way. (Python runs signal
    handlers in the main thread, so the handlers are swapped for one that only takes note; a signal
    mask would not do, the kernel hands a process's signal to any thread that does not block it.
    kill -9 cannot be deferred: each step is ordered so that it leaves no mix either.)"""
    pending = []
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main thread: signals go to the main thread anyway
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in pending:
            signal.raise_signal(sig)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def publish_into(folder: str | os.PathLike, last: tuple[str, ...] = ("config.json",)) -> Iterator[Path]:
    """Yield an empty temporary folder inside `folder`; when the block succeeds, move its files into
    `folder` (replacing files of the same name), the files named in `last` (config.json) last, after
    removing their old copies first. So at every instant `folder` is either a complete model or no
    model at all (no config.json), never new weights beside an old config; other entries (checkpoints,
    logs) stay. On failure the temporary folder goes and `folder` keeps what it had. For a folder that
    holds more than the model (a training run's checkpoints); a fresh output is `atomic_output_dir`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder))
    try:
        yield tmp
        for entry in tmp.iterdir():
            if entry.is_file():  # some writers make private (0600) files; these are for everyone to read
                entry.chmod(0o666 & ~_umask())
        with signals_deferred():  # Ctrl-C or SIGTERM now would leave the old model half-replaced
            for name in last:
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
            for entry in sorted(tmp.iterdir(), key=lambda p: p.name in last):
                target = folder / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(
    output: str | os.PathLike,
    overwrite: bool,
    *,
    inputs: tuple = (),
    flag: str = "--output_dir",
    ignore: tuple[str, ...] = (),
) -> Path:
    """`output` checked before any work: not a file, not one of the script's `inputs` (or inside one),
    and empty unless `overwrite` (entries named in `ignore` do not count)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise CLIError(f"{flag} {output} exists and is not a folder")
    resolved = output.resolve()
    for given in inputs:
        if given and os.path.exists(given):
            source = Path(given).resolve()
            if resolved == source or source in resolved.parents or resolved in source.parents:
                raise CLIError(
                    f"{flag} {output} is where the input {given} is: write the result to another folder"
                )
    if output.is_dir() and not overwrite and any(p.name not in ignore for p in output.iterdir()):
        raise CLIError(
            f"{flag} {output} already holds files: pass --overwrite_output_dir, or choose another folder"
        )
    return output


LOCK_FILE = ".writer.lock"


def lock_output_dir(output: str | os.PathLike, what: str = "a run"):
    """Hold an exclusive lock on `output`/.writer.lock for the rest of the process, so that a second
    run writing into the same folder stops at once. (An advisory `flock`: released when the process
    ends, however it ends.) Returns the open lock file; keep it."""
    import fcntl  # POSIX only: imported here so that the module loads everywhere

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_FILE, "a+")  # noqa: SIM115  (held open on purpose)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise CLIError(
            f"another process is writing into {output} ({what}): wait for it, or choose another folder"
        ) from None
    return handle


def write_json(path: str | os.PathLike, data, indent: int = 1) -> None:
    """`data` as JSON in `path`, written under a temporary name and renamed: never a torn file. NaN
    and infinity are refused (they are not JSON)."""
    path = Path(path)
    text = json.dumps(data, indent=indent, allow_nan=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ options
class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake is a `CLIError` (one `error:` line, status 1), not the usage text and
    status 2. `hf_argument_parser` mixes it into transformers' `HfArgumentParser`."""

    def error(self, message):
        raise CLIError(f"{message} (see --help)")


def hf_argument_parser(dataclass_types, prog: str, description: str | None = None):
    """transformers' `HfArgumentParser` over `dataclass_types` (the Trainer scripts' options), whose
    mistakes are a `CLIError` as `ArgumentParser`'s are."""
    from transformers import HfArgumentParser

    class Parser(ArgumentParser, HfArgumentParser):
        pass

    parser = Parser(dataclass_types, prog=prog)
    parser.description = description
    return parser


@dataclass
class ModelSource:
    """The model a fine-tuning script starts from (options for transformers' HfArgumentParser). A
    script that says more about its --model_name_or_path redefines that field, which keeps its place."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "a saved or converted causal-LM folder (or Hub id) to fine-tune"}
    )
    config_name: str | None = field(
        default=None, metadata={"help": "start from random weights instead: a preset (tiny, gpt2-small, ...)"}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'with --config_name: e.g. "emb_dim=64,n_layers=2,context_length=512"'}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "default: the model folder's tokenizer, else GPT-2's"}
    )


def check_number(flag: str, value, *, at_least=None, above=None, at_most=None, below=None):
    """`value` (None: not given, passes) as a finite number within the bounds; else a `CLIError`."""
    if value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise CLIError(f"{flag} must be a finite number, got {value}")
    for bound, ok, words in (
        (at_least, lambda b: value >= b, "at least"),
        (above, lambda b: value > b, "above"),
        (at_most, lambda b: value <= b, "at most"),
        (below, lambda b: value < b, "below"),
    ):
        if bound is not None and not ok(bound):
            raise CLIError(f"{flag} must be {words} {bound}, got {value}")
    return value


def check_trainer_arguments(args) -> None:
    """What transformers' `TrainingArguments` lets through and a fine-tuning run cannot use: a rate,
    decay or length that does not train. Without a GPU it turns memory pinning off (nothing to pin for)."""
    import torch

    check_number("--learning_rate", args.learning_rate, above=0)
    check_number("--weight_decay", args.weight_decay, at_least=0)
    check_number("--num_train_epochs", args.num_train_epochs, above=0)
    if not torch.cuda.is_available():
        args.dataloader_pin_memory = False


def rank() -> int:
    """This process's rank in a distributed run (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# Warnings a user of the scripts cannot act on: peft asks a deprecated property of every model it wraps,
# and torch warns at each DataLoader iterator that pin_memory has no accelerator to pin for.
QUIET_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (UserWarning, r".*'pin_memory' argument is set as true but no accelerator is found"),
)


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run `main(argv)` and return an exit status for `sys.exit`.

    A `CLIError` or `OSError` (a file that cannot be read or written, a full disk) becomes one
    `error: ...` line on stderr and status 1; Ctrl-C or SIGTERM becomes status 130, after the
    `finally`/`except` blocks on the way out (temporary folders) have run. Any other exception is a
    bug in the script and keeps its traceback. An int that `main` returns is the status. In a
    distributed run only the first process prints the error (every process stops with it).
    """
    previous = None
    with contextlib.suppress(ValueError):  # not in the main thread (e.g. a test calling main)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    try:
        code = main(argv)
    except Exception as e:
        message = _user_error(e)
        if message is None:
            raise
        if rank() == 0:
            print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if rank() == 0:
            print("error: interrupted (no output is left half-written)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _user_error(error: Exception) -> str | None:
    """The one-line message for an error that is the user's to fix (bad input, an unwritable place, a
    full disk), or None for a bug. safetensors reports a failed write as its own `SafetensorError`
    ("I/O error: No space left on device (os error 28)"), so that counts as an OSError too."""
    text = one_line(error, limit=2000)
    io_failure = isinstance(error, OSError) or (
        type(error).__name__ == "SafetensorError" and "os error" in text
    )
    if not (isinstance(error, CLIError) or io_failure):
        return None
    if io_failure and (getattr(error, "errno", None) == errno.ENOSPC or "os error 28" in text):
        return f"{text}: the disk is full; free some space or write to another disk"
    return text


def exit_process(code: int):
    """`sys.exit(code)`, but after a distributed run: take the process group down and leave at once,
    without the abort some runs end with at interpreter shutdown ("terminate called without an active
    exception")."""
    sys.stdout.flush()
    sys.stderr.flush()
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
