"""examples/finetune_classifier.py (chapter 6) and its data (modeling_gpt_scratch.classification): the
book's SMS preparation against pandas, the train modes, LoRA saving, gradient accumulation through the
Trainer, an end-to-end run loaded by `pipeline`, and one-line errors."""

import csv
import json
import os
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_error, fails_cleanly, load_example, ok, run_script, serve_folder
from transformers import AutoModelForSequenceClassification

import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
from modeling_gpt_scratch.classification import (
    balance_classes,
    random_split,
    read_labeled_file,
    read_sms_spam,
    sms_spam_path,
)
from modeling_gpt_scratch.data import DataError
from modeling_gpt_scratch.tokenization import load_tokenizer

SCRIPT = REPO / "examples" / "finetune_classifier.py"
# A 1.6M-parameter GPT (GPT-2's vocabulary, so GPT-2's tokenizer fits), no dropout: runs are exact.
SMALL = dict(emb_dim=32, n_layers=2, n_heads=2, context_length=64, drop_rate=0.0)
QUIET = ["--disable_tqdm", "true", "--use_cpu", "--report_to", "none"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def example():
    return load_example("finetune_classifier")


@pytest.fixture(scope="module")
def sms(shared_data):
    return shared_data / "sms_spam_collection" / "SMSSpamCollection"


@pytest.fixture(scope="module")
def env(tmp_path_factory, sms):
    """A cache folder holding the SMS file where the example looks for its download."""
    cache = tmp_path_factory.mktemp("data_cache")
    (cache / "sms_spam_collection").mkdir()
    (cache / "sms_spam_collection" / "SMSSpamCollection").write_bytes(sms.read_bytes())
    # One thread: on a busy 2-core machine two OpenMP threads wait on each other, 10x slower.
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", GPT_SCRATCH_CACHE=str(cache))
    env["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("datasets_cache"))
    return env


@pytest.fixture(scope="module")
def base_lm(tmp_path_factory):
    """A small "pretrained" causal LM folder of ours, with its tokenizer, as a conversion writes one."""
    folder = tmp_path_factory.mktemp("base_lm")
    torch.manual_seed(1)
    GPTScratchForCausalLM(GPTScratchConfig.from_preset("tiny", **SMALL)).save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return folder


def run_example(env, *args, timeout=300):
    return run_script(SCRIPT, *args, env=env, timeout=timeout)


# ------------------------------------------------------------------------------------ the book's data
def test_sms_preparation_is_the_books(sms):
    """5,572 rows as pandas parses them, ham cut to 747 and the 70/10/20 split, row for row as the
    book's pandas code gives them; the longest training text is the book's max_length, 120 tokens."""
    import pandas as pd  # installed with `datasets`; the book's own code is the reference

    from modeling_gpt_scratch.tokenization import get_tiktoken_encoding

    rows = read_sms_spam(sms)
    labels = [label for _, label in rows]
    assert (len(rows), labels.count("ham"), labels.count("spam")) == (5572, 4825, 747)

    df = pd.read_csv(sms, sep="\t", header=None, names=["Label", "Text"])
    ham = df[df["Label"] == "ham"].sample(747, random_state=123)
    balanced = pd.concat([ham, df[df["Label"] == "spam"]])
    shuffled = balanced.sample(frac=1, random_state=123).reset_index(drop=True)
    book = list(zip(shuffled["Text"], shuffled["Label"], strict=True))

    train, validation, test = random_split(balance_classes(rows))
    assert (len(train), len(validation), len(test)) == (1045, 149, 300)
    assert train + validation + test == book
    tokenizer = get_tiktoken_encoding()
    assert max(len(tokenizer.encode(text)) for text, _ in train) == 120


def test_sms_is_downloaded_once_and_offline_says_where(sms, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "sms.zip", "w") as archive:
        archive.write(sms, "SMSSpamCollection")
        archive.writestr("readme", "the corpus readme")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "GPT_SCRATCH_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with serve_folder(served) as base:
        url = f"{base}/sms.zip"
        path = sms_spam_path(tmp_path / "cache", url=url)
    assert path == tmp_path / "cache" / "sms_spam_collection" / "SMSSpamCollection"
    assert path.read_bytes() == sms.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["SMSSpamCollection"]  # no temp files left
    assert sms_spam_path(tmp_path / "cache", url=url) == path  # the server is gone: from the cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="offline") as error:
        sms_spam_path(tmp_path / "empty")
    assert str(tmp_path / "empty" / "sms_spam_collection" / "SMSSpamCollection") in str(error.value)


def test_labeled_files(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hi, there",pos\nbye,neg\n', encoding="utf-8")
    assert read_labeled_file(tmp_path / "a.csv") == [("hi, there", "pos"), ("bye", "neg")]
    (tmp_path / "a.tsv").write_text("sentence\ty\nhi\t1\n", encoding="utf-8")
    assert read_labeled_file(tmp_path / "a.tsv", "sentence", "y") == [("hi", "1")]
    (tmp_path / "a.jsonl").write_text('{"text": "hi", "label": 1}\n{"text": "yo", "label": 0}\n')
    assert read_labeled_file(tmp_path / "a.jsonl") == [("hi", "1"), ("yo", "0")]
    (tmp_path / "a.json").write_text(json.dumps([{"text": "hi", "label": "x"}]))
    assert read_labeled_file(tmp_path / "a.json") == [("hi", "x")]
    with pytest.raises(DataError, match=r"no column 'text' or 'label'; its columns are 'sentence', 'y'"):
        read_labeled_file(tmp_path / "a.tsv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="holds no examples"):
        read_labeled_file(tmp_path / "empty.csv")


# ------------------------------------------------------------------------------------------- training
def test_book_mode_trains_the_last_block_final_norm_and_head(example):
    config = GPTScratchConfig.from_preset("tiny", **{**SMALL, "n_layers": 3}, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config)
    margs = Namespace(train_mode="book")
    model = example.set_train_mode(model, margs)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("model.trf_blocks.2.", "model.final_norm.", "score."))
    }
    assert trainable == expected
    assert {
        "score.weight",
        "score.bias",
        "model.final_norm.scale",
        "model.trf_blocks.2.att.W_query.weight",
    } <= trainable
    assert not any(n.startswith(("model.tok_emb", "model.pos_emb", "model.trf_blocks.1.")) for n in trainable)
    model = example.set_train_mode(model, Namespace(train_mode="full"))
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """4 x 2 accumulated gives the 8 x 1 loss and the same update (plain SGD, so a loss scaled by the
    number of micro-batches would show in the update): the model's loss uses num_items_in_batch."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = load_tokenizer()
    texts = ["Free entry now!!", "hi", "see you at six then", "WINNER claim your prize", "ok", "call me"] * 2
    enc = tokenizer(texts[:8], verbose=False)
    train = datasets.Dataset.from_dict({**enc, "labels": [1, 0, 0, 1, 0, 0, 1, 1]})
    config = GPTScratchConfig.from_preset("tiny", **SMALL, num_labels=2)
    torch.manual_seed(0)
    start = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # the loss of the whole batch, computed here
        batch = DataCollatorWithPadding(tokenizer)([train[i] for i in range(8)])
        expected_loss = start(**batch).loss.item()

    results = {}
    for per_device, accumulation in ((8, 1), (4, 2)):
        model = AutoModelForSequenceClassification.from_config(config)
        model.load_state_dict(start.state_dict())
        args = TrainingArguments(
            output_dir=str(tmp_path / f"{per_device}x{accumulation}"),
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=0.5,
            optim="sgd",
            lr_scheduler_type="constant",
            max_grad_norm=0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=5,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)
        )
        trainer.train()
        loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
        delta = {n: (p.detach() - start.state_dict()[n]) for n, p in model.named_parameters()}
        results[(per_device, accumulation)] = loss, delta
    (loss_1, delta_1), (loss_2, delta_2) = results[(8, 1)], results[(4, 2)]
    assert loss_1 == pytest.approx(expected_loss, abs=1e-4)  # the Trainer logs 4 digits
    assert loss_2 == pytest.approx(loss_1, abs=1e-4)
    assert delta_1["score.weight"].abs().max() > 1e-3  # something moved
    for name in delta_1:
        torch.testing.assert_close(delta_2[name], delta_1[name], atol=1e-6, rtol=1e-4, msg=name)


def test_book_mode_end_to_end_loads_with_pipeline(env, base_lm, tmp_path):
    """The default data (from the cache), book mode from a causal-LM folder, a few steps: frozen parts
    are saved unchanged, results and confusion matrix are written, and `pipeline` classifies."""
    from safetensors.torch import load_file
    from transformers import pipeline

    out = tmp_path / "out"
    stdout = ok(
        run_example(env, "--model_name_or_path", base_lm, "--max_steps", 3, "--output_dir", out, *QUIET)
    )
    assert "1045 train / 149 validation / 300 test examples; labels 0=ham, 1=spam" in stdout
    assert "texts are truncated to 64 tokens" in stdout and "training text(s) are longer" in stdout
    assert "Test accuracy:" in stdout and "Confusion matrix" in stdout

    results = json.loads((out / "classifier_results.json").read_text())
    assert results["world_size"] == 1 and results["labels"] == ["ham", "spam"]
    assert sum(map(sum, results["test_confusion_matrix"])) == 300
    assert results["test_accuracy"] == pytest.approx(
        (results["test_confusion_matrix"][0][0] + results["test_confusion_matrix"][1][1]) / 300
    )
    assert any("eval_accuracy" in h and "eval_f1" in h for h in results["log_history"])

    before = load_file(base_lm / "model.safetensors")
    after = load_file(out / "model.safetensors")
    for name, tensor in after.items():
        if name.startswith("score."):
            continue
        same = torch.equal(tensor, before[name])
        assert same == (not name.startswith(("model.trf_blocks.1.", "model.final_norm."))), name

    classify = pipeline("text-classification", model=str(out), device="cpu")
    texts = ["WINNER!! Claim your free prize now, call 0800", "See you at lunch?"]
    predictions = classify(texts)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = load_tokenizer(str(out))
    for text, prediction in zip(texts, predictions, strict=True):
        with torch.no_grad():
            probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        assert prediction["label"] == model.config.id2label[int(probs.argmax())]
        assert prediction["score"] == pytest.approx(probs.max().item(), abs=1e-5)


def test_lora_saves_adapter_and_merged_model(env, base_lm, tmp_path):
    """LoRA: the adapter in output_dir/adapter reloads onto the base model with PeftModel and gives the
    logits of the merged model saved in output_dir."""
    from peft import PeftModel

    rows = read_sms_spam(Path(env["GPT_SCRATCH_CACHE"]) / "sms_spam_collection" / "SMSSpamCollection")[:120]
    train_file = tmp_path / "sms.csv"
    with open(train_file, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["message", "class"])
        writer.writerows(rows)
    out = tmp_path / "out"
    args = ["--model_name_or_path", base_lm, "--train_mode", "lora", "--lora_r", 4, "--learning_rate", 1e-2]
    args += ["--train_file", train_file, "--text_column", "message", "--label_column", "class"]
    stdout = ok(run_example(env, *args, "--max_steps", 3, "--output_dir", out, *QUIET))
    assert "84 train / 12 validation / 24 test examples" in stdout  # 70/10/20, no balancing
    assert not (out / "adapter_config.json").exists()  # the top folder is a plain model
    assert (out / "adapter" / "adapter_config.json").is_file()

    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    base = AutoModelForSequenceClassification.from_pretrained(
        base_lm, num_labels=2, id2label=merged.config.id2label, label2id=merged.config.label2id
    )
    unmerged = PeftModel.from_pretrained(base, out / "adapter").eval()
    lora_b = [p for n, p in unmerged.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # the adapters were trained
    batch = load_tokenizer(str(out))(
        ["Free prize! Call now", "ok see you later lol"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = unmerged(**batch).logits
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=0)
        with unmerged.disable_adapter():  # without its adapters the model answers otherwise
            assert not torch.allclose(unmerged(**batch).logits, expected, atol=1e-3)


# -------------------------------------------------------------------------------------------- errors
def fails(example, capsys, argv, message):
    line = cli_error(example.main, argv, capsys)
    assert message in line, line


def test_bad_input_is_one_line_before_training(example, capsys, tmp_path, env, monkeypatch):
    monkeypatch.setenv("GPT_SCRATCH_CACHE", env["GPT_SCRATCH_CACHE"])
    model = ["--config_name", "tiny", "--output_dir", tmp_path / "never", *QUIET]
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\nhi,a\nho,a\nhu,a\n")
    fails(example, capsys, [*model, "--train_file", one_class], "a single label ('a') in column 'label'")
    fails(example, capsys, [*model, "--train_file", one_class, "--label_column", "y"],
          "has no column 'y'; its columns are 'text', 'label'")  # fmt: skip
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails(example, capsys, [*model, "--train_file", empty], "empty.csv holds no examples (empty file)")
    fails(example, capsys, [*model, "--model_name_or_path", tmp_path], "--model_name_or_path FOLDER")
    fails(
        example,
        capsys,
        [*model, "--max_length", 300],
        "--max_length 300 is above the model's context_length 256",
    )
    fails(example, capsys, [*model, "--eval_strategy", "no"], "load_best_model_at_end")
    fails(
        example,
        capsys,
        [*model, "--train_mode", "bad"],
        "invalid choice: 'bad' (choose from 'book', 'full', 'lora')",
    )
    assert not (tmp_path / "never").exists()


def test_the_base_model_and_a_full_folder_are_never_overwritten(example, capsys, base_lm, tmp_path):
    before = {p.name: p.read_bytes() for p in base_lm.iterdir()}
    fails(
        example,
        capsys,
        ["--model_name_or_path", base_lm, "--output_dir", base_lm, *QUIET],
        "is where the input",
    )
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("keep")
    fails(
        example,
        capsys,
        ["--model_name_or_path", base_lm, "--output_dir", full, *QUIET],
        "--overwrite_output_dir",
    )
    assert {p.name: p.read_bytes() for p in base_lm.iterdir()} == before
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_offline_without_the_sms_file_says_where_to_put_it(env, tmp_path):
    result = run_example(
        {**env, "GPT_SCRATCH_CACHE": str(tmp_path / "cache")},
        "--config_name",
        "tiny",
        "--output_dir",
        tmp_path / "o",
    )
    line = fails_cleanly(result, str(tmp_path / "cache" / "sms_spam_collection" / "SMSSpamCollection"))
    assert "offline" in line and "--train_file" in line
