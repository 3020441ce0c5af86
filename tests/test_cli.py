"""modeling_gpt_scratch.cli, the foundation every script stands on: one error line and exit status,
options checked, outputs that are whole or absent, one writer per output folder."""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import pytest

from modeling_gpt_scratch.cli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    LOCK_FILE,
    ArgumentParser,
    CLIError,
    check_number,
    check_output_dir,
    lock_output_dir,
    publish_into,
    run_cli,
    write_json,
)


def test_run_cli_turns_errors_into_one_line_and_a_status(capsys, monkeypatch):
    def bad(argv):
        raise CLIError("--thing is wrong:\n  use another one")

    assert run_cli(bad) == EXIT_ERROR
    assert capsys.readouterr().err == "error: --thing is wrong: use another one\n"
    assert run_cli(lambda argv: (_ for _ in ()).throw(FileNotFoundError(2, "No such file", "x.json"))) == 1
    assert capsys.readouterr().err.startswith("error: [Errno 2] No such file")
    assert run_cli(lambda argv: (_ for _ in ()).throw(KeyboardInterrupt)) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted (no output is left half-written)\n"
    assert run_cli(lambda argv: 143) == 143 and run_cli(lambda argv: None) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_cli(lambda argv: 1 / 0)
    monkeypatch.setenv("RANK", "1")  # the other processes of a distributed run stop without a word
    assert run_cli(bad) == EXIT_ERROR and capsys.readouterr().err == ""


def test_a_full_disk_is_one_line_whoever_writes(capsys):
    """Python's OSError and safetensors' own error for a failed write (it is no OSError) are both one
    line that says the disk is full; safetensors' other errors are bugs and keep their traceback."""
    import errno

    from safetensors import SafetensorError

    def raises(error):
        def main(argv):
            raise error

        return main

    full = "Error while serializing: I/O error: No space left on device (os error 28)"
    for error in (OSError(errno.ENOSPC, "No space left on device"), SafetensorError(full)):
        assert run_cli(raises(error)) == EXIT_ERROR
        line = capsys.readouterr().err
        assert line.count("\n") == 1 and "No space left on device" in line
        assert line.endswith("the disk is full; free some space or write to another disk\n")
    with pytest.raises(SafetensorError):
        run_cli(raises(SafetensorError("Error while deserializing header: HeaderTooLarge")))


def test_signals_deferred_acts_on_sigterm_after_the_block():
    """SIGTERM inside the block (sent from another thread, as the kernel may pick any) reaches the
    script's handler only when the block ends; the renames inside all happen."""
    import signal
    import threading

    from modeling_gpt_scratch.cli import signals_deferred

    seen, done = [], []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(len(done)))
    try:
        with signals_deferred():
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
            sender.start()
            sender.join()
            time.sleep(0.05)
            done.append("first rename")
            done.append("second rename")
        assert seen == [2]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_is_an_interrupt_and_the_handler_is_restored(capsys):
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def main(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first

    assert run_cli(main) == EXIT_INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) == before


def test_parser_mistakes_are_cli_errors():
    parser = ArgumentParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(CLIError, match=r"argument --n: invalid int value: 'many' \(see --help\)"):
        parser.parse_args(["--n", "many"])
    with pytest.raises(CLIError, match="unrecognized arguments: --bogus"):
        parser.parse_args(["--bogus"])
    assert isinstance(parser, argparse.ArgumentParser)


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (math.inf, {"above": 0}, "--x must be a finite number, got inf"),
        (math.nan, {"at_least": 0}, "--x must be a finite number, got nan"),
        (0, {"at_least": 1}, "--x must be at least 1, got 0"),
        (0.0, {"above": 0}, "--x must be above 0, got 0.0"),
        (1.5, {"at_most": 1}, "--x must be at most 1, got 1.5"),
        (100.0, {"below": 100}, "--x must be below 100, got 100.0"),
    ],
)
def test_check_number_refuses(value, bounds, message):
    with pytest.raises(CLIError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_number("--x", value, **bounds)


def test_check_number_passes():
    assert check_number("--x", None, at_least=1) is None  # not given
    assert check_number("--x", 1, at_least=1, below=2) == 1
    assert check_number("--x", 0.5, above=0, at_most=1) == 0.5


def test_output_checks(tmp_path):
    check_output_dir(tmp_path / "new", False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CLIError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("a")
    with pytest.raises(CLIError, match="already holds files: pass --overwrite_output_dir"):
        check_output_dir(full, False)
    check_output_dir(full, True)
    (full / "a").unlink()
    (full / LOCK_FILE).write_text("")
    check_output_dir(full, False, ignore=[LOCK_FILE])  # a lock left by an earlier run does not count
    model = tmp_path / "model"
    model.mkdir()
    for output in (model, model / "inside", tmp_path):  # the input itself, a folder in it, or around it
        with pytest.raises(CLIError, match="is where the input"):
            check_output_dir(output, True, inputs=[str(model)])
    check_output_dir(tmp_path / "other", True, inputs=[str(model), None, "hub/id"])


def test_publish_into_puts_config_last_and_keeps_the_rest(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text("old")
    (folder / "model.safetensors").write_text("old")
    with publish_into(folder) as tmp:
        assert tmp.parent == folder and not any(tmp.iterdir())
        (tmp / "config.json").write_text("new")
        (tmp / "model.safetensors").write_text("new")
        (tmp / "tokenizer.json").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoints", "config.json", "model.safetensors", "tokenizer.json"
    ]  # fmt: skip
    assert {p.read_text() for p in folder.iterdir() if p.is_file()} == {"new"}

    # Interrupted while moving files: the old config is gone before any new file lands, and the new
    # config comes last, so the folder is never an old config with new weights.
    moved = []
    real_replace = os.replace

    def replace(src, dst):
        moved.append(os.path.basename(dst))
        if os.path.basename(dst) == "model.safetensors":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), publish_into(folder) as tmp:
        (tmp / "config.json").write_text("newer")
        (tmp / "model.safetensors").write_text("newer")
    assert moved == ["model.safetensors"]
    assert not (folder / "config.json").exists()  # not a model: no half of each
    assert not [p for p in folder.iterdir() if p.name.startswith(".saving-")]

    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(RuntimeError), publish_into(folder) as tmp:  # a failed save changes nothing
        (tmp / "config.json").write_text("broken")
        raise RuntimeError
    assert (folder / "model.safetensors").read_text() == "new"
    assert not [p for p in folder.iterdir() if p.name.startswith(".saving-")]


def test_one_writer_per_output_folder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from modeling_gpt_scratch.cli import lock_output_dir; "
         f"h = lock_output_dir({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CLIError, match="another process is writing into"):
            lock_output_dir(tmp_path, "pretrain.py")
    finally:
        holder.kill()
        holder.wait()
    handle = lock_output_dir(tmp_path)  # free again once the holder is gone, however it ended
    handle.close()


def test_write_json_is_whole_or_absent_and_refuses_nan(tmp_path):
    path = tmp_path / "log.json"
    write_json(path, {"loss": 1.5})
    assert json.loads(path.read_text()) == {"loss": 1.5}
    with pytest.raises(ValueError):
        write_json(path, {"loss": math.nan})
    assert json.loads(path.read_text()) == {"loss": 1.5} and [p.name for p in tmp_path.iterdir()] == [
        "log.json"
    ]
