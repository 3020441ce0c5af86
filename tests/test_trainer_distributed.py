"""examples/finetune_classifier.py under `torch.distributed.run` with two CPU processes (DDP over gloo):
the Trainer reports the losses of one process with the same global batch."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_gpt_scratch.classification import read_sms_spam

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "finetune_classifier.py"
MODEL = [
    "--config_name",
    "tiny",
    "--config_overrides",
    "emb_dim=32,n_layers=2,n_heads=2,context_length=64,drop_rate=0.0",
]
RUN = ["--train_mode", "full", "--learning_rate", "1e-3", "--max_steps", "3", "--logging_steps", "1"]
RUN += ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
RUN += ["--disable_tqdm", "true", "--use_cpu", "--report_to", "none"]


def run(cmd, env, timeout=400):
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_processes_report_the_loss_of_one(shared_data, tmp_path):
    rows = read_sms_spam(shared_data / "sms_spam_collection" / "SMSSpamCollection")[:80]
    train_file = tmp_path / "sms.csv"
    with open(train_file, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    env = dict(
        os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1"
    )
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets")
    common = [*MODEL, *RUN, "--train_file", str(train_file)]

    run(
        [
            sys.executable,
            str(SCRIPT),
            *common,
            "--per_device_train_batch_size",
            "8",
            "--output_dir",
            str(tmp_path / "one"),
        ],
        env,
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = run(
        [
            *torchrun,
            str(SCRIPT),
            *common,
            "--per_device_train_batch_size",
            "4",
            "--output_dir",
            str(tmp_path / "two"),
        ],
        env,
    )
    assert "world size 2" in two.stdout

    one_log = json.loads((tmp_path / "one" / "classifier_results.json").read_text())
    two_log = json.loads((tmp_path / "two" / "classifier_results.json").read_text())
    assert (one_log["world_size"], two_log["world_size"]) == (1, 2)
    losses = [[h["loss"] for h in log["log_history"] if "loss" in h] for log in (one_log, two_log)]
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], abs=2e-4)
    assert losses[0][2] != pytest.approx(losses[0][0], abs=1e-3)  # it trained: the losses move
    for key in ("test_accuracy", "test_loss", "train_accuracy"):
        assert two_log[key] == pytest.approx(one_log[key], abs=1e-4), key
