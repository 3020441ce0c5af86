"""The book's own code (`llms-from-scratch` 1.0.19 on PyPI, the `book` test extra) as the reference:
its files, its appendix D schedule, its appendix E LoRA, its chapter 6 classifier and its chapter 5
training loop, compared with ours on the same inputs."""

import shutil

import pandas as pd
import pytest
import torch
from llms_from_scratch import appendix_d as book_d
from llms_from_scratch import ch04 as book_ch04
from llms_from_scratch import ch06 as book_ch06

from modeling_gpt_scratch.classification import read_labeled_file, read_sms_spam
from modeling_gpt_scratch.data import DataError
from modeling_gpt_scratch.schedules import (
    ClipAfterWarmupCallback,
    book_appendix_d_lr,
    book_appendix_d_scheduler,
    book_clips_gradients,
)


# ------------------------------------------------------------------------------- chapter 6's files
def book_rows(df):
    """(text, label) rows of a pandas frame with the book's `Label` and `Text` columns, as strings."""
    return [(str(text), str(label)) for text, label in zip(df["Text"], df["Label"], strict=True)]


def test_the_book_sms_file_and_its_csvs_are_read_as_they_are(shared_data, tmp_path):
    """Chapter 6 reads `SMSSpamCollection.tsv` (no header, `label<TAB>text`) and writes `train.csv`,
    `validation.csv`, `test.csv` (columns `Label,Text`) with pandas; every one is read without flags."""
    source = shared_data / "sms_spam_collection" / "SMSSpamCollection"
    tsv = tmp_path / "SMSSpamCollection.tsv"  # the name the book's download function gives it
    shutil.copy(source, tsv)
    df = pd.read_csv(tsv, sep="\t", header=None, names=["Label", "Text"])  # the book's own call
    rows = read_labeled_file(tsv)
    assert rows == book_rows(df) == read_sms_spam(source)
    assert len(rows) == 5572
    assert read_labeled_file(source) == rows  # without the suffix, as inside UCI's zip file

    # The rest of the book's chapter 6 preparation, with its own functions, and its to_csv calls.
    balanced = book_ch06.create_balanced_dataset(df)
    balanced["Label"] = balanced["Label"].map({"ham": 0, "spam": 1})
    splits = dict(
        zip(("train", "validation", "test"), book_ch06.random_split(balanced, 0.7, 0.1), strict=True)
    )
    for name, split in splits.items():
        split.to_csv(tmp_path / f"{name}.csv", index=None)
        assert (tmp_path / f"{name}.csv").read_text(encoding="utf-8").startswith("Label,Text\n")
        ours = read_labeled_file(tmp_path / f"{name}.csv")
        assert ours == book_rows(pd.read_csv(tmp_path / f"{name}.csv"))  # as the book's SpamDataset reads it
    assert [len(read_labeled_file(tmp_path / f"{n}.csv")) for n in splits] == [1045, 149, 300]


def test_headerless_files_bom_and_column_case(tmp_path):
    lines = ["ham\tOk lar... Joking wif u oni...", "spam\tWINNER!! claim, now", "ham\tsee you, later"]
    (tmp_path / "sms.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = [
        ("Ok lar... Joking wif u oni...", "ham"),
        ("WINNER!! claim, now", "spam"),
        ("see you, later", "ham"),
    ]
    assert read_labeled_file(tmp_path / "sms.tsv") == expected
    # The text first and the label second is recognised as well: the label column repeats its values.
    swapped = "\n".join("\t".join(reversed(line.split("\t"))) for line in lines)
    (tmp_path / "swapped.txt").write_text(swapped, encoding="utf-8")
    assert read_labeled_file(tmp_path / "swapped.txt") == expected

    # A byte-order mark (Excel's "CSV UTF-8") in front of the header or of the first label.
    pd.DataFrame({"Label": [0, 1], "Text": ["hi, there", 'say "hi"']}).to_csv(
        tmp_path / "bom.csv", index=None, encoding="utf-8-sig"
    )
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbfLabel,Text")
    assert read_labeled_file(tmp_path / "bom.csv") == [("hi, there", "0"), ('say "hi"', "1")]
    (tmp_path / "bom.tsv").write_text("\n".join(lines), encoding="utf-8-sig")
    assert read_labeled_file(tmp_path / "bom.tsv") == expected
    (tmp_path / "bom.jsonl").write_text('{"Text": "hi", "LABEL": 1}\n', encoding="utf-8-sig")
    assert read_labeled_file(tmp_path / "bom.jsonl") == [("hi", "1")]

    # A header whose names are no columns of ours is still a header, with the error naming the fix.
    (tmp_path / "named.tsv").write_text("sentence\ty\nhi\t1\nyo\t0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'text' or 'label'; its columns are 'sentence', 'y'"):
        read_labeled_file(tmp_path / "named.tsv")
    assert read_labeled_file(tmp_path / "named.tsv", "sentence", "y") == [("hi", "1"), ("yo", "0")]
    (tmp_path / "ragged.csv").write_text("Label,Text\n0,hi\n1,a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 3 has 3 fields where the header line names 2; quote"):
        read_labeled_file(tmp_path / "ragged.csv")


