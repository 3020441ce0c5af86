"""Fault injection: kill -9 and SIGTERM at chosen points of every save, a full disk, two writers, a
checkpoint whose files would run code, networks that never answer, and bad data. Faults come from
tests/faults/sitecustomize.py (`fault_env`: a signal at the N-th rename or deletion of a given path, or
a full disk under a folder) and `kill_when` (a signal the moment a file appears)."""

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import (
    REPO,
    cli_error,
    fails_cleanly,
    fault_env,
    kill_when,
    load_example,
    ok,
    run_script,
    script_env,
    start_script,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM, training
from modeling_gpt_scratch.cli import CLIError
from modeling_gpt_scratch.tokenization import load_tokenizer

PRETRAIN = REPO / "examples" / "pretrain.py"
CLASSIFIER = REPO / "examples" / "finetune_classifier.py"
CONVERT_HF = REPO / "conversion" / "convert_hf_gpt2.py"
SMALL_OVERRIDES = "emb_dim=32,n_layers=2,n_heads=2,context_length=32"
SMALL = ["--config_name", "tiny", "--config_overrides", SMALL_OVERRIDES]
QUIET = ["--max_new_tokens", "5", "--eval_iters", "1", "--eval_steps", "100"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = script_env(tmp_path_factory)
    env["GPT_SCRATCH_CACHE"] = str(tmp_path_factory.mktemp("empty_data_cache"))
    return env


@pytest.fixture(scope="module")
def verdict(shared_data):
    return shared_data / "the-verdict" / "the-verdict.txt"


def killed(result_or_proc, sig):
    code = result_or_proc.returncode
    assert code == -sig, (code, getattr(result_or_proc, "stderr", ""))


# ------------------------------------------------------------------- checkpoints: complete or invisible
class FakeAccelerator:
    """What save_checkpoint asks of Accelerate, writing `files` (name -> text) as the state."""

    is_main_process = True

    def __init__(self, files):
        self.files = files

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        os.makedirs(folder)
        for name, text in self.files.items():
            Path(folder, name).write_text(text)

    def unwrap_model(self, model, keep_torch_compile=False):
        return model


def assert_visible_checkpoints_whole(root, names):
    """Every checkpoint `latest` could pick holds all its files, all of one save."""
    for _, folder in training.complete_checkpoints(root):
        versions = {(folder / name).read_text() if (folder / name).exists() else None for name in names}
        assert len(versions) == 1 and None not in versions, (folder, versions)


@pytest.mark.parametrize("swap_in_one_step", [True, False])
def test_a_checkpoint_is_whole_or_invisible_at_every_instant_of_a_resave(
    tmp_path, monkeypatch, swap_in_one_step
):
    """Re-saving step_8 (and pruning step_4 with keep=1), the folders are checked before every rename
    and after every single file deleted: no instant shows a checkpoint that is torn or mixes saves.
    (Deleting the old step_8 in place, file by file, would show one that lacks its weights.)"""
    names = ["model.safetensors", "optimizer.bin", "random_states_0.pkl"]
    model = SimpleNamespace(config=GPTScratchConfig.from_preset("tiny"))

    def save(step, version, keep=None):
        accelerator = FakeAccelerator({name: f"{version}" for name in names})
        training.save_checkpoint(accelerator, model, tmp_path, step, {"global_step": step}, keep)

    save(4, "v1")
    save(8, "v1")
    real_unlink, real_replace, real_exchange = Path.unlink, os.replace, training.exchange
    checks = []

    def check():
        checks.append(1)
        assert_visible_checkpoints_whole(tmp_path, names)

    def rmtree(
        path, ignore_errors=False
    ):  # file by file in name order (the weights before the state), looking after each
        files = sorted(Path(path).rglob("*")) if Path(path).exists() else []
        for file in [f for f in files if not f.is_dir()] + [d for d in reversed(files) if d.is_dir()]:
            (file.rmdir if file.is_dir() else file.unlink)()
            check()
        if Path(path).exists():
            Path(path).rmdir()

    monkeypatch.setattr(training.shutil, "rmtree", rmtree)
    monkeypatch.setattr(training.os, "replace", lambda a, b: (check(), real_replace(a, b), check()))
    monkeypatch.setattr(Path, "unlink", lambda p, missing_ok=False: (real_unlink(p, missing_ok), check()))
    monkeypatch.setattr(
        training,
        "exchange",
        (lambda a, b: (check(), real_exchange(a, b), check())[1])
        if swap_in_one_step
        else (lambda a, b: False),
    )
    save(8, "v2", keep=1)
    monkeypatch.undo()
    assert len(checks) > 10
    assert [step for step, _ in training.complete_checkpoints(tmp_path)] == [8]
    assert (tmp_path / "checkpoints" / "step_8" / "model.safetensors").read_text() == "v2"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_8"]


@pytest.fixture(scope="module")
def reference_run(env, verdict, tmp_path_factory):
    """6 steps with a checkpoint every 2 (step_2, step_4, step_6): the losses an interrupted run must
    give again."""
    out = tmp_path_factory.mktemp("reference") / "run"
    args = [*SMALL, *QUIET, "--train_file", verdict, "--checkpointing_steps", 2]
    ok(run_script(PRETRAIN, *args, "--output_dir", out, "--stop_after_steps", 6, env=env))
    return args, out, json.loads((out / "training_log.json").read_text())["step_losses"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("call", "path", "resumes_at", "note"),
    [
        ("replace", ".step_4.tmp/training_state.json", 4, False),  # the re-save of step_4 not finished
        ("unlink", ".step_4.tmp/training_state.json", 4, False),  # swapped in; the old one not yet deleted
        ("replace", ".step_6.tmp/training_state.json", 4, True),  # the first save of step_6 not finished
    ],
)
def test_kill_9_during_a_checkpoint_save(env, reference_run, tmp_path, call, path, resumes_at, note):
    """kill -9 while re-saving step_4 (resumed from step_2) or first saving step_6: `latest` then
    resumes from a complete checkpoint, says when it skips an interrupted one, and the run goes on
    with exactly the losses of an uninterrupted run."""
    args, reference, losses = reference_run
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints" / "step_6")
    faulty = fault_env(env, signal_at=call, path=path, nth=1, signal=signal.SIGKILL)
    resume = ["--output_dir", out, "--stop_after_steps", 6]
    result = run_script(
        PRETRAIN, *args, *resume, "--resume_from_checkpoint", out / "checkpoints" / "step_2", env=faulty
    )
    killed(result, signal.SIGKILL)
    assert_complete_checkpoints_load(out)
    stdout = ok(run_script(PRETRAIN, *args, *resume, "--resume_from_checkpoint", "latest", env=env))
    assert f"Resumed from {out / 'checkpoints' / f'step_{resumes_at}'} at step {resumes_at}" in stdout
    assert ("note: skipping .step_6.tmp" in stdout) == note, stdout
    assert json.loads((out / "training_log.json").read_text())["step_losses"] == pytest.approx(
        losses, abs=1e-6
    )


def assert_complete_checkpoints_load(out):
    for _, folder in training.complete_checkpoints(out):
        training.check_no_code(folder)  # every pickled file whole
        from safetensors.torch import load_file

        assert load_file(folder / "model.safetensors")


# --------------------------------------------------------------------------- final saves: old or new
def old_model(folder, seed=0):
    """A complete model folder (weights, config, tokenizer) to be overwritten."""
    torch.manual_seed(seed)
    config = GPTScratchConfig.from_preset("tiny", emb_dim=32, n_layers=2, n_heads=2, context_length=32)
    GPTScratchForCausalLM(config).save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json")}


def assert_old_or_new_model(folder, old):
    """No config.json (no model at all), or a whole model: config, weights and tokenizer that load.
    Returns "old", "new" or "none"."""
    if not (folder / "config.json").exists():
        return "none"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder)("Every effort").input_ids == [6109, 3626]
    weights = (folder / "model.safetensors").read_bytes()
    if weights == old["model.safetensors"]:
        assert (folder / "config.json").read_bytes() == old["config.json"]
        return "old"
    assert model.config.vocab_size == 50257
    return "new"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "nth", "expected"),
    [
        (signal.SIGTERM, 1, {"new"}),  # during the swap: it finishes, then the run stops
        (signal.SIGKILL, 1, {"none"}),  # after the old config.json went: no model, never a mix
        (signal.SIGKILL, 99, {"old", "none", "new"}),  # (a kill as soon as the temporary folder appears)
    ],
)
def test_signal_during_pretrainings_final_save(env, verdict, tmp_path, sig, nth, expected):
    out = tmp_path / "run"
    old = old_model(out)
    args = [*SMALL, *QUIET, "--train_file", verdict, "--output_dir", out, "--overwrite_output_dir"]
    args += ["--max_train_steps", 2]
    if nth == 99:
        proc = start_script(PRETRAIN, *args, env=env)
        assert kill_when(proc, out / ".saving-*", sig)
        proc.communicate(timeout=120)
    else:
        proc = run_script(
            PRETRAIN, *args, env=fault_env(env, signal_at="replace", path=".saving-", nth=nth, signal=sig)
        )
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), proc.stderr
    assert assert_old_or_new_model(out, old) in expected


