"""examples/pretrain.py with 2 processes on CPU over gloo, launched as users launch it: DDP with torchrun
and FSDP2 with `accelerate launch --config_file examples/accelerate_configs/fsdp.yaml`. Both must give
the losses of one process with the same global batch, and a model folder that from_pretrained loads.

Every case asserts the world size it asked for: on CPU some launch flags quietly start one process,
or two that never talk to each other (../shared/docs/facts.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_script, script_env, start_script
from transformers import AutoModelForCausalLM

import modeling_gpt_scratch  # noqa: F401  (registers the model with the Auto classes)

PRETRAIN = REPO / "examples" / "pretrain.py"
CONFIGS = REPO / "examples" / "accelerate_configs"
TIMEOUT = 420

# Dropout off: each process draws its own dropout masks, so only a dropout-free run can equal one process.
MODEL = [
    "--config_name",
    "tiny",
    "--config_overrides",
    "emb_dim=32,n_layers=2,n_heads=2,context_length=32,drop_rate=0.0",
]
TRAIN = [
    "--max_train_steps",
    6,
    "--eval_steps",
    3,
    "--max_new_tokens",
    5,
    "--eval_iters",
    2,
    "--learning_rate",
    1e-2,  # large enough that a wrong gradient would show in the losses at once
    "--checkpointing_steps",
    3,
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = script_env(tmp_path_factory)
    # Where no GPU is, pretrain.py asks Accelerate for cpu=True itself; this makes it explicit.
    env["ACCELERATE_USE_CPU"] = "1"
    for name in [n for n in env if n.startswith(("ACCELERATE_", "FSDP_")) and n != "ACCELERATE_USE_CPU"]:
        del env[name]  # only what the launcher under test sets
    return env


@pytest.fixture(scope="module")
def data(shared_data):
    return ["--train_file", shared_data / "the-verdict" / "the-verdict.txt"]


def run(env, launcher, *args):
    result = run_script(PRETRAIN, *args, env=env, timeout=TIMEOUT, launcher=launcher)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def log_of(folder):
    return json.loads((Path(folder) / "training_log.json").read_text())


ONE_PROCESS = [sys.executable]
ONE_PROCESS_BATCH = ["--gradient_accumulation_steps", 2, "--per_device_eval_batch_size", 4]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE_FSDP = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--config_file",
    str(CONFIGS / "fsdp.yaml"),
    "--num_processes",
    "2",
    "--main_process_port",
    "0",
]


@pytest.fixture(scope="module")
def reference(env, data, tmp_path_factory):
    """One process, 2 windows x 2 accumulated batches: the global batch of 2 processes x 2 windows
    (and evaluation batches of 4, as 2 processes x 2)."""
    out = tmp_path_factory.mktemp("one_process") / "run"
    run(env, ONE_PROCESS, *MODEL, *TRAIN, *data, "--output_dir", out, *ONE_PROCESS_BATCH)
    log = log_of(out)
    assert log["world_size"] == 1
    return out, log


def assert_same_run(log, ref, tol=2e-5):
    assert len(log["step_losses"]) == len(ref["step_losses"]) == 6
    assert log["step_losses"] == pytest.approx(ref["step_losses"], abs=tol)
    assert ref["step_losses"][-1] < ref["step_losses"][0] - 0.3  # the weights really move
    for ours, theirs in zip(log["evals"], ref["evals"], strict=True):
        assert ours["step"] == theirs["step"] and ours["tokens_seen"] == theirs["tokens_seen"]
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=tol)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], abs=tol)


def assert_same_model(folder, ref_folder, tol=1e-3):
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ref = AutoModelForCausalLM.from_pretrained(ref_folder).eval()
    assert type(model).__name__ == "GPTScratchForCausalLM"
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["architectures"] == ["GPTScratchForCausalLM"]
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    ids = torch.arange(100, 132)[None]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=tol)


def test_ddp_with_torchrun_gives_the_losses_of_one_process(env, data, reference, tmp_path):
    out = tmp_path / "ddp"
    result = run(env, TORCHRUN, *MODEL, *TRAIN, *data, "--output_dir", out)
    log = log_of(out)
    assert log["world_size"] == 2 and log["distributed_type"] == "MULTI_CPU", result.stdout
    assert "world size 2 (MULTI_CPU)" in result.stdout
    assert_same_run(log, reference[1])
    assert_same_model(out, reference[0])
    # Checkpoints hold the plain model's weights (no DDP `module.` prefix): one process can resume them.
    from safetensors import safe_open

    with safe_open(out / "checkpoints" / "step_3" / "model.safetensors", "pt") as f:
        assert not any(k.startswith("module.") for k in f.keys())


def test_fsdp2_with_accelerate_launch_gives_the_losses_of_one_process(env, data, reference, tmp_path):
    out = tmp_path / "fsdp"
    result = run(env, ACCELERATE_FSDP, *MODEL, *TRAIN, *data, "--output_dir", out)
    log = log_of(out)
    assert log["world_size"] == 2 and log["distributed_type"] == "FSDP" and log["fsdp2"], result.stdout
    assert "world size 2 (FSDP, FSDP2)" in result.stdout
    assert_same_run(log, reference[1])
    # Sharded checkpoints: one file per process, written by torch.distributed.checkpoint.
    checkpoint = out / "checkpoints" / "step_3"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir()
    assert sorted(p.name for p in (checkpoint / "optimizer_0").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    # The final save gathered the full model into an ordinary folder.
    assert not list(out.glob("_fsdp*.py"))
    assert_same_model(out, reference[0])


@pytest.mark.slow
def test_fsdp2_resume_gives_the_losses_of_an_uninterrupted_run(env, data, reference, tmp_path):
    out = tmp_path / "fsdp"
    run(env, ACCELERATE_FSDP, *MODEL, *TRAIN, *data, "--output_dir", out, "--stop_after_steps", 4)
    assert log_of(out)["global_step"] == 4 and not log_of(out)["finished"]
    run(
        env, ACCELERATE_FSDP, *MODEL, *TRAIN, *data, "--output_dir", out, "--resume_from_checkpoint", "latest"
    )
    log = log_of(out)
    assert log["world_size"] == 2 and log["fsdp2"] and log["finished"]
    assert_same_run(log, reference[1])


@pytest.mark.slow
def test_ddp_with_accelerate_launch_config(env, data, reference, tmp_path):
    """examples/accelerate_configs/ddp.yaml (distributed_type MULTI_GPU) on a machine without GPUs."""
    out = tmp_path / "ddp"
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "ddp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        "0",
    ]
    env = {k: v for k, v in env.items() if k != "ACCELERATE_USE_CPU"}  # pretrain.py sees no GPU by itself
    run(env, launcher, *MODEL, *TRAIN, *data, "--output_dir", out)
    log = log_of(out)
    assert log["world_size"] == 2 and log["distributed_type"] == "MULTI_CPU"
    assert_same_run(log, reference[1])


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_in_one_process(env, data, reference, tmp_path):
    out = tmp_path / "ddp"
    run(env, TORCHRUN, *MODEL, *TRAIN, *data, "--output_dir", out, "--stop_after_steps", 3)
    assert log_of(out)["world_size"] == 2
    result = run(
        env,
        ONE_PROCESS,
        *MODEL,
        *TRAIN,
        *data,
        "--output_dir",
        out,
        *ONE_PROCESS_BATCH,
        "--resume_from_checkpoint",
        "latest",
    )
    assert "world_size was 2 in the checkpoint, 1 now" in result.stdout
    log = log_of(out)
    assert log["world_size"] == 1
    assert_same_run(log, reference[1])


@pytest.mark.slow
def test_multi_node_config_with_two_machines_on_localhost(env, data, reference, tmp_path):
    """examples/accelerate_configs/multi_node.yaml, as two 'machines' of one process each on this one."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "multi"
    args = [*MODEL, *TRAIN, *data, "--output_dir", out]
    procs = []
    for machine_rank in (0, 1):
        launcher = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(CONFIGS / "multi_node.yaml"),
            "--num_processes",
            "2",
            "--machine_rank",
            str(machine_rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
        ]
        procs.append(start_script(PRETRAIN, *args, env=env, launcher=launcher, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    log = log_of(out)
    assert log["world_size"] == 2 and log["distributed_type"] == "MULTI_CPU"
    assert_same_run(log, reference[1])
