"""The book's own code (`llms-from-scratch` 1.0.19 on PyPI, the `book` test extra) as the reference:
its files, its appendix D schedule, its appendix E LoRA, its chapter 6 classifier and its chapter 5
training loop, compared with ours on the same inputs."""

import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import REPO, ok, run_script, script_env
from llms_from_scratch import appendix_d as book_d
from llms_from_scratch import appendix_e as book_e
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
    with monkeypatch.context() as patch:  # the book calls torch.nn.utils.clip_grad_norm_: count the calls
        patch.setattr(
            torch.nn.utils, "clip_grad_norm_", lambda *a, **k: (clipped.append(len(steps)), clip(*a, **k))[1]
        )
        *_, lrs = book_d.train_model(
            model, batches, batches[:1], optimizer, "cpu", n_epochs=n_epochs, eval_freq=1000, eval_iter=1,
            start_context="Every effort", tokenizer=tiktoken.get_encoding("gpt2"), warmup_steps=warmup_steps,
            orig_book_version=orig_book_version,
        )  # fmt: skip
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


# pretrain.py with every Accelerator.clip_grad_norm_ call and every finished step recorded, in order.
RECORDING_PRETRAIN = """
import json, sys
import accelerate
from modeling_gpt_scratch import training
events, clip, check = [], accelerate.Accelerator.clip_grad_norm_, training.check_finite
accelerate.Accelerator.clip_grad_norm_ = lambda self, *a, **k: (events.append("clip"), clip(self, *a, **k))[1]
training.check_finite = lambda loss, step: (events.append("step"), check(loss, step))[1]
sys.path.insert(0, "examples")
import pretrain
assert pretrain.main(sys.argv[1:]) == 0
print("EVENTS", json.dumps(events))
"""


@pytest.mark.parametrize("warmup", [None, 3])
def test_pretrain_book_appendix_d_schedule_equals_the_books_train_model(
    monkeypatch, tmp_path, tmp_path_factory, shared_data, warmup, one_thread
):
    """`pretrain.py --lr_scheduler_type book_appendix_d`: the learning rate of every step and the
    steps it clips are those of the book's own `train_model` over as many steps (the book warms up
    for int(0.2 * total_steps) when --num_warmup_steps is not given)."""
    import subprocess
    import sys

    n_batches, n_epochs, peak = 5, 2, 1e-3
    total = n_batches * n_epochs
    book_lrs, book_clipped = run_book_train_model(
        monkeypatch, n_batches, n_epochs, warmup or int(0.2 * total), peak, False
    )
    out = tmp_path / "run"
    args = [*CUT_MODEL, "--train_file", shared_data / "the-verdict" / "the-verdict.txt"]
    args += ["--max_train_steps", total, "--lr_scheduler_type", "book_appendix_d", "--learning_rate", peak]
    args += ["--eval_steps", 100, "--eval_iters", 1, "--max_new_tokens", 2, "--output_dir", out]
    args += ["--num_warmup_steps", warmup] if warmup else []
    result = subprocess.run(
        [sys.executable, "-c", RECORDING_PRETRAIN, *map(str, args)],
        cwd=REPO, env=script_env(tmp_path_factory), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    stdout = ok(result)
    events = json.loads(stdout.split("EVENTS ")[-1])
    clipped, steps = [], 0
    for event in events:
        steps += event == "step"
        if event == "clip":
            clipped.append(steps)  # the 0-based step whose gradients were clipped
    assert steps == total and clipped == book_clipped
    assert json.loads((out / "training_log.json").read_text())["learning_rates"] == book_lrs  # equal floats
    assert f"{warmup or 2} warmup steps" in stdout


def test_pretrain_book_appendix_d_errors(tmp_path, tmp_path_factory, shared_data, capsys):
    from conftest import cli_error, fails_cleanly, load_example

    argv = [*CUT_MODEL, "--output_dir", tmp_path / "out", "--initial_lr", "1e-4"]
    assert "--initial_lr and --min_lr set --lr_scheduler_type book_appendix_d" in cli_error(
        load_example("pretrain").main, argv, capsys
    )
    args = [*CUT_MODEL, "--train_file", shared_data / "the-verdict" / "the-verdict.txt"]
    args += ["--max_train_steps", 4, "--lr_scheduler_type", "book_appendix_d", "--output_dir", tmp_path / "o"]
    result = run_script(PRETRAIN, *args, env=script_env(tmp_path_factory))
    fails_cleanly(
        result, "--lr_scheduler_type book_appendix_d: appendix D's schedule needs warmup_steps >= 1"
    )
    assert {f.name for f in (tmp_path / "o").glob("*")} <= {".writer.lock"}  # nothing but the lock


# ------------------------------------------------------------------------------- chapter 6's classifier
SPAM_TEXTS = [
    "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
    "Hey, just wondering if you're up for dinner tonight?",
    "Ok",
    "URGENT! Your mobile number has been awarded a prize. Call 09061701461 now, claim code KL341, valid 12hrs",
    "I'll be late, sorry",
]


def book_classifier(cfg, num_classes=2):
    """Chapter 6's model: the book's GPTModel with its `out_head` replaced by a Linear(emb_dim, 2)."""
    torch.manual_seed(123)
    model = book_ch04.GPTModel(cfg)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], num_classes)
    return model.eval()


