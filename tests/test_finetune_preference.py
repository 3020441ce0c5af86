"""DPO (the bonus of the book's chapter 7) on TRL: the book's tokens and masks, TRL's `sigmoid_norm` loss
against the book's `compute_dpo_loss` written out here, the starting loss ln 2, margins that grow, the
LoRA reference, bad input, and examples/finetune_preference.py run as a user runs it (also with two
processes), on a tiny GPT and the book's instruction-data-with-preference.json from ../shared/data."""

import copy
import importlib.util
import json
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, ok, run_script, small_gpt

if not os.environ.get("CI"):  # CI installs the extra; elsewhere say what is missing
    pytest.importorskip("trl", reason="DPO needs the `trl` extra: pip install -e '.[trl]'")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import DPOConfig  # noqa: E402

from modeling_gpt_scratch.instruction import add_lora, format_input  # noqa: E402
from modeling_gpt_scratch.preference import (  # noqa: E402
    BookDPOTrainer,
    check_preference_records,
    load_preference_data,
    tokenize_preference,
)
from modeling_gpt_scratch.tokenization import get_tiktoken_encoding, load_tokenizer  # noqa: E402

SCRIPT = REPO / "examples" / "finetune_preference.py"
LN2 = math.log(2)
SMALL = ["--config_name", "tiny", "--config_overrides", "emb_dim=32,n_layers=2,n_heads=2,drop_rate=0.0"]
QUICK = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--max_length", "96"]
QUICK += ["--max_train_samples", "16", "--max_eval_samples", "4", "--max_test_samples", "2"]
QUICK += ["--max_new_tokens", "4", "--disable_tqdm", "true", "--use_cpu", "--book_eval_steps", "0"]

# The book's first preference entry as its custom_collate_fn prints it (dpo-from-scratch.ipynb): the
# prompt's 48 tokens, the two newline tokens (not scored), then "### Response:\n" and the chosen response.
BOOK_PROMPT_0 = [21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262]
BOOK_PROMPT_0 += [2581, 13, 198, 198, 21017, 46486, 25, 198, 36, 2100, 4985, 262, 1708, 9546, 416, 25449]
BOOK_PROMPT_0 += [340, 656, 262, 24993, 1813, 13, 198, 198, 21017, 23412, 25, 198, 19503, 521, 14610, 1545]
BOOK_CHOSEN_0 = [21017, 18261, 25, 198, 464, 24993, 286, 262, 1813, 9546, 366, 19503, 521, 1, 318, 11491, 11]
BOOK_CHOSEN_0 += [262, 3376, 24993, 318, 366, 6726, 1911]


@pytest.fixture(scope="module")
def data_file(shared_data):
    return shared_data / "instruction" / "instruction-data-with-preference.json"


@pytest.fixture(scope="module")
def data(data_file):
    return load_preference_data(data_file, identical="keep")


def make_trainer(model, rows, ref_model=None, tmp_path=None, **overrides):
    settings = dict(
        output_dir=str(tmp_path or "unused"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        beta=0.1,
        loss_type=["sigmoid_norm"],
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        max_length=1024,
    )
    settings.update(overrides)
    return BookDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=DPOConfig(**settings),
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(),
    )


# ------------------------------------------------------------------------ the book's formula, here
def book_compute_logprobs(logits, labels, selection_mask):
    """dpo-from-scratch.ipynb's compute_logprobs, with a selection mask."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    log_probs = F.log_softmax(logits, dim=-1)
    selected = torch.gather(input=log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    mask = selection_mask[:, 1:].clone()
    return (selected * mask).sum(-1) / mask.sum(-1)


def book_compute_dpo_loss(model_chosen, model_rejected, reference_chosen, reference_rejected, beta=0.1):
    """dpo-from-scratch.ipynb's compute_dpo_loss."""
    model_logratios = model_chosen - model_rejected
    reference_logratios = reference_chosen - reference_rejected
    logits = model_logratios - reference_logratios
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = (model_chosen - reference_chosen).detach()
    rejected_rewards = (model_rejected - reference_rejected).detach()
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def book_batch(entries, pad_token_id=50256):
    """The book's PreferenceDataset + custom_collate_fn (mask_prompt_tokens=True), with tiktoken."""
    enc = get_tiktoken_encoding()
    items = []
    for entry in entries:
        prompt = format_input(entry)
        items.append(
            {
                "prompt": enc.encode(prompt),
                "chosen": enc.encode(f"{prompt}\n\n### Response:\n{entry['chosen']}"),
                "rejected": enc.encode(f"{prompt}\n\n### Response:\n{entry['rejected']}"),
            }
        )
    longest = max(len(item[key]) + 1 for item in items for key in ("chosen", "rejected"))
    out = {"chosen": [], "rejected": [], "chosen_mask": [], "rejected_mask": []}
    for item in items:
        for key in ("chosen", "rejected"):
            sequence = item[key]
            padded = sequence + [pad_token_id] * (longest - len(sequence))
            mask = torch.ones(len(padded)).bool()
            mask[len(sequence) :] = False
            mask[: len(item["prompt"]) + 2] = False
            out[key].append(torch.tensor(padded))
            out[f"{key}_mask"].append(mask)
    return {key: torch.stack(value) for key, value in out.items()}