# ------------------------------------------------------------------------------- appendix D's schedule
def run_book_train_model(monkeypatch, n_batches, n_epochs, warmup_steps, peak_lr, orig_book_version):
    """The book's appendix D `train_model` on a one-layer book GPT: the learning rate of every step
    (it returns them) and the steps whose gradients it clipped."""
    import tiktoken

    torch.manual_seed(123)
    cfg = {"vocab_size": 50257, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1}
    model = book_ch04.GPTModel({**cfg, "drop_rate": 0.0, "qkv_bias": False})
    batches = [(torch.randint(0, 50257, (2, 4)), torch.randint(0, 50257, (2, 4))) for _ in range(n_batches)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.1)
    steps, clipped = [], []
    optimizer.register_step_pre_hook(lambda *args: steps.append(len(steps)))
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda *a, **k: (clipped.append(len(steps)), clip(*a, **k))[1]
    )
    *_, lrs = book_d.train_model(
        model,
        batches,
        batches[:1],
        optimizer,
        "cpu",
        n_epochs=n_epochs,
        eval_freq=1000,
        eval_iter=1,
        start_context="Every effort",
        tokenizer=tiktoken.get_encoding("gpt2"),
        warmup_steps=warmup_steps,
        orig_book_version=orig_book_version,
    )
    monkeypatch.undo()
    assert steps == list(range(n_batches * n_epochs))
    return lrs, clipped


@pytest.mark.parametrize("orig_book_version", [False, True])
def test_appendix_d_schedule_equals_the_books_train_model(monkeypatch, orig_book_version, one_thread):
    n_batches, n_epochs, warmup, peak = 5, 3, 3, 1e-3  # the book: warmup_steps = 20% of the steps
    book_lrs, book_clipped = run_book_train_model(
        monkeypatch, n_batches, n_epochs, warmup, peak, orig_book_version
    )
    total = n_batches * n_epochs

    ours = [
        book_appendix_d_lr(
            s, peak_lr=peak, initial_lr=3e-5, min_lr=1e-6, warmup_steps=warmup, total_steps=total
        )
        for s in range(total)
    ]
    assert ours == book_lrs  # equal floats, not close ones
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = book_appendix_d_scheduler(optimizer, warmup_steps=warmup, total_steps=total)
    from_scheduler = []
    for _ in range(total):
        from_scheduler.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert from_scheduler == book_lrs
    assert book_lrs[0] == 3e-5 and book_lrs[warmup] == peak and book_lrs[-1] > 1e-6

    assert [s for s in range(total) if book_clips_gradients(s, warmup, orig_book_version)] == book_clipped
    assert book_clipped[0] == (warmup + 1 if orig_book_version else warmup)


def test_appendix_d_schedule_in_the_trainer(monkeypatch, tmp_path, one_thread):
    """The scheduler and the clipping callback in a Trainer run: the rate of each optimizer step and
    the steps clipped are appendix D's."""
    from transformers import Trainer, TrainingArguments

    from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM

    config = GPTScratchConfig.from_preset("tiny", emb_dim=16, n_heads=2, n_layers=1, context_length=16)
    model = GPTScratchForCausalLM(config)
    data = [{"input_ids": torch.randint(0, 50257, (8,))} for _ in range(12)]
    for row in data:
        row["labels"] = row["input_ids"]
    warmup, total, peak = 2, 6, 1e-3  # 12 rows, batch 4, 2 epochs: 6 optimizer steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.1)
    scheduler = book_appendix_d_scheduler(optimizer, warmup_steps=warmup, total_steps=total)
    lrs, clipped = [], []
    optimizer.register_step_pre_hook(lambda opt, *a: lrs.append(opt.param_groups[0]["lr"]))
    for name in ("clip_grad_norm_", "clip_grads_with_norm_"):  # accelerate calls one or the other
        original = getattr(torch.nn.utils, name)

        def recording(params, max_norm, *args, _original=original, **kwargs):
            if max_norm != float("inf"):  # the Trainer measures the norm with inf when it does not clip
                clipped.append(len(lrs))
            return _original(params, max_norm, *args, **kwargs)

        monkeypatch.setattr(torch.nn.utils, name, recording)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        max_grad_norm=1.0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        logging_steps=100,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        optimizers=(optimizer, scheduler),
        callbacks=[ClipAfterWarmupCallback(warmup)],
    )
    trainer.train()
    expected = [
        book_appendix_d_lr(
            s, peak_lr=peak, initial_lr=3e-5, min_lr=1e-6, warmup_steps=warmup, total_steps=total
        )
        for s in range(total)
    ]
    assert lrs == expected
    assert clipped == list(range(warmup, total))
    assert args.max_grad_norm == 1.0  # the user's value is back


def test_appendix_d_schedule_errors():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match="needs warmup_steps >= 1, got 0"):
        book_appendix_d_scheduler(optimizer, warmup_steps=0, total_steps=10)
    with pytest.raises(ValueError, match=r"needs more steps \(4\) than warm-up steps \(4\)"):
        book_appendix_d_scheduler(optimizer, warmup_steps=4, total_steps=4)
