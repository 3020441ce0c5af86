"""Chapter 7's instruction fine-tuning: the book's prompt, split and collator (modeling_gpt_scratch.instruction),
the loss the Trainer computes from them, LoRA merging, and examples/finetune_instruction.py run as a user
runs it, on a 1.6M-parameter GPT and the book's instruction-data.json from ../shared/data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, cli_error, fails_cleanly, load_example, ok, run_script, small_gpt
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from modeling_gpt_scratch import GPTScratchForCausalLM
from modeling_gpt_scratch.instruction import (
    InstructionCollator,
    InstructionDataset,
    add_lora,
    format_example,
    format_input,
    load_instruction_data,
    split_data,
)

SCRIPT = REPO / "examples" / "finetune_instruction.py"
RESPONSE_FILE = "instruction-data-with-response.json"
SMALL = ["--config_name", "tiny", "--config_overrides", "emb_dim=32,n_layers=2,n_heads=2"]
FEW = ["--max_train_samples", "16", "--max_eval_samples", "4", "--max_test_samples", "4"]
QUICK = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_new_tokens", "6"]
QUICK += ["--disable_tqdm", "true", "--eval_strategy", "no"]


@pytest.fixture(scope="module")
def data_file(shared_data):
    return shared_data / "instruction" / "instruction-data.json"


@pytest.fixture(scope="module")
def data(data_file):
    return load_instruction_data(data_file)


@pytest.fixture(scope="module")
def script():
    """examples/finetune_instruction.py as a module, so its error paths run in this process (fast)."""
    return load_example("finetune_instruction")


# --------------------------------------------------------------------------------- the book's pieces
def test_collator_gives_the_books_toy_batch():
    """Chapter 7's `custom_collate_fn` example, and the keys our model's loss reads."""
    batch = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
    inputs, targets = InstructionCollator().book_batch(batch)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]

    inputs, targets = InstructionCollator(allowed_max_length=3).book_batch(batch)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, 50256], [7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3], [6, 50256, -100], [8, 9, 50256]]

    out = InstructionCollator()(batch)
    assert out["input_ids"].tolist() == [
        [0, 1, 2, 3, 4],
        [5, 6, 50256, 50256, 50256],
        [7, 8, 9, 50256, 50256],
    ]
    assert out["shift_labels"].tolist() == [
        [1, 2, 3, 4, 50256],
        [6, 50256, -100, -100, -100],
        [8, 9, 50256, -100, -100],
    ]
    # labels shifted right by one, so the model's own shift lands on the book's targets
    assert out["labels"].tolist() == [
        [-100, 1, 2, 3, 4],
        [-100, 6, 50256, -100, -100],
        [-100, 8, 9, 50256, -100],
    ]


def test_format_input_is_the_books(data):
    assert format_example(data[50]) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nIdentify the correct spelling of the following word.\n\n### Input:\n"
        "Ocassion\n\n### Response:\nThe correct spelling is 'Occasion.'"
    )
    assert format_input(data[999]).endswith("### Instruction:\nWhat is an antonym of 'complicated'?")
    assert "### Input" not in format_input(data[999])  # empty input: no input section


def test_split_is_the_books(data, shared_data):
    train, test, val = split_data(data)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train == data[:935] and test == data[935:1045] and val == data[1045:]
    # the book's instruction-data-with-response.json holds exactly its test split
    with_response = json.loads(
        (shared_data / "instruction" / "instruction-data-with-response.json").read_text()
    )
    assert [e["instruction"] for e in with_response] == [e["instruction"] for e in test]


def test_mask_prompt_masks_exactly_the_prompt(data, tokenizer):
    entries = [data[50], data[999]]  # with and without an input
    items = InstructionDataset(entries, tokenizer)
    _, plain = InstructionCollator().book_batch(items)
    _, masked = InstructionCollator(mask_prompt=True).book_batch(items)
    for row, item in enumerate(items):
        p = item["prompt_length"]
        assert tokenizer.decode(item["input_ids"][:p]) == format_input(entries[row])
        # targets 0 .. p-2 predict prompt tokens 1 .. p-1: ignored; from p-1 on (the response) unchanged
        assert (masked[row, : p - 1] == -100).all()
        assert (plain[row, : p - 1] != -100).all()
        assert torch.equal(masked[row, p - 1 :], plain[row, p - 1 :])
        assert tokenizer.decode(plain[row, p - 1 : len(item["input_ids"]) - 1]).startswith(
            "\n\n### Response:"
        )


def test_trainer_loss_is_the_books_loss(data, tokenizer, tmp_path):
    """The loss the Trainer reports from the collator's batch is `calc_loss_batch(inputs, targets)`."""
    model = small_gpt().eval()
    items = InstructionDataset(data[:6], tokenizer)
    collator = InstructionCollator(allowed_max_length=100)
    inputs, targets = collator.book_batch(list(items))
    with torch.no_grad():
        logits = model(inputs).logits
    book_loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    with torch.no_grad():
        assert model(**collator(list(items))).loss.item() == pytest.approx(book_loss, rel=1e-5)

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=6, report_to="none", remove_unused_columns=False
    )
    trainer = Trainer(model=model, args=args, data_collator=collator)
    assert trainer.evaluate(items)["eval_loss"] == pytest.approx(book_loss, rel=1e-5)