@pytest.fixture(scope="module")
def sms_env(env, shared_data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("data_cache")
    (cache / "sms_spam_collection").mkdir()
    shutil.copy(shared_data / "sms_spam_collection" / "SMSSpamCollection", cache / "sms_spam_collection")
    return {**env, "GPT_SCRATCH_CACHE": str(cache)}


CLASSIFIER_ARGS = ["--max_steps", 2, "--disable_tqdm", "true", "--use_cpu", "--report_to", "none"]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGTERM, {"new"}), (signal.SIGKILL, {"none"})])
def test_signal_during_a_fine_tuning_final_save(sms_env, tmp_path, sig, expected):
    base, out = tmp_path / "base", tmp_path / "out"
    old_model(base)
    old = old_model(out, seed=1)
    args = ["--model_name_or_path", base, "--output_dir", out, "--overwrite_output_dir", *CLASSIFIER_ARGS]
    faulty = fault_env(sms_env, signal_at="replace", path=".saving-", nth=1, signal=sig)
    result = run_script(CLASSIFIER, *args, env=faulty)
    assert result.returncode == (-9 if sig == signal.SIGKILL else 130), result.stderr[-3000:]
    if (out / "config.json").exists():
        from transformers import AutoModelForSequenceClassification

        AutoModelForSequenceClassification.from_pretrained(out)
        assert (out / "model.safetensors").read_bytes() != old["model.safetensors"]
        assert (out / "tokenizer.json").exists()
        assert {"new"} == expected
    else:
        assert {"none"} == expected


