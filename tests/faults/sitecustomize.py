"""Faults injected into a script the tests run (tests/conftest.py `fault_env` puts this folder first on
PYTHONPATH and the fault in GPT_SCRATCH_FAULT, as JSON). Python imports `sitecustomize` at start-up,
before the script, so the script's own code and the libraries it calls meet the fault:

- `{"signal_at": "replace" or "unlink", "path": PATTERN, "nth": N, "signal": S}`: the N-th call of
  `os.replace` (or `os.unlink`) whose path holds PATTERN first sends signal S (9: kill -9, 15:
  SIGTERM) to the process, then does its work (a deferred or handled signal lets it).
- `{"full_disk": FOLDER}`: every write under FOLDER fails as on a full disk: files open, writes raise
  `OSError(ENOSPC)`; safetensors' own writer raises its `SafetensorError` with the same words.
"""

import errno
import json
import os

_fault = json.loads(os.environ.get("GPT_SCRATCH_FAULT") or "{}")

if "signal_at" in _fault:
    _real, _seen = getattr(os, _fault["signal_at"]), []

    def _signalling(*paths, **kwargs):
        names = [os.fsdecode(p) for p in paths if isinstance(p, (str, bytes, os.PathLike))]
        if any(_fault["path"] in name for name in names):
            _seen.append(names)
            if len(_seen) == _fault["nth"]:
                os.kill(os.getpid(), _fault["signal"])
        return _real(*paths, **kwargs)

    setattr(os, _fault["signal_at"], _signalling)
    if _fault["signal_at"] == "unlink":
        os.remove = _signalling

if "full_disk" in _fault:
    import builtins
    import io

    _root = os.path.realpath(_fault["full_disk"])
    _real_open = builtins.open

    def _on_full_disk(file) -> bool:
        if not isinstance(file, (str, bytes, os.PathLike)):
            return False
        path = os.path.realpath(os.fsdecode(file))
        return path == _root or path.startswith(_root + os.sep)

    def _no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    class _FullFile:
        def __init__(self, file):
            self._file = file

        write = writelines = _no_space

        def __getattr__(self, name):
            return getattr(self._file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

        def __iter__(self):
            return iter(self._file)

    def _open(file, mode="r", *args, **kwargs):
        handle = _real_open(file, mode, *args, **kwargs)
        return _FullFile(handle) if set(mode) & set("wax+") and _on_full_disk(file) else handle

    builtins.open = io.open = _open

    import safetensors
    import safetensors.torch

    _real_save_file = safetensors.torch.save_file

    def _save_file(tensors, filename, *args, **kwargs):
        if _on_full_disk(filename):
            _real_open(filename, "wb").close()  # the file is created, then the disk is full
            raise safetensors.SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return _real_save_file(tensors, filename, *args, **kwargs)

    safetensors.torch.save_file = _save_file
