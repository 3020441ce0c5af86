"""The output folders of every converter (modeling_gpt_scratch.cli.atomic_output_dir) and their exit
codes (run_cli): a conversion that fails or is interrupted at any point leaves no output behind, and
with --overwrite the old output stays whole until the new one is complete."""

import os
import sys

import pytest

from modeling_gpt_scratch import cli
from modeling_gpt_scratch.cli import CLIError, atomic_output_dir, run_cli


def test_atomic_output_dir_cleans_up(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "half-written").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # the parents it made are gone too

    with atomic_output_dir(out) as tmp:
        (tmp / "done").write_text("x")
    assert [p.name for p in out.parent.iterdir()] == ["out"] and (out / "done").read_text() == "x"
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's private 0700


def _faulty_replace(monkeypatch, fail_at: int, fault: BaseException, after: bool):
    """`os.replace` as atomic_output_dir sees it, failing at its `fail_at`-th call (1: the old output
    moved aside, 2: the new one moved into place), before or after the rename happened."""
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == fail_at and not after:
            raise fault
        real(src, dst)
        if len(calls) == fail_at and after:
            raise fault

    monkeypatch.setattr(cli.os, "replace", replace)
    monkeypatch.setattr(cli, "exchange", lambda a, b: False)  # the two renames of systems without it
    return calls


@pytest.mark.parametrize(
    ("fail_at", "after", "kept"),
    [
        (1, False, "old"),  # the old folder cannot be moved aside
        (1, True, "old"),  # interrupted between the two renames: the old folder is put back
        (2, False, "old"),  # the new folder cannot be moved into place
        (2, True, "new"),  # interrupted once the new folder is in place: the swap is complete
    ],
)
@pytest.mark.parametrize("fault", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_overwrite_interrupted_during_the_swap(fail_at, after, kept, fault, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("the earlier output")
    calls = _faulty_replace(monkeypatch, fail_at, fault, after)
    with pytest.raises(type(fault)), atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("the new output")
    assert len(calls) >= fail_at  # (putting the old folder back is one more)
    expected = {"old": {"old.txt": "the earlier output"}, "new": {"new.txt": "the new output"}}[kept]
    assert {p.name: p.read_text() for p in out.iterdir()} == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # neither the new nor the old one left aside


def test_overwrite_swaps_in_one_step_where_the_system_can(tmp_path, monkeypatch):
    """Where the system swaps two folders in one step (Linux), the old output is never moved aside on
    its own: no instant leaves `out` missing, so kill -9 anywhere finds the old folder or the new one.
    Elsewhere `exchange` says so and moves nothing (the two renames above are used)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "name").write_text(folder.name)
    swapped = cli.exchange(a, b)
    assert (a / "name").read_text() == ("b" if swapped else "a")
    assert swapped or not sys.platform.startswith("linux")

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("the earlier output")
    renames = []
    monkeypatch.setattr(cli.os, "replace", lambda *args: renames.append(args) or os.rename(*args))
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("the new output")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"new.txt": "the new output"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]
    assert len(renames) == (0 if swapped else 2)


def test_overwrite_of_an_empty_folder_interrupted(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _faulty_replace(monkeypatch, 1, KeyboardInterrupt(), after=False)
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("x")
    assert out.is_dir() and list(tmp_path.iterdir()) == [out] and not any(out.iterdir())


def test_run_cli_exit_codes(capfd):
    def fails(message):
        def main(argv):
            raise message

        return main

    assert run_cli(lambda argv: None) == 0
    assert run_cli(fails(CLIError("bad\ninput\n  here"))) == 1
    assert capfd.readouterr().err == "error: bad input here\n"
    assert run_cli(fails(FileNotFoundError(2, "No such file or directory", "x.bin"))) == 1
    assert "x.bin" in capfd.readouterr().err
    assert run_cli(fails(KeyboardInterrupt())) == 130
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_cli(fails(ZeroDivisionError("bug")))
