"""What every command-line script of the project shares: one error type, one runner, one exit-code
convention, and atomic output folders.

- `CLIError`: a problem with the user's input or output (a file, an option, a folder), told in one
  line that names the thing and the fix. Scripts raise it; they never print-and-exit themselves.
- `run_cli(main)`: run a script's `main(argv)`. A `CLIError` or `OSError` becomes one `error: ...`
  line on stderr and exit status 1; Ctrl-C and SIGTERM become status 130 (SIGTERM is turned into
  `KeyboardInterrupt`, so cleanup such as removing a temporary output folder runs for both).
  Any other exception is a bug and keeps its traceback.
- `atomic_output_dir(output, overwrite)`: write into a temporary folder beside the output and move it
  into place only when everything has been written.

A script ends with `sys.exit(run_cli(main))`.
"""

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
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
        _swap_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_new_parents(created)
        raise


def _swap_into_place(tmp: Path, output: Path) -> None:
    """Move the finished `tmp` to `output`, moving an existing non-empty `output` aside first. Two
    renames; if anything stops the swap between or during them (an error, Ctrl-C, SIGTERM), the old
    folder is put back, so `output` is always either the old folder or the new one."""
    old, emptied = None, False
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run `main(argv)` and return an exit status for `sys.exit`.

    A `CLIError` or `OSError` (a file that cannot be read or written, a full disk) becomes one
    `error: ...` line on stderr and status 1; Ctrl-C or SIGTERM becomes status 130, after the
    `finally`/`except` blocks on the way out (temporary folders) have run. Any other exception is a
    bug in the script and keeps its traceback.
    """
    with contextlib.suppress(ValueError):  # not in the main thread (e.g. a test calling main)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        main(argv)
    except (CLIError, OSError) as e:
        print(f"error: {one_line(e, limit=2000)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; no output was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