def ours_from_book(book_model, config):
    """Our classifier with the book model's weights (same names, `out_head` is our `score`)."""
    from modeling_gpt_scratch import GPTScratchForSequenceClassification

    ours = GPTScratchForSequenceClassification(config).eval()
    weights = {
        ("score." + k[len("out_head.") :]) if k.startswith("out_head.") else "model." + k: v
        for k, v in book_model.state_dict().items()
        if not k.endswith(".att.mask")
    }
    ours.load_state_dict(weights, strict=True)
    return ours


def test_last_position_pooling_gives_the_books_classify_review(tmp_path, one_thread):
    """A chapter 6 classifier read the book's way (right-padded to 12 tokens, last position) gives
    the logits and answers of the book's `classify_review`, texts shorter and longer than 12 tokens,
    alone, in a padded batch and through `pipeline("text-classification")` on a saved folder."""
    import tiktoken
    from transformers import pipeline

    from modeling_gpt_scratch import GPTScratchConfig
    from modeling_gpt_scratch.tokenization import load_tokenizer

    cfg = {"vocab_size": 50257, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
    cfg.update(drop_rate=0.0, qkv_bias=True)
    book = book_classifier(cfg)
    tiktok, padded_length = tiktoken.get_encoding("gpt2"), 12
    assert {len(tiktok.encode(t)) > padded_length for t in SPAM_TEXTS} == {True, False}

    def run_book():
        logits, answers = [], []
        hook = book.register_forward_hook(lambda module, args, out: logits.append(out[:, -1, :]))
        for text in SPAM_TEXTS:
            answers.append(book_ch06.classify_review(text, book, tiktok, "cpu", max_length=padded_length))
        hook.remove()
        return torch.cat(logits), answers

    logits, _ = run_book()

    # A random model's answers barely depend on the text: move the head's threshold between them.
    margins = sorted((logits[:, 1] - logits[:, 0]).tolist())
    with torch.no_grad():
        book.out_head.bias[1] -= (margins[1] + margins[2]) / 2
    book_logits, answers = run_book()
    assert len(set(answers)) == 2  # the test tells the two classes apart

    id2label = {0: "not spam", 1: "spam"}  # classify_review's names
    config = GPTScratchConfig.from_book_dict(
        cfg, id2label=id2label, classifier_pooling="last_position", classifier_padded_length=padded_length
    )
    ours = ours_from_book(book, config)
    tokenizer = load_tokenizer()
    with torch.no_grad():
        one_by_one = torch.cat([ours(**tokenizer(t, return_tensors="pt")).logits for t in SPAM_TEXTS])
        tokenizer.padding_side = "left"  # wherever the padding sits, the mask says what is text
        batch = ours(**tokenizer(SPAM_TEXTS, return_tensors="pt", padding=True)).logits
        tokenizer.padding_side = "right"
        unpadded = ours(input_ids=tokenizer(SPAM_TEXTS[2], return_tensors="pt")["input_ids"]).logits
    torch.testing.assert_close(one_by_one, book_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch, book_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unpadded[0], book_logits[2], rtol=1e-5, atol=1e-5)
    assert [id2label[int(i)] for i in batch.argmax(-1)] == answers

    ours.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    classify = pipeline("text-classification", model=str(tmp_path / "clf"), device="cpu")
    assert [p["label"] for p in classify(SPAM_TEXTS)] == answers
    assert [p["label"] for p in classify(SPAM_TEXTS, batch_size=3)] == answers

    # Our default reads the last real token: other logits for every text shorter than 12 tokens.
    ours.config.classifier_pooling = "last_token"
    with torch.no_grad():
        last_token = ours(**tokenizer(SPAM_TEXTS[2], return_tensors="pt")).logits  # "Ok": one token
    assert not torch.allclose(last_token[0], book_logits[2], atol=1e-3)


def test_classifier_pooling_config_errors():
    from modeling_gpt_scratch import GPTScratchConfig

    with pytest.raises(ValueError, match="`classifier_pooling` must be one of 'last_token', 'last_position'"):
        GPTScratchConfig(classifier_pooling="mean")
    with pytest.raises(
        ValueError, match="`classifier_padded_length` must be a positive integer or None, got 0"
    ):
        GPTScratchConfig(classifier_padded_length=0)
    with pytest.raises(
        ValueError, match=r"`classifier_padded_length` \(2048\) exceeds `context_length` \(1024\)"
    ):
        GPTScratchConfig(classifier_padded_length=2048)
    with pytest.raises(ValueError, match="pads with `pad_token_id`, which is None"):
        GPTScratchConfig(classifier_pooling="last_position", pad_token_id=None)
    config = GPTScratchConfig(classifier_pooling="last_position", classifier_padded_length=120)
    assert GPTScratchConfig.from_dict(config.to_dict()).classifier_padded_length == 120


# ------------------------------------------------------------------------------- appendix E's LoRA
def lora_pairs(peft_model, book_model):
    """(peft LoRA layer, book LinearWithLoRA) pairs, in module order."""
    from peft.tuners.lora import LoraLayer

    ours = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    book = [m for m in book_model.modules() if isinstance(m, book_e.LinearWithLoRA)]
    assert len(ours) == len(book) > 0
    return list(zip(ours, book, strict=True))


def test_lora_layer_scales_as_the_books(one_thread):
    """On one Linear layer with the same A and B: style "book" gives the book's `LinearWithLoRA`
    output, peft's own scaling gives an update r times weaker."""
    from modeling_gpt_scratch.instruction import add_lora

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 10))
    x = torch.randn(3, 12)
    book = book_e.LinearWithLoRA(net[0], rank=4, alpha=8)
    with torch.no_grad():
        book.lora.B.normal_()
    expected = book(x)
    for style, factor in (("book", 1.0), ("peft", 1 / 4)):
        ours = add_lora(
            torch.nn.Sequential(torch.nn.Linear(12, 10)),
            r=4,
            alpha=8,
            target_modules=["0"],
            task_type=None,
            style=style,
        )
        layer = ours.base_model.model[0]
        with torch.no_grad():
            layer.base_layer.load_state_dict(net[0].state_dict())
            layer.lora_A["default"].weight.copy_(book.lora.A.T)
            layer.lora_B["default"].weight.copy_(book.lora.B.T)
            update = expected - net[0](x)
            torch.testing.assert_close(ours(x), net[0](x) + factor * update)


