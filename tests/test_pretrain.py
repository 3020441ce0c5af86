"""examples/pretrain.py in one process, run as a user runs it (a subprocess), on a 1.6M-parameter GPT and
the book's The Verdict from ../shared/data; and the book's data pipeline (modeling_gpt_scratch.data)."""

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    REPO,
    cli_error,
    fails_cleanly,
    load_example,
    ok,
    run_script,
    script_env,
    serve_folder,
    start_script,
)
from transformers import AutoModelForCausalLM

from modeling_gpt_scratch import training
from modeling_gpt_scratch.cli import CLIError
from modeling_gpt_scratch.data import (
    DataError,
    SlidingWindowDataset,
    create_dataloader_v1,
    num_windows,
    resolve_text_files,
    train_val_split,
)
from modeling_gpt_scratch.tokenization import get_tiktoken_encoding, load_tokenizer
from modeling_gpt_scratch.training import book_init_

PRETRAIN = REPO / "examples" / "pretrain.py"
# The tiny preset cut down to 1.6M parameters (GPT-2's vocabulary stays, so the tokenizer fits).
SMALL = ["--config_name", "tiny", "--config_overrides", "emb_dim=32,n_layers=2,n_heads=2,context_length=32"]
QUIET = ["--max_new_tokens", "5", "--eval_iters", "1"]  # short samples, evaluations of 2 windows


@pytest.fixture(scope="module")
def verdict(shared_data):
    return shared_data / "the-verdict" / "the-verdict.txt"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = script_env(tmp_path_factory, threads=2)
    env["GPT_SCRATCH_CACHE"] = str(tmp_path_factory.mktemp("empty_data_cache"))
    return env


def pretrain(env, *args, timeout=300):
    return run_script(PRETRAIN, *args, env=env, timeout=timeout)


def log_of(folder):
    return json.loads((Path(folder) / "training_log.json").read_text())


# ------------------------------------------------------------------------------ the book's data
def test_sliding_window_loader_gives_the_books_batches(verdict):
    """Chapter 2's loader (batch 8, max_length 4, stride 4) and chapter 5's (90/10 split, ctx 256)."""
    text = verdict.read_text(encoding="utf-8")
    inputs, targets = next(
        iter(create_dataloader_v1(text, batch_size=8, max_length=4, stride=4, shuffle=False))
    )
    assert inputs.tolist() == [
        [40, 367, 2885, 1464],
        [1807, 3619, 402, 271],
        [10899, 2138, 257, 7026],
        [15632, 438, 2016, 257],
        [922, 5891, 1576, 438],
        [568, 340, 373, 645],
        [1049, 5975, 284, 502],
        [284, 3285, 326, 11],
    ]
    assert torch.equal(targets[:, :-1], inputs[:, 1:]) and targets[0, -1] == 1807

    train_text, val_text = train_val_split(text)
    assert len(train_text) == 18431 and train_text + val_text == text
    train = create_dataloader_v1(train_text, batch_size=2, max_length=256, stride=256, drop_last=True)
    val = create_dataloader_v1(
        val_text, batch_size=2, max_length=256, stride=256, shuffle=False, drop_last=False
    )
    assert (len(train), len(val)) == (9, 1)
    assert sum(x.numel() for x, _ in train) == 4608 and sum(x.numel() for x, _ in val) == 512

    # The transformers tokenizer gives the same windows as tiktoken, and the array-backed dataset
    # the same as the book's loop.
    ids = load_tokenizer()(text, verbose=False)["input_ids"]
    assert ids == get_tiktoken_encoding().encode(text)
    windows = SlidingWindowDataset(ids, 16, 5)
    assert len(windows) == num_windows(len(ids), 16, 5) == len(range(0, len(ids) - 16, 5))
    x, y = windows[len(windows) - 1]
    start = (len(windows) - 1) * 5
    assert x.tolist() == ids[start : start + 16] and y.tolist() == ids[start + 1 : start + 17]
    assert len(SlidingWindowDataset(ids[:16], 16, 1)) == 0 and len(SlidingWindowDataset(ids[:17], 16, 1)) == 1


