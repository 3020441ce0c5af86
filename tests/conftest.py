"""Shared fixtures and helpers: the public data in ../shared (see ../shared/data/README.md), tiny
models, writable caches so tests never touch the user's Hub or datasets cache, and the checks every
script's test makes (a script run as a user runs it; a clean failure: one `error:` line, status 1)."""

import contextlib
import functools
import glob
import http.server
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# How every script runs in the tests: from the repository root, its output read as UTF-8 text.
IN_REPO = dict(cwd=REPO, text=True, encoding="utf-8")


def run_script(script, *args, env, timeout=300, launcher=(sys.executable,), input=None):
    """A project script run as a user runs it: its own Python process (or `launcher`'s, e.g.
    torchrun), from the repository root, `input` on its standard input."""
    command = [*launcher, str(script), *map(str, args)]
    return subprocess.run(command, input=input, env=env, capture_output=True, timeout=timeout, **IN_REPO)


def start_script(script, *args, env, launcher=(sys.executable,), stderr=subprocess.PIPE):
    """`run_script` started in the background: the Popen, its stdout a text pipe."""
    command = [*launcher, str(script), *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, **IN_REPO)


def kill_when(process, path_appears, sig=signal.SIGKILL, timeout=240, poll=0.002):
    """Send `sig` to `process` the moment a path matching the glob `path_appears` exists (hidden
    names included), polling every `poll` seconds. Returns True when sent, False when the process
    ended first; a process still running after `timeout` seconds with no such path is killed and the
    test fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if glob.glob(str(path_appears), include_hidden=True):
            process.send_signal(sig)
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    process.kill()
    raise AssertionError(f"{path_appears} did not appear within {timeout} s")


def fault_env(env: dict, **fault) -> dict:
    """`env` for a script that meets `fault` (see tests/faults/sitecustomize.py): a signal at the N-th
    rename of a given path (`signal_at_replace=..., nth=..., signal=...`), or a full disk under a
    folder (`full_disk=...`)."""
    paths = [str(REPO / "tests" / "faults"), env.get("PYTHONPATH", "")]
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "GPT_SCRATCH_FAULT": json.dumps(fault),
    }


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


# ---- tiny models


def small_gpt(seed=0):
    """A randomly initialized GPT of two layers 32 wide (the `tiny` preset's vocabulary and context),
    drawn after `torch.manual_seed(seed)`: small enough for any test, large enough to train."""
    from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM

    torch.manual_seed(seed)
    config = GPTScratchConfig.from_preset("tiny", emb_dim=32, n_layers=2, n_heads=2, drop_rate=0.0)
    return GPTScratchForCausalLM(config)


@pytest.fixture(scope="module")
def tokenizer():
    """GPT-2's tokenizer (the copy in ../shared when offline)."""
    from modeling_gpt_scratch.tokenization import load_tokenizer

    return load_tokenizer()


def random_gpt2(vocab_size, n_positions, n_embd, n_layer, n_head, **config):
    """A random `GPT2LMHeadModel` of this shape, in eval mode: the reference our model is held to."""
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = dict(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head
    )
    return GPT2LMHeadModel(GPT2Config(**shape, **config)).eval()


# ---- converters
# Shared by tests/test_convert_*.py and tests/test_export_hf_gpt2.py: running a converter as a user
# does, the rules every converter keeps (one `error:` line, no output left behind, --output and
# --overwrite), and the book's own GPTModel (the `book` test extra) as the reference model.

CONVERTERS = REPO / "conversion"
# Options every converter checks before doing any work: (option, bad value, words of the message).
BAD_OPTIONS = [
    ("max_shard_size", "5XB", ["max_shard_size", "5XB"]),
    ("dtype", "int8", ["dtype", "int8", "bfloat16"]),
]


_CONVERTER_MODULES = {}


def converter(script: str):
    """The converter script `conversion/<script>.py` as a module (for its `main`)."""
    import importlib.util

    if script not in _CONVERTER_MODULES:
        spec = importlib.util.spec_from_file_location(script, CONVERTERS / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _CONVERTER_MODULES[script] = module
    return _CONVERTER_MODULES[script]


def run_converter(script: str, *args, timeout=300):
    """`python conversion/<script>.py ARGS` in its own process, offline, warnings shown."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    return run_script(CONVERTERS / f"{script}.py", *args, env=env, timeout=timeout)


def assert_clean_failure(rc, stderr, words, workdir):
    """A failed conversion: exit status not 0, one `error:` line holding `words`, no traceback, and
    nothing left in `workdir` (no output, no temporary folder)."""
    assert rc != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert list(workdir.iterdir()) == []


def assert_main_fails_cleanly(script, argv, words, tmp_path, capfd):
    """`run_cli(main, argv + --output)` of a converter fails cleanly, restores transformers' logging,
    and ran no code from the input."""
    import transformers

    from modeling_gpt_scratch.cli import run_cli

    workdir = tmp_path / "work"
    workdir.mkdir()
    capfd.readouterr()
    verbosity = transformers.logging.get_verbosity()
    rc = run_cli(converter(script).main, [*map(str, argv), "--output", str(workdir / "out")])
    captured = capfd.readouterr()
    assert transformers.logging.get_verbosity() == verbosity  # main() restores the library's logging
    assert_clean_failure(rc, captured.err, words, workdir)
    assert "code from the checkpoint ran" not in captured.out


def assert_process_fails_cleanly(script, argv, words, tmp_path):
    """The same as a real process: nothing on stdout, nothing on stderr but the one line."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_converter(script, *argv, "--output", workdir / "out" / "deeper")
    assert_clean_failure(result.returncode, result.stderr, words, workdir)
    assert result.stdout == ""


class RunsCode:
    """Pickled, it asks the unpickler to call `print`: a checkpoint that would run code."""

    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def assert_bad_option_refused(convert, option, value, words, out):
    """`convert(out, option=value)` is refused before any work, and writes nothing."""
    from modeling_gpt_scratch.cli import CLIError

    with pytest.raises(CLIError) as info:
        convert(out, **{option: value})
    assert all(w in str(info.value) for w in words)
    assert not out.exists()


def assert_output_folder_rules(convert, source, tmp_path, break_source, error, replaces):
    """The rules of `--output` for a converter; `convert(output, **options)` converts `source` (a
    file or folder in its own folder under `tmp_path`). An empty folder may be the output; a non-empty
    one only with overwrite, and then it is replaced, not merged; a file may not; neither may the
    input's folder or one above it. When the input turns bad (`break_source()`, failing with
    `error`), a failed overwrite keeps the old output, and no temporary folder is left anywhere."""
    from modeling_gpt_scratch.cli import CLIError

    out = tmp_path / "out"
    out.mkdir()
    convert(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CLIError, match="not empty.*--overwrite"):
        convert(out)
    (out / "stale.txt").write_text("from an earlier run")
    convert(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # replaced, not merged
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CLIError, match="not a folder"):
        convert(tmp_path / "a-file")
    folder = source if source.is_dir() else source.parent
    for output in (folder, folder.parent):
        with pytest.raises(CLIError, match=replaces):
            convert(output, overwrite=True)
    assert source.exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    break_source()
    with pytest.raises(CLIError, match=error):
        convert(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p for p in tmp_path.rglob(".*")] == []  # no temporary folder left


def broken_copy(case, good, folder):
    """(input, words) for a bad-input case `(source, words)`: `source` is the input itself (a string)
    or a function that breaks a copy of the folder `good`, made at `folder`."""
    source, words = case
    if isinstance(source, str):
        return source, words
    shutil.copytree(good, folder)
    source(folder)
    return str(folder), words


def assert_model_folder(out, expected):
    """A converter's output folder of ours, at `expected`: our config with `auto_map` (so
    `trust_remote_code` loads it), the code files, one safetensors file and no `.bin`, and no
    temporary folder beside it. Returns its config.json."""
    import json

    assert out == expected
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    files = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "configuration_gpt_scratch.py",
        "modeling_gpt_scratch.py",
    } <= files
    assert not any(f.endswith(".bin") for f in files)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt_scratch" and config["auto_map"]["AutoModelForCausalLM"]
    return config


def assert_same_generations(src, ours, vocab_size, new_tokens):
    """Greedy search and beam search give the same tokens from `src` and the converted `ours`."""
    x = prompts(vocab_size)
    kwargs = dict(
        attention_mask=torch.ones_like(x),
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=vocab_size - 1,
    )
    for extra in ({}, {"num_beams": 3}):
        assert ours.generate(x, **kwargs, **extra).tolist() == src.generate(x, **kwargs, **extra).tolist(), (
            extra
        )


def convert_sharded_bfloat16(script, input, out, max_shard_size, *options) -> dict:
    """Run a converter as a user does with --dtype bfloat16 and small shards; it succeeds and names
    its output. Returns the output's tensors (checked to be in several shards, all bfloat16)."""
    args = ["--input", input, "--output", out, "--dtype", "bfloat16", "--max_shard_size", max_shard_size]
    assert f"-> {out}" in ok(run_converter(script, *args, *options))
    return load_shards(out, torch.bfloat16)


def assert_fresh_python_says_ok(code, cwd):
    """`code` run by a fresh Python (offline, one thread) prints "ok"."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def load_shards(out, dtype) -> dict:
    """The tensors of a sharded output folder, checked to be in several shards, all of `dtype`."""
    import json

    from safetensors.torch import load_file

    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    assert not (out / "model.safetensors").exists()
    tensors = {}
    for shard in shards:
        tensors.update(load_file(out / shard))
    assert all(t.dtype == dtype for t in tensors.values())
    return tensors


def assert_close(got, expected, tol=1e-4):
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= tol, diff


def prompts(vocab_size, batch=2, length=7):
    return torch.randint(0, vocab_size - 1, (batch, length))


def book_code():
    """The book's own code (`llms_from_scratch`, the `book` test extra): required in CI, a skip with
    the reason elsewhere."""
    try:
        import llms_from_scratch.ch04
    except ImportError:
        reason = "the book's code is needed as the reference: pip install -e '.[dev,book]'"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return llms_from_scratch


def book_model(cfg, seed=123, noise=0.1):
    """The book's `GPTModel(cfg)` built after `torch.manual_seed(seed)` as in the book, then every
    parameter nudged by Gaussian noise, so LayerNorm scales and shifts and Q/K/V biases are not their
    initial ones and no two tensors are alike (a swapped mapping would not go unnoticed). In eval mode."""
    book = book_code()
    torch.manual_seed(seed)
    model = book.ch04.GPTModel(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
    return model.eval()