def book_loss(policy, reference, entries, beta=0.1):
    batch = book_batch(entries)
    with torch.no_grad():
        logps = {
            (name, key): book_compute_logprobs(model(batch[key]).logits, batch[key], batch[f"{key}_mask"])
            for name, model in (("policy", policy), ("reference", reference))
            for key in ("chosen", "rejected")
        }
    return book_compute_dpo_loss(
        logps["policy", "chosen"],
        logps["policy", "rejected"],
        logps["reference", "chosen"],
        logps["reference", "rejected"],
        beta,
    )


def nudged(model, seed=1, scale=0.05):
    """A copy of `model` with every weight moved a little: a policy that differs from its reference."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return other


# ----------------------------------------------------------------------------------- the pieces
def test_tokens_and_scored_positions_are_the_books(data, tokenizer):
    row = tokenize_preference(data[0], tokenizer)
    assert row["prompt_ids"] == BOOK_PROMPT_0 + [198, 198]
    assert row["chosen_ids"] == BOOK_CHOSEN_0

    entries = data[:3]
    trainer = make_trainer(small_gpt(), [tokenize_preference(e, tokenizer) for e in entries], small_gpt())
    ours = trainer.data_collator([tokenize_preference(e, tokenizer) for e in entries])
    book = book_batch(entries)
    for half, key in ((slice(0, 3), "chosen"), (slice(3, 6), "rejected")):
        length = ours["input_ids"].shape[1]
        real = ours["attention_mask"][half].bool()
        assert torch.equal(ours["input_ids"][half][real], book[key][:, :length][real])
        assert torch.equal(ours["completion_mask"][half].bool(), book[f"{key}_mask"][:, :length])
        assert not book[f"{key}_mask"][:, length:].any()  # the book's extra padding column scores nothing


def test_loss_equals_the_books_compute_dpo_loss(data, tokenizer):
    """TRL's sigmoid_norm on a batch is the book's loss (averaged log-probabilities); sigmoid sums them."""
    entries = data[10:14]
    rows = [tokenize_preference(e, tokenizer) for e in entries]
    reference = small_gpt()
    policy = nudged(reference)
    trainer = make_trainer(policy, rows, reference)
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, batch).item()
    expected, chosen, rejected = book_loss(policy, reference, entries)
    assert abs(ours - LN2) > 1e-3  # the policy differs from the reference: not the trivial case
    assert ours == pytest.approx(expected.item(), abs=1e-5)

    metrics = trainer.book_metrics(trainer.train_dataset)
    assert metrics["loss"] == pytest.approx(expected.item(), abs=1e-5)
    assert metrics["chosen_reward"] == pytest.approx(chosen.item(), abs=1e-5)
    assert metrics["rejected_reward"] == pytest.approx(rejected.item(), abs=1e-5)
    assert metrics["margin"] == pytest.approx((chosen - rejected).item(), abs=1e-5)

    summed = make_trainer(policy, rows, reference, loss_type=["sigmoid"])
    with torch.no_grad():
        paper = summed.compute_loss(summed.model, batch).item()
    assert abs(paper - ours) > 1e-4  # the DPO paper's summed log-probabilities give another loss


def test_starting_loss_is_ln2_and_margins_grow(data, tokenizer, tmp_path, one_thread):
    rows = [tokenize_preference(e, tokenizer) for e in data[:16]]
    model = small_gpt()
    trainer = make_trainer(model, rows, copy.deepcopy(model), tmp_path, max_steps=6, max_length=96)
    batch = trainer.data_collator(rows[:4])
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(LN2, abs=1e-4)
    before = trainer.book_metrics(trainer.train_dataset)
    assert before["loss"] == pytest.approx(LN2, abs=1e-4)
    assert before["margin"] == pytest.approx(0.0, abs=1e-5)
    trainer.train()
    after = trainer.book_metrics(trainer.train_dataset)
    assert after["margin"] > 0.01
    assert after["loss"] < LN2 - 1e-3
    logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
    assert logged and {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= set(logged[0])


def test_lora_reference_is_the_model_with_adapters_disabled(data, tokenizer, tmp_path, one_thread):
    rows = [tokenize_preference(e, tokenizer) for e in data[:8]]
    base = small_gpt()
    frozen = copy.deepcopy(base)
    model = add_lora(base, r=4, alpha=8)
    trainer = make_trainer(model, rows, None, tmp_path, max_steps=4, learning_rate=5e-2, max_length=96)
    assert trainer.ref_model is None  # no second copy in memory
    assert trainer.book_metrics(trainer.train_dataset)["loss"] == pytest.approx(LN2, abs=1e-4)
    trainer.train()
    after = trainer.book_metrics(trainer.train_dataset)
    assert after["margin"] > 0.001
    ids = torch.tensor([rows[0]["prompt_ids"] + rows[0]["chosen_ids"]])
    with trainer.reference_model() as reference, torch.no_grad():
        assert torch.allclose(reference(ids).logits, frozen(ids).logits, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, frozen(ids).logits, atol=1e-5)  # the adapters trained


# ----------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("finetune_preference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENTRY = {"instruction": "Name a color.", "input": "", "chosen": "Blue, if you like.", "rejected": "Blue."}


@pytest.mark.parametrize(
    "entries, extra, message",
    [
        ([ENTRY, {"instruction": "Hi", "chosen": "Hello."}], [], 'entry 1 has no "rejected" response'),
        ([ENTRY, {**ENTRY, "rejected": "  "}], [], 'entry 1 has an empty "rejected" response'),
        ([ENTRY, {**ENTRY, "rejected": ENTRY["chosen"]}], [], '"chosen" and "rejected" are the same text'),
        ([{"prompt": "Hi", "chosen": "Hello.", "rejected": ""}], [], 'entry 0 has an empty "rejected"'),
        ([{"question": "Hi", "chosen": "a", "rejected": "b"}], [], 'neither "instruction" nor "prompt"'),
        (
            [ENTRY] * 7 + [{**ENTRY, "instruction": "word " * 40}],
            ["--max_length", "32"],
            "entry 7's prompt is",
        ),
    ],
)
def test_bad_input_is_one_error_line_before_training(script, tmp_path, capsys, entries, extra, message):
    from modeling_gpt_scratch.cli import run_cli

    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    out = tmp_path / "out"
    code = run_cli(script.main, [*SMALL, "--train_file", str(path), "--output_dir", str(out), *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err and not out.exists()


def test_identical_pairs_can_be_kept_or_dropped():
    records = [ENTRY, {**ENTRY, "rejected": ENTRY["chosen"]}]
    assert len(check_preference_records(records, "x", identical="keep")) == 2
    assert len(check_preference_records(records, "x", identical="drop")) == 1
    trl_style = check_preference_records([{"prompt": "Hi", "chosen": "a", "rejected": "b"}], "x")
    assert trl_style[0]["instruction"] == "Hi" and trl_style[0]["input"] == ""


def test_the_books_file_has_six_identical_pairs_it_trains_on(data_file):
    raw = json.loads(data_file.read_text())
    assert len(raw) == 1100
    assert [i for i, e in enumerate(raw) if e["chosen"].strip() == e["rejected"].strip()] == [
        122,
        226,
        400,
        566,
        628,
        676,
    ]


def test_non_empty_output_is_refused(script, tmp_path, capsys, data_file):
    from modeling_gpt_scratch.cli import run_cli

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = run_cli(script.main, [*SMALL, "--train_file", str(data_file), "--output_dir", str(out)])
    assert code == 1 and "--overwrite_output_dir" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------- the script, run
def env_for(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


# Full fine-tuning is the same script path as LoRA but for the adapters: slow-marked to keep the default
# suite under 15 minutes on two cores.
@pytest.mark.parametrize("lora", [pytest.param(False, marks=pytest.mark.slow), True], ids=["full", "lora"])
def test_script_trains_saves_and_answers(data_file, tmp_path, lora):
    out = tmp_path / "dpo"
    args = [*SMALL, *QUICK, "--train_file", str(data_file), "--identical_pairs", "keep"]
    args += ["--max_steps", "3", "--learning_rate", "5e-3", "--output_dir", out]
    args += ["--use_peft", "--lora_r", "4"] if lora else []
    stdout = ok(run_script(SCRIPT, *args, env=env_for(tmp_path)))
    assert "Before training: Train loss 0.693" in stdout and "world size 1" in stdout

    results = json.loads((out / "dpo_results.json").read_text())
    assert results["before"]["train"]["loss"] == pytest.approx(LN2, abs=1e-4)
    assert results["after"]["train"]["margin"] > results["before"]["train"]["margin"]
    responses = json.loads((out / "preference-responses.json").read_text())
    assert len(responses) == 2
    assert {"instruction", "chosen", "rejected", "policy_response", "reference_response"} <= set(responses[0])

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPTScratchForCausalLM"  # LoRA merged: a plain model again
    assert not any("lora" in name for name, _ in model.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a color."}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == format_input({"instruction": "Name a color.", "input": ""}) + "\n\n### Response:\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".dpo")) == []


def test_offline_without_the_data_says_where_to_put_it(tmp_path):
    env = env_for(tmp_path)
    result = run_script(
        SCRIPT, *SMALL, "--data_cache_dir", tmp_path / "empty", "--output_dir", tmp_path / "o", env=env
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "instruction-data-with-preference.json" in line


@pytest.mark.slow
def test_two_processes_train_like_one(data_file, tmp_path):
    """torchrun with two CPU processes (DDP over gloo) gives the losses of one process with the same
    global batch."""
    env = dict(env_for(tmp_path), ACCELERATE_USE_CPU="1")
    common = [*SMALL, *QUICK, "--train_file", str(data_file), "--identical_pairs", "keep"]
    common += [
        "--max_steps",
        "3",
        "--learning_rate",
        "5e-3",
        "--logging_steps",
        "1",
        "--max_test_samples",
        "0",
    ]
    one = ok(
        run_script(
            SCRIPT, *common, "--per_device_train_batch_size", "4", "--output_dir", tmp_path / "one", env=env
        )
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = [*common, "--per_device_train_batch_size", "2", "--output_dir", tmp_path / "two"]
    two = ok(run_script(SCRIPT, *args, env=env, timeout=600, launcher=torchrun))
    assert "world size 1" in one and "world size 2" in two
    logs = [json.loads((tmp_path / name / "dpo_results.json").read_text()) for name in ("one", "two")]
    assert [log["world_size"] for log in logs] == [1, 2]
    losses = [[h["loss"] for h in log["log_history"] if "loss" in h] for log in logs]
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], abs=2e-4)
    margins = [[h["rewards/margins"] for h in log["log_history"] if "rewards/margins" in h] for log in logs]
    assert margins[1] == pytest.approx(margins[0], abs=2e-4)


@pytest.mark.slow  # the same `hub.push_run` as the instruction script's round trip, which runs by default
def test_push_to_hub_round_trip(data_file, shared_data, tmp_path):
    """--push_to_hub against the fake Hub of tests/fake_hub.py: the folder arrives whole, with a card."""
    from fake_hub import TOKEN, FakeHub

    with FakeHub() as hub:
        home = tmp_path / "hf_home"
        env = dict(
            env_for(tmp_path), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HOME=str(home), HF_TOKEN=TOKEN
        )
        env.update(HF_HUB_CACHE=str(home / "hub"), HF_HUB_DISABLE_PROGRESS_BARS="1")
        args = [*SMALL, *QUICK, "--train_file", data_file, "--identical_pairs", "keep", "--max_steps", "1"]
        args += ["--push_to_hub", "--hub_model_id", "tester/dpo", "--output_dir", tmp_path / "out"]
        args += ["--tokenizer_name", shared_data / "gpt2_tokenizer" / "hf"]  # the fake Hub has no GPT-2
        out = ok(run_script(SCRIPT, *args, env=env))
        assert "Pushed" in out
        files = hub.files("tester/dpo")
        expected = {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "README.md"}
        assert expected | {"preference-responses.json", "dpo_results.json"} <= set(files)
        assert "dpo" in files["README.md"].decode()
        assert files["chat_template.jinja"].decode() == (tmp_path / "out" / "chat_template.jinja").read_text()