def test_lora_merge_keeps_the_logits_and_reloads(tmp_path):
    base = small_gpt().eval()
    ids = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        base_logits = base(ids).logits.clone()
    model = add_lora(base, r=4, alpha=8)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; give the adapters something to add
            torch.nn.init.normal_(param, std=0.5)
    assert model.get_nb_trainable_parameters()[0] == 2 * (4 * 4 * (32 + 32) + 2 * 4 * (32 + 128))
    model.eval()
    with torch.no_grad():
        unmerged = model(ids).logits
        merged_model = model.merge_and_unload()
        merged = merged_model(ids).logits
    assert not torch.allclose(unmerged, base_logits, atol=1e-3)  # the adapters do change the model
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    assert type(merged_model) is GPTScratchForCausalLM

    merged_model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, merged, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["GPT_SCRATCH_CACHE"] = str(tmp_path_factory.mktemp("empty_data_cache"))
    return env


def run(env, *args, timeout=300):
    return run_script(SCRIPT, *args, env=env, timeout=timeout)


def test_lora_run_end_to_end(env, data_file, data, tmp_path):
    """The default data (found in a pre-filled cache), LoRA with --mask_prompt, a merged model that
    loads with AutoModelForCausalLM, and the book's response file for the test entries."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(data_file, cache / "instruction-data.json")
    out = tmp_path / "out"
    stdout = ok(
        run(
            {**env, "GPT_SCRATCH_CACHE": str(cache)},
            *SMALL,
            *FEW,
            *QUICK,
            "--use_lora",
            "--mask_prompt",
            "--lora_r",
            "4",
            "--output_dir",
            out,
        )  # fmt: skip
    )
    assert "Training set length: 935" in stdout and "Test set length: 110" in stdout
    responses = json.loads((out / "instruction-data-with-response.json").read_text())
    assert [{k: e[k] for k in ("instruction", "input", "output")} for e in responses] == data[935:939]
    assert all(
        isinstance(e["model_response"], str) and "### Response:" not in e["model_response"] for e in responses
    )
    losses = json.loads((out / "losses.json").read_text())
    assert set(losses["before"]) == {"train", "validation"}
    assert [e["step"] for e in losses["log_history"] if "train_runtime" in e] == [2]

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPTScratchForCausalLM"
    assert not any("lora" in name for name in model.state_dict())
    assert (out / "tokenizer.json").is_file()


@pytest.mark.slow
def test_full_finetuning_learns(env, data_file, tmp_path):
    """Full fine-tuning for 40 steps brings the validation loss down from ln(50257)."""
    out = tmp_path / "out"
    ok(run(env, *SMALL, "--train_file", data_file, "--max_train_samples", "80", "--max_eval_samples", "16",
           "--max_test_samples", "2", "--max_new_tokens", "4", "--learning_rate", "3e-3",
           "--num_train_epochs", "4", "--disable_tqdm", "true", "--output_dir", out))  # fmt: skip
    losses = json.loads((out / "losses.json").read_text())
    assert losses["before"]["validation"] > 10.5
    assert losses["after"]["validation"] < losses["before"]["validation"] - 2


def test_malformed_json_fails_cleanly(env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]')
    line = fails_cleanly(
        run(env, *SMALL, "--train_file", bad, "--output_dir", tmp_path / "out"), "not valid JSON"
    )
    assert "line 2" in line
    assert not (tmp_path / "out").exists()


def error_of(script, capsys, *argv):
    return cli_error(script.main, argv, capsys)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("[]", "holds no entries"),
        ('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', 'entry 1 has no "output" key'),
        (
            '[{"instruction": "a", "output": "b"}, {"input": "x", "output": "y"}]',
            'entry 1 has no "instruction"',
        ),
        ('[{"instruction": "a", "output": 3}]', 'entry 0 "output" is a int'),
        ('{"instruction": "a", "output": "b"}\n{"instruction": \n', "line 2 is not valid JSON"),
    ],
)
def test_bad_data_fails_before_training(script, capsys, tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    assert message in error_of(script, capsys, *SMALL, "--train_file", path, "--output_dir", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_prompt_longer_than_the_context_fails(script, capsys, data_file, tmp_path):
    line = error_of(script, capsys, *SMALL, "--train_file", data_file, "--allowed_max_length", "30",
                    "--output_dir", tmp_path / "o")  # fmt: skip
    assert "entry 0's prompt is" in line and "at most 30" in line


def test_offline_without_data_says_where_to_put_it(script, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GPT_SCRATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = error_of(script, capsys, *SMALL, "--output_dir", tmp_path / "o")
    assert str(tmp_path / "cache" / "instruction-data.json") in line and "instruction-data.json" in line
    assert "offline" in line


def test_model_choice_is_required(script, capsys, tmp_path):
    assert "--config_name" in error_of(script, capsys, "--output_dir", tmp_path / "o")


def test_the_data_or_a_full_folder_are_never_overwritten(script, capsys, data_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.json").write_text(data_file.read_text())
    line = error_of(script, capsys, *SMALL, "--train_file", data / "train.json", "--output_dir", data)
    assert "is where the input" in line
    assert "--overwrite_output_dir" in error_of(
        script, capsys, *SMALL, "--train_file", data_file, "--output_dir", data
    )
    assert [p.name for p in data.iterdir()] == ["train.json"]


def test_push_to_hub_uses_the_trainers_push_with_the_merged_model(script, data_file, monkeypatch, tmp_path):
    """--push_to_hub goes through `Trainer.push_to_hub` once, with the tags, after the responses are
    written and LoRA is merged (the Hub itself is tested elsewhere; here the upload is recorded)."""
    pushes = []

    def fake_push(self, **kwargs):
        self.save_model(self.args.output_dir, _internal_call=True)
        pushes.append(
            (kwargs, type(self.model).__name__, sorted(p.name for p in Path(self.args.output_dir).iterdir()))
        )

    monkeypatch.setattr(Trainer, "init_hf_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(Trainer, "push_to_hub", fake_push)
    out = tmp_path / "out"
    script.main([str(a) for a in (*SMALL, "--train_file", data_file, *FEW, *QUICK, "--use_lora", "--lora_r", "2",
                                  "--max_test_samples", "2", "--push_to_hub", "--hub_model_id", "me/sft",
                                  "--output_dir", out)])  # fmt: skip
    assert len(pushes) == 1
    kwargs, model_class, files = pushes[0]
    assert kwargs["tags"] == ["gpt-scratch", "instruction-tuning"]
    assert model_class == "GPTScratchForCausalLM"  # merged, no PeftModel
    assert {"instruction-data-with-response.json", "model.safetensors", "config.json", "losses.json"} <= set(
        files
    )


def test_push_to_hub_round_trip(env, data_file, shared_data, tmp_path):
    """A real --push_to_hub against the fake Hub in tests/fake_hub.py: the merged model, tokenizer, responses
    and a card with the tags arrive, and the pushed repo loads with AutoModelForCausalLM."""
    from fake_hub import TOKEN, FakeHub

    with FakeHub() as hub:
        home = tmp_path / "hf_home"
        hub_env = {**env, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
                   "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
        ok(run(hub_env, *SMALL, "--train_file", data_file, *FEW, *QUICK, "--use_lora", "--lora_r", "2",
               "--max_test_samples", "2", "--push_to_hub", "--hub_model_id", "tester/sft",
               "--tokenizer_name", shared_data / "gpt2_tokenizer" / "hf", "--output_dir", tmp_path / "out"))  # fmt: skip
        files = hub.files("tester/sft")
        assert {"model.safetensors", "config.json", "tokenizer.json", RESPONSE_FILE, "README.md"} <= set(
            files
        )
        card = files["README.md"].decode()
        assert "gpt-scratch" in card and "instruction-tuning" in card
        assert len(json.loads(files[RESPONSE_FILE])) == 2
        code = "from transformers import AutoModelForCausalLM; print(type(AutoModelForCausalLM.from_pretrained('tester/sft')).__name__)"
        loaded = subprocess.run([sys.executable, "-c", "import modeling_gpt_scratch; " + code], env=hub_env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert loaded.stdout.strip() == "GPTScratchForCausalLM", loaded.stderr[-2000:]