def test_lora_model_equals_appendix_e(one_thread):
    """Appendix E's classifier: the book's GPT with a 2-class `out_head`, every Linear (the head too)
    replaced by `LinearWithLoRA(rank, alpha)` after `torch.manual_seed(123)`. Ours with the same
    seed: the same A matrices; with the same (trained, here random) B: the same logits."""
    from modeling_gpt_scratch import GPTScratchConfig
    from modeling_gpt_scratch.instruction import LORA_TARGET_MODULES, add_lora

    cfg = {"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
    cfg.update(drop_rate=0.0, qkv_bias=True)
    book = book_classifier(cfg)
    config = GPTScratchConfig.from_book_dict(
        cfg, classifier_pooling="last_position", classifier_padded_length=16
    )
    ours = ours_from_book(book, config)

    torch.manual_seed(123)
    book.requires_grad_(False)
    book_e.replace_linear_with_lora(book, rank=8, alpha=16)
    ours = add_lora(
        ours, r=8, alpha=16, target_modules=[*LORA_TARGET_MODULES, "score"], task_type=None, seed=123
    )
    trainable = sum(p.numel() for p in book.parameters() if p.requires_grad)
    assert ours.get_nb_trainable_parameters()[0] == trainable
    for peft_layer, book_layer in lora_pairs(ours, book):
        torch.testing.assert_close(peft_layer.lora_A["default"].weight, book_layer.lora.A.T, rtol=0, atol=0)
        with torch.no_grad():  # stand-ins for trained B matrices
            book_layer.lora.B.normal_(std=0.2)
            peft_layer.lora_B["default"].weight.copy_(book_layer.lora.B.T)

    ids = torch.randint(0, 50257, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, book(ids)[:, -1, :], rtol=1e-5, atol=1e-5)
        base = ours_from_book(book_classifier(cfg), config)(input_ids=ids).logits
    assert not torch.allclose(base, book(ids)[:, -1, :], atol=1e-2)  # the adapters do change the answers


# ------------------------------------------------------------------------------- chapter 5's randomness
# The book's chapter 5 run cut down: a 2-layer, 32-dimension GPT at context 32 on the first 8,000
# characters of The Verdict (1,700 training tokens), 2 epochs, everything else as printed.
CUT_BOOK_CFG = {"vocab_size": 50257, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
CUT_BOOK_CFG.update(drop_rate=0.1, qkv_bias=False)
CUT_EPOCHS = 2


def cut_verdict(shared_data):
    return (shared_data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")[:8000]


def book_ch05_run(train_text, val_text):
    """The book's own chapter 5 code on the cut model: (initial state dict, train losses, val losses,
    tokens seen, steps per epoch) of its `train_model_simple` (seed 123, shuffled loader, AdamW 4e-4 / 0.1, an
    evaluation every 5 steps on 5 batches, a greedy sample per epoch)."""
    import tiktoken
    from llms_from_scratch import ch02 as book_ch02
    from llms_from_scratch import ch05 as book_ch05

    loader_args = {"batch_size": 2, "max_length": 32, "stride": 32}
    torch.manual_seed(123)
    book = book_ch04.GPTModel(CUT_BOOK_CFG)
    initial = {k: v.clone() for k, v in book.state_dict().items() if not k.endswith(".mask")}
    book_train = book_ch02.create_dataloader_v1(train_text, **loader_args, drop_last=True, shuffle=True)
    book_val = book_ch02.create_dataloader_v1(val_text, **loader_args, drop_last=False, shuffle=False)
    optimizer = torch.optim.AdamW(book.parameters(), lr=4e-4, weight_decay=0.1)
    train_losses, val_losses, tokens = book_ch05.train_model_simple(
        book, book_train, book_val, optimizer, "cpu", num_epochs=CUT_EPOCHS, eval_freq=5, eval_iter=5,
        start_context="Every effort moves you", tokenizer=tiktoken.get_encoding("gpt2"),
    )  # fmt: skip
    return initial, train_losses, val_losses, tokens, len(book_train)


def test_book_exact_pretraining_loop_gives_the_books_losses(shared_data, one_thread):
    """The book's chapter 5 run on a cut model with the book's own code, and the same run with our
    model, loaders and `train_model_simple`: every evaluation equal."""
    from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
    from modeling_gpt_scratch.book_pretraining import book_init_, book_loaders, train_model_simple
    from modeling_gpt_scratch.data import train_val_split

    train_text, val_text = train_val_split(cut_verdict(shared_data))
    initial, book_train_losses, book_val_losses, book_tokens, _ = book_ch05_run(train_text, val_text)

    torch.manual_seed(0)  # whatever happened before: book_init_ reseeds
    config = GPTScratchConfig.from_book_dict(CUT_BOOK_CFG, tie_word_embeddings=False)
    ours = book_init_(GPTScratchForCausalLM(config), 123)
    for name, tensor in initial.items():
        torch.testing.assert_close(
            ours.state_dict()[f"model.{name}" if name != "out_head.weight" else name], tensor
        )
    train_loader, val_loader = book_loaders(train_text, val_text, block_size=32, batch_size=2)
    optimizer = torch.optim.AdamW(ours.parameters(), lr=4e-4, weight_decay=0.1)
    lines = []
    history = train_model_simple(
        ours, train_loader, val_loader, optimizer, num_epochs=CUT_EPOCHS, log=lines.append
    )

    assert len(history.train_losses) == len(book_train_losses) > 10
    assert history.tokens_seen == book_tokens
    assert history.train_losses == pytest.approx(book_train_losses, abs=1e-5)  # 6e-7 measured
    assert history.val_losses == pytest.approx(book_val_losses, abs=1e-5)
    assert (
        lines[0]
        == f"Ep 1 (Step 000000): Train loss {book_train_losses[0]:.3f}, Val loss {book_val_losses[0]:.3f}"
    )


PRETRAIN = REPO / "examples" / "pretrain.py"
CUT_MODEL = ["--config_name", "GPT_CONFIG_124M", "--config_overrides", "context_length=32,emb_dim=32,n_layers=2,n_heads=2"]  # fmt: skip


def test_pretrain_book_exact_prints_the_books_losses(shared_data, tmp_path_factory, tmp_path, one_thread):
    """`examples/pretrain.py --book_exact` on the cut model and text: every evaluation line it prints
    is the line the book's own `train_model_simple` prints, and its log holds the same losses."""
    from modeling_gpt_scratch.book_pretraining import book_log_line
    from modeling_gpt_scratch.data import train_val_split

    text = cut_verdict(shared_data)
    (tmp_path / "cut.txt").write_text(text, encoding="utf-8")
    _, book_train, book_val, book_tokens, steps_per_epoch = book_ch05_run(*train_val_split(text))

    out = tmp_path / "run"
    args = [
        "--book_exact",
        *CUT_MODEL,
        "--train_file",
        tmp_path / "cut.txt",
        "--num_train_epochs",
        CUT_EPOCHS,
    ]
    args += ["--max_new_tokens", 5, "--output_dir", out]
    stdout = ok(run_script(PRETRAIN, *args, env=script_env(tmp_path_factory)))

    printed = [line for line in stdout.splitlines() if line.startswith("Ep ")]
    steps = [5 * i for i in range(len(book_train))]
    epochs = [1 + s // steps_per_epoch for s in steps]
    assert printed == [book_log_line(*row) for row in zip(epochs, steps, book_train, book_val, strict=True)]
    assert stdout.count("Every effort moves you") == CUT_EPOCHS  # the book's sample after each epoch
    log = json.loads((out / "training_log.json").read_text())
    assert log["book_exact"] and log["finished"] and log["global_step"] == CUT_EPOCHS * steps_per_epoch
    assert [e["train_loss"] for e in log["evals"]] == pytest.approx(book_train, abs=1e-5)
    assert [e["val_loss"] for e in log["evals"]] == pytest.approx(book_val, abs=1e-5)
    assert [e["tokens_seen"] for e in log["evals"]] == book_tokens
    assert (out / "model.safetensors").is_file() and (out / "loss-plot.png").is_file()


BOOK_EXACT_REFUSES = {
    "gradient accumulation": (["--gradient_accumulation_steps", 2], "--book_exact takes one batch per step"),
    "a schedule": (["--lr_scheduler_type", "cosine"], "--book_exact keeps the book's constant rate"),
    "resuming": (["--resume_from_checkpoint", "latest"], "drop --resume_from_checkpoint"),
    "mixed precision": (["--mixed_precision", "bf16"], "--book_exact trains in float32"),
    "another init": (["--init", "gpt2"], "--book_exact draws the book's initial weights"),
    "a step budget": (["--max_train_steps", 3], "--book_exact runs whole epochs"),
}


@pytest.mark.parametrize("case", list(BOOK_EXACT_REFUSES))
def test_pretrain_book_exact_refuses_what_it_cannot_honour(case, tmp_path, capsys):
    from conftest import cli_error, load_example

    args, message = BOOK_EXACT_REFUSES[case]
    argv = ["--book_exact", *CUT_MODEL, "--output_dir", tmp_path / "out", *args]
    assert message in cli_error(load_example("pretrain").main, argv, capsys)
    assert not (tmp_path / "out").exists()