def test_the_verdict_is_downloaded_once_into_the_cache(verdict, tmp_path, monkeypatch):
    """The default data: fetched from its URL (here a local server) into the cache folder, then read
    from there; offline, or when the download fails, the error says where to put the file."""
    from modeling_gpt_scratch.data import the_verdict_path

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "GPT_SCRATCH_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with serve_folder(verdict.parent) as base:
        url = f"{base}/the-verdict.txt"
        path = the_verdict_path(tmp_path / "cache", url=url)
    assert path == tmp_path / "cache" / "the-verdict.txt"
    assert path.read_bytes() == verdict.read_bytes() and sorted(p.name for p in path.parent.iterdir()) == [
        path.name
    ]
    assert the_verdict_path(tmp_path / "cache", url=url) == path  # the server is gone: the cache serves

    with pytest.raises(DataError, match=r"could not download .* put the book's the-verdict\.txt .* at "):
        the_verdict_path(tmp_path / "other", url=url, timeout=5)
    assert not list((tmp_path / "other").iterdir())  # nothing half-written
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="is missing and this machine is offline"):
        the_verdict_path(tmp_path / "other", url=url)


def test_init_book_gives_the_books_untrained_model():
    """--init book: PyTorch's default initialization after torch.manual_seed(123), in the book's module
    order, gives chapter 5's untrained GPT_CONFIG_124M (context 256) and its gibberish, token for token."""
    from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM

    model = GPTScratchForCausalLM(GPTScratchConfig.from_preset("GPT_CONFIG_124M", context_length=256))
    book_init_(model, 123)
    model.eval()
    tokenizer = load_tokenizer()
    ids = tokenizer("Every effort moves you", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    assert tokenizer.decode(out[0]) == "Every effort moves you rentingetic wasnم refres RexMeCHicular stren"
    assert model.model.tok_emb.weight.std().item() == pytest.approx(1.0, abs=0.01)  # nn.Embedding's N(0, 1)


# --------------------------------------------------------------------------- training, end to end
def test_pretrain_trains_evaluates_plots_and_saves_a_loadable_model(env, verdict, tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, "--config_overrides", "emb_dim=32,n_layers=2,n_heads=2,context_length=32,drop_rate=0.0"]
    stdout = ok(
        pretrain(
            env,
            *args,
            *QUIET,
            "--train_file",
            verdict,
            "--output_dir",
            out,
            "--max_train_steps",
            8,
            "--eval_steps",
            4,
            "--eval_iters",
            2,
            "--learning_rate",
            5e-3,
        )
    )
    assert "world size 1" in stdout and "144 windows of 32" in stdout and "16 windows" in stdout
    assert "Ep 1 (Step 000001): Train loss" in stdout and "Val loss" in stdout
    assert "Every effort moves you" in stdout

    log = log_of(out)
    assert log["world_size"] == 1 and log["finished"] and log["global_step"] == 8
    assert log["tokens_seen"] == 8 * 2 * 32
    losses = log["step_losses"]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.2  # it learns
    assert [e["step"] for e in log["evals"]] == [1, 5, 8]  # the book evaluates after steps 1, 6, 11 ...
    assert all(e["sample"].startswith("Every effort moves you") for e in log["evals"])
    assert (out / "loss-plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The folder loads like any model, and is the model that was evaluated: its loss on the 4
    # validation windows evaluated (2 batches of 2, spread over the 16) is the last logged one.
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == "GPTScratchForCausalLM"
    assert not any("_orig_mod" in k or k.startswith("module.") for k in model.state_dict())
    tokenizer = load_tokenizer()
    text = verdict.read_text(encoding="utf-8")
    windows = SlidingWindowDataset(tokenizer(train_val_split(text)[1], verbose=False)["input_ids"], 32, 32)
    assert len(windows) == 16
    x = torch.stack([windows[i][0] for i in (0, 5, 10, 15)])
    y = torch.stack([windows[i][1] for i in (0, 5, 10, 15)])
    with torch.no_grad():
        val_loss = torch.nn.functional.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item()
    assert val_loss == pytest.approx(log["evals"][-1]["val_loss"], abs=1e-4)
    assert (out / "tokenizer.json").is_file() and not (out / "checkpoints").exists()


RESUME = [
    *SMALL,
    *QUIET,
    "--stride",
    160,  # 29 windows, 7 steps of 2 x 2 windows per epoch: the run crosses an epoch
    "--gradient_accumulation_steps",
    2,
    "--max_train_steps",
    9,
    "--eval_steps",
    4,
    "--learning_rate",
    3e-3,
]


def test_resume_gives_the_losses_of_an_uninterrupted_run(env, verdict, tmp_path):
    """Dropout on (the tiny preset's 0.1), gradient accumulation, a stop mid-epoch: the resumed run
    repeats the uninterrupted one exactly (weights, optimizer, schedule, data order and RNG)."""
    data = ["--train_file", verdict]
    ok(pretrain(env, *RESUME, *data, "--output_dir", tmp_path / "full"))
    stdout = ok(pretrain(env, *RESUME, *data, "--output_dir", tmp_path / "part", "--stop_after_steps", 5))
    checkpoint = tmp_path / "part" / "checkpoints" / "step_5"
    assert f"Stopped by --stop_after_steps after step 5: saved {checkpoint}" in stdout
    assert not log_of(tmp_path / "part")["finished"]
    assert not (tmp_path / "part" / "model.safetensors").exists()  # the final save comes at the end only

    stdout = ok(
        pretrain(env, *RESUME, *data, "--output_dir", tmp_path / "part", "--resume_from_checkpoint", "latest")
    )
    assert "Resumed from" in stdout and "at step 5" in stdout
    full, part = log_of(tmp_path / "full"), log_of(tmp_path / "part")
    assert len(full["step_losses"]) == 9
    assert part["step_losses"] == full["step_losses"]
    assert [(e["step"], e["train_loss"], e["val_loss"], e["sample"]) for e in part["evals"]] == [
        (e["step"], e["train_loss"], e["val_loss"], e["sample"]) for e in full["evals"]
    ]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "full").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "part").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_saves_a_checkpoint_that_resumes(env, verdict, tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, *QUIET, "--train_file", verdict, "--output_dir", out, "--max_train_steps", 400]
    proc = start_script(PRETRAIN, *args, env=env)
    try:
        for line in proc.stdout:  # the first evaluation happens after the first step
            if line.startswith("Ep 1 (Step 000001)"):
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "Stopped by SIGTERM after step" in stdout and "Traceback" not in stderr
    log = log_of(out)
    step = log["global_step"]
    assert 1 <= step < 400 and not log["finished"]
    checkpoint = out / "checkpoints" / f"step_{step}"
    assert (checkpoint / "training_state.json").is_file()

    ok(pretrain(env, *args, "--resume_from_checkpoint", checkpoint, "--stop_after_steps", step + 2))
    resumed = log_of(out)
    assert resumed["global_step"] == step + 2
    assert resumed["step_losses"][:step] == log["step_losses"]