# ------------------------------------------------------------------------------- converters
@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 (GPT-2's vocabulary, so GPT-2's tokenizer goes with it) to convert."""
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
    return folder


def converted(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("when", ["writing", "swapping", "deleting the old one"])
def test_signal_during_a_converters_overwrite(env, gpt2_folder, tmp_path, sig, when):
    """kill -9 or SIGTERM while a converter with --overwrite writes, swaps in its output, or deletes the
    old one: the output is the old folder or the new one, whole. After SIGTERM nothing is left beside it."""
    out = tmp_path / "out"
    ok(run_script(CONVERT_HF, "--input", gpt2_folder, "--output", out, env=env))
    (out / "old-marker").write_text("the old output")
    old = converted(out)
    args = ["--input", gpt2_folder, "--output", out, "--overwrite"]
    if when == "writing":
        proc = start_script(CONVERT_HF, *args, env=env)
        assert kill_when(proc, tmp_path / ".out.tmp-*" / "config.json", sig)
        proc.communicate(timeout=120)
    else:
        # The swap is one rename(2) call (or two where the system cannot swap); the old folder is
        # deleted next: signal at the first deletion of a file of it.
        call, path = ("unlink", "old-marker") if when.startswith("deleting") else ("replace", ".out.")
        faulty = fault_env(env, signal_at=call, path=path, nth=1, signal=sig)
        proc = run_script(CONVERT_HF, *args, env=faulty)
        if call == "replace" and proc.returncode == 0:  # one-step swap: no rename to signal at
            assert converted(out).keys() == old.keys() - {"old-marker"}
            return
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), proc.stderr
    now = converted(out)
    assert now == old or (now.keys() == old.keys() - {"old-marker"} and "config.json" in now)
    AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    if sig == signal.SIGTERM:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------------------------- full disk
def test_full_disk_converter_is_one_line_and_leaves_nothing(env, gpt2_folder, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    result = run_script(
        CONVERT_HF, "--input", gpt2_folder, "--output", disk / "out", env=fault_env(env, full_disk=str(disk))
    )
    fails_cleanly(result, "No space left on device")
    assert "the disk is full" in result.stderr
    assert list(disk.iterdir()) == []


@pytest.mark.slow
def test_full_disk_classifier_is_one_line_and_leaves_nothing(sms_env, tmp_path):
    base, disk = tmp_path / "base", tmp_path / "disk"
    old_model(base)
    disk.mkdir()
    args = ["--model_name_or_path", base, "--output_dir", disk / "out", *CLASSIFIER_ARGS]
    result = run_script(CLASSIFIER, *args, env=fault_env(sms_env, full_disk=str(disk / "out")))
    line = fails_cleanly(result, "No space left on device")
    assert "the disk is full" in line
    out = disk / "out"
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert [p for p in out.rglob("*") if p.name.startswith(".saving-")] == []


# ------------------------------------------------------------------------- resuming runs no code
class CreatesFile:
    """Unpickled, it calls `open(marker, "w")`: code from a checkpoint that leaves a trace."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def accelerate_checkpoint(folder):
    """A checkpoint as pretrain.py's Accelerate writes one (weights, optimizer, scheduler, random
    states, a registered object), in this process."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    accelerator.register_for_checkpointing(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    accelerator.save_state(str(folder))
    return sorted(p.name for p in folder.iterdir())


def distcp_checkpoint(folder, state):
    """A torch.distributed.checkpoint folder (FSDP's format: `.metadata` and `.distcp` files)."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=str(folder))


def test_every_file_a_checkpoint_holds_is_read_without_running_code(tmp_path):
    """A payload in each kind of file a checkpoint holds (Accelerate's pickles and FSDP's `.metadata`
    and `.distcp`) is refused before anything runs; the clean files pass."""
    clean = tmp_path / "clean"
    names = accelerate_checkpoint(clean)
    assert {"optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"} <= set(names)
    optimizer_state = {
        "state": {"w": {"step": torch.tensor(3.0)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99)}],
    }
    distcp_checkpoint(clean / "optimizer_0", {"optimizer": optimizer_state, "w": torch.ones(3)})
    training.check_no_code(clean)
    marker = tmp_path / "code-ran"
    payload = {"state": CreatesFile(marker)}

    torch.save(payload, tmp_path / "proof.bin")  # the payload is real: unpickled freely, it runs
    torch.load(tmp_path / "proof.bin", weights_only=False)
    assert marker.exists()
    marker.unlink()

    pickled = [n for n in names if n.endswith((".bin", ".pkl"))]
    for name in [*pickled, "optimizer_0/.metadata", "optimizer_0/distcp-entry"]:
        bad = tmp_path / f"bad-{name.replace('/', '-')}"
        shutil.copytree(clean, bad)
        if name == "optimizer_0/.metadata":  # what torch.distributed.checkpoint reads with pickle.load
            (bad / name).write_bytes(pickle.dumps(CreatesFile(marker)))
        elif name == "optimizer_0/distcp-entry":  # a non-tensor entry: read with weights_only=False
            shutil.rmtree(bad / "optimizer_0")
            distcp_checkpoint(bad / "optimizer_0", {"optimizer": {"param_groups": [payload]}})
        else:
            torch.save(payload, bad / name)
        with pytest.raises(CLIError, match="holds more than tensors and numbers"):
            training.check_no_code(bad)
        assert not marker.exists(), name


