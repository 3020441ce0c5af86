"""The README works as written: every command names a script, file, `make` target and flag that exist,
and every Python snippet that needs no network or earlier outputs runs.

A snippet that needs something a fresh clone does not have (a Hub repo, a model folder an earlier
command writes) is marked by a `<!-- readme-test: compile-only -->` line right above its block; it is
still compiled, so a syntax error or a renamed import fails here too.
"""

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"(?P<mark><!-- readme-test: compile-only -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
SCRIPT_DIRS = ("examples/", "conversion/", "benchmarks/")
# Programs the README tells users to run that are not ours (and need what a fresh clone has not).
FOREIGN = {"ollama", "pip", "git", "cd", "export", "hf", "curl", "vllm", "echo", "python3 -m", "transformers"}


def blocks(lang):
    return [(m["body"], bool(m["mark"])) for m in BLOCK.finditer(README) if m["lang"] == lang]


def shell_commands():
    """Every command of the README's bash blocks: continuation lines joined, comments dropped, split
    at `&&`, `;` and `|`."""
    for body, _ in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command = []
            for word in words + ["&&"]:
                if word in ("&&", ";", "|", "||"):
                    if command:
                        yield command
                    command = []
                else:
                    command.append(word)


@functools.cache
def help_text(script: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, "-m", script] if not script.endswith(".py") else [sys.executable, script]
    out = subprocess.run(
        [*cmd, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert out.returncode == 0, f"`{script} --help` failed:\n{out.stderr[-2000:]}"
    return out.stdout


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def check_command(words: list[str]) -> None:
    program = words[0]
    if program == "make":
        for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
            assert target in make_targets(), f"`make {target}`: no such target in the Makefile"
        return
    if program in (".", "source", "bash", "sh"):
        path = words[1]
        assert (ROOT / path).exists() or path.startswith(".venv"), (
            f"`{' '.join(words)}`: {path} does not exist"
        )
        return
    if program in FOREIGN or " ".join(words[:2]) in FOREIGN:
        return
    # python SCRIPT ..., python -m MODULE ..., accelerate launch [--opts] SCRIPT ..., torchrun [--opts] SCRIPT ...
    if words[:2] == ["python", "-m"]:
        script, rest = words[2], words[3:]
        if script.startswith("modeling_gpt_scratch"):
            # a sub-command (`push`) comes first; check the flags against that sub-command's help
            script_help = help_text(script)
            flags = [w.split("=")[0] for w in rest if w.startswith("--")]
            for flag in flags:
                assert flag in script_help or flag in sub_help(script, rest), f"{script}: no option {flag}"
        return
    scripts = [i for i, w in enumerate(words) if w.endswith(".py") and w.startswith(SCRIPT_DIRS)]
    assert scripts, (
        f"`{' '.join(words)}`: the README runs no script of ours here; add it to FOREIGN if it is meant"
    )
    i = scripts[0]
    script = words[i]
    assert (ROOT / script).exists(), f"{script} does not exist"
    for w in words[:i]:  # launcher options that name files, e.g. accelerate's --config_file
        if w.endswith((".yaml", ".json")):
            assert (ROOT / w).exists(), f"{w} does not exist"
    text = help_text(script)
    for word in words[i + 1 :]:
        if word.startswith("--"):
            flag = word.split("=")[0]
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", text), f"`{script}` has no option {flag}"


def sub_help(module: str, rest: list[str]) -> str:
    sub = next((w for w in rest if not w.startswith("-")), None)
    return help_text(f"{module} {sub}") if sub else ""


def test_readme_has_commands_and_snippets():
    assert len(list(shell_commands())) >= 10
    assert blocks("python")


@pytest.mark.parametrize("words", list(shell_commands()), ids=lambda w: " ".join(w)[:60])
def test_readme_command_exists(words):
    check_command(words)


@pytest.mark.parametrize(
    "index", range(len(blocks("python"))), ids=lambda i: blocks("python")[i][0].splitlines()[0][:50]
)
def test_readme_python_snippet(index, tmp_path):
    body, compile_only = blocks("python")[index]
    compile(body, f"README.md python block {index}", "exec")
    if compile_only:
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run(
        [sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"README python block {index} failed:\n{body}\n{out.stderr[-3000:]}"


def make_dry_run(target: str) -> str:
    """What `make TARGET` would run on a machine without the virtual environment (`make -n -B`)."""
    return subprocess.run(
        ["make", "-n", "-B", target, "VENV=/nonexistent-venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_demo_installs_no_tensorflow():
    """`make demo` sets up only what the demo needs; TensorFlow comes with `make test` alone."""
    dry = make_dry_run("demo")
    installs = [line for line in dry.splitlines() if "pip install" in line]
    assert any("-e ." in line for line in installs), dry
    assert not any("tensorflow" in line or "test-tf" in line or "[" in line for line in installs), installs
    test = make_dry_run("test")
    assert "test-tf" in test
