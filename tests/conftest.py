"""Shared fixtures and helpers: the public data in ../shared (see ../shared/data/README.md), tiny
models, writable caches so tests never touch the user's Hub or datasets cache, and the checks every
script's test makes (a script run as a user runs it; a clean failure: one `error:` line, status 1)."""

import contextlib
import functools
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_script(script, *args, env, timeout=300, launcher=(sys.executable,)):
    """A project script run as a user runs it: its own Python process (or `launcher`'s, e.g.
    torchrun), from the repository root."""
    return subprocess.run(
        [*launcher, str(script), *map(str, args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


def start_script(script, *args, env, launcher=(sys.executable,), stderr=subprocess.PIPE):
    """`run_script` started in the background: the Popen, its stdout a text pipe."""
    return subprocess.Popen(
        [*launcher, str(script), *map(str, args)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        encoding="utf-8",
    )


@contextlib.contextmanager
def serve_folder(folder):
    """An HTTP server on 127.0.0.1 for the files in `folder`, for the length of the block; yields its
    base URL. After the block nothing answers there, as on a machine that lost its network."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def script_env(tmp_path_factory, threads: int = 1) -> dict:
    """The environment a script runs in: offline, UTF-8, unbuffered, its own datasets and modules
    caches, `threads` OpenMP threads."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("datasets_cache"))
    env["HF_MODULES_CACHE"] = str(tmp_path_factory.mktemp("hf_modules"))
    return env


def load_example(name: str):
    """examples/<name>.py as a module, so that its functions and error paths run in this process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fails_cleanly(result, message):
    """A script that stopped on bad input: status 1, one `error: ...` line on stderr that holds
    `message`, no traceback. Returns the line."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    return lines[0]


def cli_error(main, argv, capsys) -> str:
    """`run_cli(main, argv)` in this process ends with status 1 and one `error:` line; returns it."""
    from modeling_gpt_scratch.cli import run_cli

    capsys.readouterr()
    assert run_cli(main, [str(a) for a in argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def ok(result):
    """A clean run: exit status 0 and no traceback. Returns its standard output."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stdout


def shared_data_dir() -> Path | None:
    path = Path(os.environ.get("GPT_SCRATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data; required in CI, a skip with the reason elsewhere."""
    path = shared_data_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs ../shared/data (or GPT_SCRATCH_SHARED_DATA) beside the checkout.")
        pytest.skip(
            "the public data sets are not here: set GPT_SCRATCH_SHARED_DATA or put ../shared/data beside the repo"
        )
    return path


@pytest.fixture(autouse=True)
def _writable_caches(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "caches"
    monkeypatch.setenv("HF_MODULES_CACHE", str(cache / "modules"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster, and far faster on a busy 2-core machine (no spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