# ------------------------------------------------------------------------------------ bad input
def test_bad_options_fail_before_loading_anything(env, tmp_path):
    fails_cleanly(
        pretrain(env, *SMALL, "--per_device_train_batch_size", 0),
        "--per_device_train_batch_size must be at least 1",
    )
    fails_cleanly(pretrain(env, "--output_dir", tmp_path), "say which model to train")
    fails_cleanly(pretrain(env, *SMALL, "--checkpointing_steps", "often"), "--checkpointing_steps must be")
    fails_cleanly(
        pretrain(env, "--model_name_or_path", tmp_path, "--init", "book"),
        "--init book is for training from scratch",
    )
    assert not any(tmp_path.iterdir())
    result = pretrain(env, "--help")
    assert result.returncode == 0
    for flag in (
        "--per_device_train_batch_size",
        "--learning_rate",
        "--num_train_epochs",
        "--max_train_steps",
        "--num_warmup_steps",
        "--seed",
        "--output_dir",
        "--checkpointing_steps",
        "--resume_from_checkpoint",
        "--report_to",
        "--block_size",
        "--stride",
        "--mixed_precision",
        "--torch_compile",
        "--gradient_checkpointing",
    ):
        assert flag in result.stdout


def test_unreadable_or_missing_files_are_named(tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("b")
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "docs" / "sub" / "a.md").write_text("a")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    found = resolve_text_files([tmp_path / "docs", str(tmp_path / "docs" / "*.txt")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["docs/b.txt", "docs/sub/a.md"]
    for spec, message in [
        (binary, "binary.txt is not UTF-8 text"),
        (tmp_path / "nope.txt", "nope.txt does not exist"),
        (str(tmp_path / "*.rst"), "no file matches"),
        (tmp_path / "docs" / "sub" / "..", None),
    ]:
        if message is None:
            assert resolve_text_files([spec])
            continue
        with pytest.raises(DataError, match=message.replace(".", r"\.")):
            resolve_text_files([spec])


def bad_data_cases(tmp_path, verdict):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("Every effort moves you.")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    few = tmp_path / "few.txt"
    few.write_text(verdict.read_text(encoding="utf-8")[:400])  # windows for training, none to validate
    return {
        "empty file": (
            [empty],
            [],
            "the training text is 0 tokens: one window of --block_size 32 needs 33 tokens",
        ),
        "too short": ([short], [], "the training text is 4 tokens"),
        "not UTF-8": ([binary], [], "binary.txt is not UTF-8 text"),
        "no validation windows": ([few], [], "the validation text is 10 tokens"),
        "block above context": (
            [verdict],
            ["--block_size", 64],
            "--block_size 64 is above the model's context_length 32",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty file",
        pytest.param("too short", marks=pytest.mark.slow),
        pytest.param("not UTF-8", marks=pytest.mark.slow),
        "no validation windows",
        "block above context",
    ],
)
def test_bad_data_is_an_error_before_training(env, verdict, tmp_path, case):
    files, extra, message = bad_data_cases(tmp_path, verdict)[case]
    out = tmp_path / "out"
    fails_cleanly(pretrain(env, *SMALL, "--train_file", *files, "--output_dir", out, *extra), message)
    assert not out.exists()


def test_offline_without_the_default_data_says_where_to_put_it(env, tmp_path):
    offline = dict(env, HF_HUB_OFFLINE="1", GPT_SCRATCH_CACHE=str(tmp_path / "cache"))
    result = pretrain(offline, *SMALL, "--output_dir", tmp_path / "out")
    fails_cleanly(result, "put the book's the-verdict.txt (20,479 characters, from https://")
    assert str(tmp_path / "cache" / "the-verdict.txt") in result.stderr and "--train_file" in result.stderr
    assert not (tmp_path / "out").exists()
    # A pre-filled cache is all it needs.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "the-verdict.txt").write_text(
        "I had always thought Jack Gisburn rather a cheap genius. " * 60
    )
    ok(pretrain(offline, *SMALL, *QUIET, "--output_dir", tmp_path / "out", "--max_train_steps", 1))


def test_an_existing_output_or_a_checkpoint_of_another_model_is_never_overwritten(env, verdict, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    data = ["--train_file", verdict, *QUIET]
    fails_cleanly(
        pretrain(env, *SMALL, *data, "--output_dir", out), "already holds files: pass --overwrite_output_dir"
    )

    run = tmp_path / "run"
    ok(pretrain(env, *SMALL, *data, "--output_dir", run, "--max_train_steps", 2, "--stop_after_steps", 1))
    checkpoint = run / "checkpoints" / "step_1"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    other = [
        "--config_name",
        "tiny",
        "--config_overrides",
        "emb_dim=32,n_layers=3,n_heads=2,context_length=32",
    ]
    fails_cleanly(
        pretrain(env, *other, *data, "--output_dir", run, "--resume_from_checkpoint", checkpoint),
        "is of another model (n_layers 2 there, 3 here)",
    )
    fails_cleanly(
        pretrain(env, *SMALL, *data, "--output_dir", run, "--resume_from_checkpoint", out),
        "is not a checkpoint written by pretrain.py",
    )
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    assert (out / "precious.txt").read_text() == "keep me"


# ------------------------------------------------------------------ options that cost more time
@pytest.mark.slow
def test_bf16_and_gradient_checkpointing(env, verdict, tmp_path):
    out = tmp_path / "run"
    args = [
        "--mixed_precision",
        "bf16",
        "--gradient_checkpointing",
        "--max_train_steps",
        4,
        "--learning_rate",
        5e-3,
    ]
    stdout = ok(pretrain(env, *SMALL, *QUIET, "--train_file", verdict, "--output_dir", out, *args))
    assert "mixed precision bf16" in stdout
    losses = log_of(out)["step_losses"]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32  # mixed precision computes in bf16, keeps float32 weights


@pytest.mark.slow
def test_torch_compile_saves_plain_weights_and_resumes_without_compile(env, verdict, tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, *QUIET, "--train_file", verdict, "--output_dir", out, "--max_train_steps", 4]
    stdout = ok(pretrain(env, *args, "--torch_compile", "--stop_after_steps", 2, timeout=900))
    assert "Stopped by --stop_after_steps after step 2" in stdout
    from safetensors import safe_open

    with safe_open(out / "checkpoints" / "step_2" / "model.safetensors", "pt") as f:
        assert not any("_orig_mod" in k for k in f.keys())
    ok(pretrain(env, *args, "--resume_from_checkpoint", "latest"))
    ok(pretrain(env, *args, "--torch_compile", "--output_dir", tmp_path / "compiled", timeout=900))
    for folder in (out, tmp_path / "compiled"):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert not any("_orig_mod" in k for k in model.state_dict())


@pytest.mark.slow
def test_report_to_tensorboard(env, verdict, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    args = ["--report_to", "tensorboard", "--max_train_steps", 2]
    ok(pretrain(env, *SMALL, *QUIET, "--train_file", verdict, "--output_dir", out, *args))
    assert list((out / "runs").rglob("events.out.tfevents.*"))


# --------------------------------------------------------------------- defaults, options, checkpoints
def test_defaults_follow_what_is_trained():
    """The book's chapter 5 settings for its models; for the small tiny preset the ones that learn in
    a minute (make demo); an option given on the command line always wins."""
    script = load_example("pretrain")
    book = script.parse_args(["--config_name", "GPT_CONFIG_124M"])
    assert (book.learning_rate, book.num_train_epochs, book.eval_steps, book.max_new_tokens) == (
        4e-4,
        10,
        5,
        50,
    )
    assert book.block_size is None and book.recipe["block_size"] is None  # the whole context
    tiny = script.parse_args(["--config_name", "tiny"])
    assert (tiny.learning_rate, tiny.num_train_epochs, tiny.eval_steps, tiny.max_new_tokens) == (
        3e-3,
        15,
        45,
        30,
    )
    assert tiny.recipe["block_size"] == 128
    mine = script.parse_args(["--config_name", "tiny", "--learning_rate", "1e-3", "--eval_steps", "7"])
    assert (mine.learning_rate, mine.eval_steps, mine.num_train_epochs) == (1e-3, 7, 15)


BAD_OPTIONS = {
    "infinite learning rate": (
        ["--learning_rate", "inf"],
        "--learning_rate must be a finite number, got inf",
    ),
    "weight decay nan": (["--weight_decay", "nan"], "--weight_decay must be a finite number, got nan"),
    "no validation at all": (
        ["--validation_split_percentage", 100],
        "--validation_split_percentage must be below 100",
    ),
    "a typo in an override": (["--config_overrides", "context_lenght=64"], "has no field 'context_lenght'"),
    "an override of the wrong type": (["--config_overrides", "vocab_size=50k"], "vocab_size is an integer"),
    "an unknown preset": (["--config_name", "tiny2"], "is neither a preset"),
    "an unknown option": (["--learning-rate", "1"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_one_line(case, tmp_path, capsys):
    args, message = BAD_OPTIONS[case]
    argv = ["--config_name", "tiny", "--output_dir", tmp_path / "out", *args]
    assert message in cli_error(load_example("pretrain").main, argv, capsys)
    assert not (tmp_path / "out").exists()


def fake_checkpoint(root, step, state=None):
    folder = root / "checkpoints" / f"step_{step}"
    folder.mkdir(parents=True)
    if state is not False:
        (folder / training.STATE_FILE).write_text(state or json.dumps({"global_step": step}))
    return folder


def test_latest_is_the_newest_complete_checkpoint(tmp_path):
    fake_checkpoint(tmp_path, 3)
    fake_checkpoint(tmp_path, 8)
    fake_checkpoint(tmp_path, 9, state='{"global_st')  # torn: its state file was cut short
    fake_checkpoint(tmp_path, 10, state=False)  # not finished: no state file yet
    assert training.find_checkpoint("latest", tmp_path) == tmp_path / "checkpoints" / "step_8"
    assert [step for step, _ in training.complete_checkpoints(tmp_path)] == [3, 8]
    with pytest.raises(CLIError, match="no complete checkpoint"):
        training.find_checkpoint("latest", tmp_path / "empty")


class RunsCode:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    folder = fake_checkpoint(tmp_path, 2)
    torch.save({"step": torch.tensor(1)}, folder / "random_states_0.pkl")
    training.check_no_code(folder)  # tensors and numbers load
    torch.save({"payload": RunsCode()}, folder / "custom_checkpoint_0.pkl")
    with pytest.raises(CLIError, match="custom_checkpoint_0.pkl holds more than tensors"):
        training.check_no_code(folder)
    assert "code from the checkpoint ran" not in capsys.readouterr().out


def test_a_loss_that_is_not_a_number_stops_the_run():
    training.check_finite(3.2, 5)
    for loss in (float("nan"), float("inf")):
        with pytest.raises(CLIError, match="the training loss is .* at step 5: the weights diverged"):
            training.check_finite(loss, 5)