@pytest.mark.slow
def test_resuming_a_checkpoint_with_a_payload_runs_no_code(env, reference_run, tmp_path):
    """The whole script: pretrain.py --resume_from_checkpoint of a checkpoint whose registered-object
    file would run code stops with one line, and the code never ran."""
    args, reference, _ = reference_run
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    marker = tmp_path / "code-ran"
    checkpoint = out / "checkpoints" / "step_4"
    torch.save({"payload": CreatesFile(marker)}, checkpoint / "custom_checkpoint_0.pkl")
    resume = ["--output_dir", out, "--resume_from_checkpoint", checkpoint, "--stop_after_steps", 6]
    fails_cleanly(
        run_script(PRETRAIN, *args, *resume, env=env), "custom_checkpoint_0.pkl holds more than tensors"
    )
    assert not marker.exists()


# ------------------------------------------------------------------------------ one writer per folder
def locked(path) -> bool:
    import fcntl

    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@pytest.mark.slow
def test_a_second_pretraining_into_the_same_new_folder_stops(env, verdict, tmp_path):
    """Two real pretrain.py runs into one new --output_dir: while the first holds the folder (paused
    the moment it takes the lock, so it has written nothing else yet), the second stops with one line
    before training; the first then finishes alone."""
    out = tmp_path / "run"
    args = [*SMALL, *QUIET, "--train_file", verdict, "--output_dir", out, "--max_train_steps", 2]
    first = start_script(PRETRAIN, *args, env=env)
    try:
        assert kill_when(first, out / ".writer.lock", signal.SIGSTOP)
        while not locked(out / ".writer.lock"):  # paused between creating the file and locking it
            first.send_signal(signal.SIGCONT)
            time.sleep(0.01)
            first.send_signal(signal.SIGSTOP)
        assert sorted(p.name for p in out.iterdir()) == [".writer.lock"]
        second = run_script(PRETRAIN, *args, env=env)
        fails_cleanly(second, f"another process is writing into {out} (pretrain.py)")
        assert "Ep 1" not in second.stdout
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=240)
    finally:
        first.send_signal(signal.SIGCONT)
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert json.loads((out / "training_log.json").read_text())["global_step"] == 2


# ------------------------------------------------------------------------------------------ networks
@pytest.fixture
def counting_server():
    """A server on 127.0.0.1 that counts the connections made to it and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.getsockname()[1]}", connections=held)
    server.close()
    for connection in held:
        connection.close()


def test_a_hub_push_to_a_server_that_never_answers_stops_by_itself(env, counting_server, tmp_path):
    folder = tmp_path / "model"
    old_model(folder)
    hub_env = {**env, "HF_ENDPOINT": counting_server.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test"}
    hub_env["GPT_SCRATCH_HUB_TIMEOUT"] = "1"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "modeling_gpt_scratch.hub", "push", str(folder), "tester/model"],
        env=hub_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    fails_cleanly(result, "the Hub did not answer within 1 s; GPT_SCRATCH_HUB_TIMEOUT=SECONDS waits longer")


@pytest.mark.parametrize("value", ["soon", "0", "inf", "nan"])
def test_a_bad_hub_timeout_is_named(value, monkeypatch):
    from modeling_gpt_scratch import hub

    monkeypatch.setenv("GPT_SCRATCH_HUB_TIMEOUT", value)
    with pytest.raises(CLIError, match=f"GPT_SCRATCH_HUB_TIMEOUT='{value}' must be a positive number"):
        hub.hub_timeout()


@pytest.mark.parametrize("where", ["nodir/x.json", "a-folder", "a-file/x.json"])
def test_an_unwritable_output_file_fails_before_judging_anything(where, counting_server, tmp_path, capsys):
    entries = [{"instruction": "Add", "input": "1+1", "output": "2", "model_response": "2"}]
    data = tmp_path / "responses.json"
    data.write_text(json.dumps(entries))
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    script = load_example("evaluate_responses")
    argv = ["--input_file", data, "--output_file", tmp_path / where, "--ollama_url", counting_server.url]
    line = cli_error(script.main, [*argv, "--timeout", 1, "--retries", 0], capsys)
    assert "--output_file" in line and str(tmp_path / where) in line
    assert counting_server.connections == []  # nothing was asked of the judge
    assert json.loads(data.read_text()) == entries


# ------------------------------------------------------------------------------------------ bad data
def write_file(path, text):
    path.write_text(text, encoding="utf-8")
    return path


EMPTY_TEXTS = "text,label\n,spam\n  ,ham\n,spam\n"
NULL_INSTRUCTION = [{"instruction": None, "input": "", "output": "x"}, {"instruction": "a", "output": "b"}]
NULL_OUTPUT = [
    {"instruction": "a", "input": "", "output": "b"},
    {"instruction": "a", "input": "", "output": None},
]
TINY = "emb_dim=32,n_layers=2,n_heads=2,context_length=64"
BAD_DATA = {
    "classifier-empty-texts": (
        "finetune_classifier",
        lambda d: ["--config_name", "tiny", "--train_file", write_file(d / "e.csv", EMPTY_TEXTS)],
        ["e.csv: example 1 has an empty 'text'"],
    ),
    "instruction-null-instruction": (
        "finetune_instruction",
        lambda d: [
            "--config_name",
            "tiny",
            "--train_file",
            write_file(d / "n.json", json.dumps(NULL_INSTRUCTION)),
        ],
        ['entry 0 "instruction" is null'],
    ),
    "instruction-null-output": (
        "finetune_instruction",
        lambda d: [
            "--config_name",
            "tiny",
            "--train_file",
            write_file(d / "n.json", json.dumps(NULL_OUTPUT)),
        ],
        ['entry 1 "output" is null'],
    ),
    "instruction-vocabulary-smaller-than-tokenizer": (
        "finetune_instruction",
        lambda d: [
            "--config_name",
            "tiny",
            "--config_overrides",
            f"{TINY},vocab_size=1000",
            "--train_file",
            write_file(d / "ok.json", json.dumps(NULL_OUTPUT[:1] * 10)),
        ],
        ["the tokenizer has 50257 tokens but the model's vocab_size is 1000"],
    ),
    "classifier-vocabulary-smaller-than-tokenizer": (
        "finetune_classifier",
        lambda d: ["--config_name", "tiny", "--config_overrides", f"{TINY},vocab_size=1000"],
        ["the tokenizer has 50257 tokens but the model's vocab_size is 1000"],
    ),
    "classifier-lora-dropout": (
        "finetune_classifier",
        lambda d: ["--config_name", "tiny", "--train_mode", "lora", "--lora_dropout", "1.5"],
        ["--lora_dropout must be below 1, got 1.5"],
    ),
    "instruction-lora-dropout": (
        "finetune_instruction",
        lambda d: ["--config_name", "tiny", "--use_lora", "--lora_dropout", "1.5"],
        ["--lora_dropout must be below 1, got 1.5"],
    ),
    "preference-lora-dropout": (
        "finetune_preference",
        lambda d: ["--config_name", "tiny", "--use_peft", "--lora_dropout", "1.5"],
        ["--lora_dropout must be below 1, got 1.5"],
    ),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_one_line_before_training(case, sms_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPT_SCRATCH_CACHE", sms_env["GPT_SCRATCH_CACHE"])
    script, argv, words = BAD_DATA[case]
    out = tmp_path / "out"
    argv = [*argv(tmp_path), "--output_dir", out, "--use_cpu", "--report_to", "none"]
    line = cli_error(load_example(script).main, argv, capsys)
    assert all(w in line for w in words), line
    assert not out.exists() or not any(out.iterdir())


def test_a_hub_push_of_a_config_that_is_not_an_object_is_one_line(tmp_path, capsys):
    from modeling_gpt_scratch import hub

    folder = tmp_path / "model"
    old_model(folder)
    (folder / "config.json").write_text("[]")
    line = cli_error(hub.main, ["push", folder, "tester/model"], capsys)
    assert "config.json holds a JSON list, not a model config" in line
