#!/usr/bin/env python
"""Fine-tune the book's GPT as a text classifier (chapter 6, appendix E) with the Hugging Face Trainer.

    python examples/finetune_classifier.py --model_name_or_path out/gpt2-small --output_dir out/spam   # chapter 6
    python examples/finetune_classifier.py --config_name tiny --train_mode full --output_dir out/spam-tiny
    python examples/finetune_classifier.py --model_name_or_path out/gpt2-small --train_mode lora ...      # appendix E
    torchrun --nproc_per_node 2 examples/finetune_classifier.py ... --use_cpu      # DDP, on CPU too

Data: by default the SMS Spam Collection, downloaded once from UCI into $GPT_SCRATCH_CACHE (default
~/.cache/gpt-scratch/data) and prepared as the book does: ham cut down to the 747 spam messages, shuffled
and split 70/10/20 into 1,045 / 149 / 300 messages. Or --train_file (CSV/TSV with a header line, JSON,
JSONL; --text_column, --label_column) with optional --validation_file/--test_file (without them the
book's 70/10/20 split is made), or --dataset_name (a `datasets` name). Texts are truncated to the
longest training text (the book's max_length, 120 tokens for the spam data), capped at the model's
context length.

Model: GPTScratchForSequenceClassification, built on a causal-LM folder of ours (--model_name_or_path:
pretrained or converted) or on a random-init preset (--config_name); its new head `score` reads the last
real token of each text. --train_mode book trains what chapter 6 trains (the last transformer block,
final_norm and the head), full trains everything, lora trains LoRA adapters and the head (appendix E).

Every Trainer option works (--learning_rate, --num_train_epochs, --bf16, --push_to_hub, ...); the
defaults are the book's (AdamW lr 5e-5, weight decay 0.1, batch 8, 5 epochs) plus accuracy and F1 on the
validation set after every epoch and the best epoch kept. At the end: train, validation and test accuracy,
the test confusion matrix, and model + tokenizer saved into --output_dir, ready for
`pipeline("text-classification", model=output_dir, trust_remote_code=True)` (or without the flag after
`import modeling_gpt_scratch`); LoRA runs save the merged model there and the adapter
in output_dir/adapter.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import set_seed
from transformers.utils import logging as hf_logging

from modeling_gpt_scratch.classification import (
    balance_classes,
    label_names,
    random_split,
    read_labeled_file,
    read_sms_spam,
    sms_spam_path,
)
from modeling_gpt_scratch.cli import (
    CLIError,
    ModelSource,
    check_number,
    check_output_dir,
    check_trainer_arguments,
    exit_process,
    hf_argument_parser,
    publish_into,
    run_cli,
)
from modeling_gpt_scratch.instruction import add_lora, check_lora_options
from modeling_gpt_scratch.resolve import (
    check_vocab_fits,
    describe,
    load_config,
    load_pretrained,
    load_tokenizer_for,
)

TRAIN_MODES = ("book", "full", "lora")
RESULTS_FILE = "classifier_results.json"


@dataclass
class ModelArguments(ModelSource):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "a causal-LM (or classifier) folder of ours, or a Hub id"}
    )
    train_mode: str = field(
        default="book",
        metadata={
            "help": "book: last block + final_norm + head (chapter 6); full: everything; lora: LoRA + head",
            "choices": TRAIN_MODES,
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (appendix E: 16)"})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha (appendix E: 16)"})
    lora_style: str = field(
        default="book",
        metadata={
            "help": "book: update x alpha, A as appendix E draws it; peft: x alpha/r",
            "choices": ("book", "peft"),
        },
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    lora_target_modules: str = field(
        default="W_query,W_key,W_value,out_proj,ff.layers.0,ff.layers.2",
        metadata={"help": "comma-separated module-name suffixes that get adapters (default: every Linear)"},
    )


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None, metadata={"help": "CSV/TSV (header line), JSON or JSONL; default: SMS Spam Collection"}
    )
    validation_file: str | None = field(default=None, metadata={"help": "same format as --train_file"})
    test_file: str | None = field(default=None, metadata={"help": "same format as --train_file"})
    dataset_name: str | None = field(default=None, metadata={"help": "a `datasets` name, e.g. imdb"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its configuration"})
    text_column: str = field(default="text", metadata={"help": "column with the texts"})
    label_column: str = field(default="label", metadata={"help": "column with the labels"})
    data_cache_dir: str | None = field(
        default=None,
        metadata={"help": "where the SMS data is downloaded to or found; default $GPT_SCRATCH_CACHE"},
    )
    balance_classes: bool | None = field(
        default=None,
        metadata={
            "help": "undersample every class to the smallest (the book's create_balanced_dataset); "
            "default: yes for the SMS data, no otherwise"
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "truncate texts to this many tokens; default: the longest training text"},
    )


@dataclass
class ClassifierTrainingArguments(TrainingArguments):
    """The Trainer's options with the book's defaults (chapter 6: AdamW 5e-5, wd 0.1, batch 8, 5 epochs)."""

    output_dir: str | None = field(default="out/classifier", metadata={"help": "model, tokenizer, results"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "write into an --output_dir that already holds files"}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (book: 5e-5)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (book: 0.1)"})
    num_train_epochs: float = field(default=5.0, metadata={"help": "epochs (book: 5)"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "book: 8"})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "book: 8"})
    eval_strategy: str = field(default="epoch", metadata={"help": "evaluate: no, steps or epoch"})
    save_strategy: str = field(default="epoch", metadata={"help": "checkpoint: no, steps, epoch or best"})
    save_total_limit: int | None = field(default=1, metadata={"help": "checkpoints kept (plus the best)"})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "end with the best epoch's weights"})
    metric_for_best_model: str | None = field(default="accuracy", metadata={"help": "accuracy or f1"})
    logging_steps: float = field(
        default=50, metadata={"help": "log the training loss every N steps (book: 50)"}
    )
    seed: int = field(default=123, metadata={"help": "the book's torch.manual_seed(123)"})


# ---------------------------------------------------------------------------------------------- data
def load_splits(data, seed):
    """{"train": rows, "validation": rows, "test": rows or []} of (text, label-string) and a description."""
    given = {}
    if data.dataset_name:
        given, what = load_hub_dataset(data), f"dataset {data.dataset_name}"
    elif data.train_file:
        for split, path in (
            ("train", data.train_file),
            ("validation", data.validation_file),
            ("test", data.test_file),
        ):
            if path:
                given[split] = read_labeled_file(path, data.text_column, data.label_column)
        what = f"--train_file {data.train_file}"
    else:
        path = sms_spam_path(data.data_cache_dir)
        given["train"], what = read_sms_spam(path), f"SMS Spam Collection ({path})"
    classes = {label for _, label in given["train"]}
    if len(classes) < 2:
        raise CLIError(
            f"the training data has a single label ({classes.pop()!r}) in column {data.label_column!r}: a "
            "classifier needs examples of at least two classes"
        )
    balance = (
        data.balance_classes
        if data.balance_classes is not None
        else not (data.train_file or data.dataset_name)
    )
    rows = balance_classes(given["train"], seed) if balance else given["train"]
    if "validation" not in given and "test" not in given:  # the book's 70/10/20 shuffle and split
        train, validation, test = random_split(rows, seed=seed)
        what += f", {'balanced, ' if balance else ''}split 70/10/20"
    elif "validation" not in given:  # a test set but no validation set: 1/8 of the training data validates
        train, validation, _ = random_split(rows, 0.875, 0.125, seed=seed)
        test = given["test"]
    else:
        train, validation, test = rows, given["validation"], given.get("test", [])
    if not train or not validation:
        raise CLIError(f"{what}: too few examples ({len(rows)}) for a training and a validation set")
    return {"train": train, "validation": validation, "test": test}, what


def load_hub_dataset(data):
    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset(data.dataset_name, data.dataset_config_name)
    except Exception as error:
        raise CLIError(f"cannot load dataset {data.dataset_name!r}: {describe(error)}") from error
    out = {}
    for split in ("train", "validation", "test"):
        if split not in loaded:
            continue
        ds = loaded[split]
        missing = [c for c in (data.text_column, data.label_column) if c not in ds.column_names]
        if missing:
            raise CLIError(
                f"dataset {data.dataset_name} has no column {' or '.join(map(repr, missing))}; its columns are "
                f"{', '.join(map(repr, ds.column_names))} (choose with --text_column and --label_column)"
            )
        feature = ds.features[data.label_column]
        names = getattr(feature, "names", None)  # a ClassLabel: keep its names
        out[split] = [
            (str(t), names[y] if names else str(y))
            for t, y in zip(ds[data.text_column], ds[data.label_column], strict=True)
        ]
    if "train" not in out:
        raise CLIError(f"dataset {data.dataset_name} has no 'train' split (it has {', '.join(loaded)})")
    return out


# --------------------------------------------------------------------------------------------- model
def build_model(margs, names):
    """GPTScratchForSequenceClassification with a `len(names)`-way head, from a folder or a preset."""
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    config = load_config(margs.config_name, margs.model_name_or_path, margs.config_overrides, **labels)
    if config.model_type != "gpt_scratch":
        raise CLIError(
            f"{margs.model_name_or_path or margs.config_name} is a {config.model_type!r} model; this script trains "
            "the book's GPT (gpt_scratch): convert it first (conversion/convert_hf_gpt2.py for GPT-2)"
        )
    if margs.config_name:
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    return load_pretrained(  # quiet: the new head's missing weights are expected
        AutoModelForSequenceClassification,
        margs.model_name_or_path,
        quiet=True,
        dtype=torch.float32,
        ignore_mismatched_sizes=True,
        **labels,
    )


def set_train_mode(model, margs):
    """Chapter 6 trains the last transformer block, the final LayerNorm and the new head; appendix E
    trains LoRA adapters (and the head). Returns the model to train (a PeftModel for lora)."""
    if margs.train_mode == "full":
        model.requires_grad_(True)
        return model
    if margs.train_mode == "book":
        model.requires_grad_(False)
        for part in (model.model.trf_blocks[-1], model.model.final_norm, model.score):
            part.requires_grad_(True)
        return model
    targets = [t.strip() for t in margs.lora_target_modules.split(",") if t.strip()]
    try:  # the new head `score` is trained in full and saved with the adapter
        return add_lora(
            model, margs.lora_r, margs.lora_alpha, margs.lora_dropout, targets, style=margs.lora_style,
            task_type="SEQ_CLS", modules_to_save=["score"],
        )  # fmt: skip
    except ValueError as error:
        raise CLIError(f"--lora_target_modules {margs.lora_target_modules!r}: {describe(error)}") from error


def compute_metrics(eval_pred):
    """Accuracy, and F1: of class 1 (spam) for two classes, the mean over classes otherwise."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    preds = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    classes = [1] if logits.shape[-1] == 2 else range(logits.shape[-1])
    f1s = []
    for c in classes:
        tp = np.sum((preds == c) & (labels == c))
        denominator = np.sum(preds == c) + np.sum(labels == c)
        f1s.append(2 * tp / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(preds == labels)), "f1": float(np.mean(f1s))}


def confusion_matrix(preds, labels, names):
    matrix = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(matrix, (labels, preds), 1)
    width = max(8, *(len(n) + 2 for n in names))
    lines = ["Confusion matrix (test set; rows: true label, columns: predicted):"]
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
    lines += [
        f"{n:<{width}}" + "".join(f"{v:>{width}}" for v in row) for n, row in zip(names, matrix, strict=True)
    ]
    return matrix.tolist(), "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def parse(argv):
    dataclasses = (ModelArguments, DataArguments, ClassifierTrainingArguments)
    parser = hf_argument_parser(dataclasses, "finetune_classifier.py")
    try:
        margs, data, targs = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # TrainingArguments' own checks (fp16 on CPU, ...)
        raise CLIError(describe(error).partition(": ")[2]) from error
    if bool(margs.model_name_or_path) == bool(margs.config_name):
        raise CLIError(
            "pass --model_name_or_path FOLDER (a trained model of ours) or --config_name PRESET (random init)"
        )
    if data.dataset_name and data.train_file:
        raise CLIError("pass --train_file or --dataset_name, not both")
    if (data.validation_file or data.test_file) and not data.train_file:
        raise CLIError("--validation_file and --test_file need a --train_file")
    check_number("--max_length", data.max_length, at_least=1)
    check_lora_options(margs.lora_r, margs.lora_alpha, margs.lora_dropout)
    check_trainer_arguments(targs)
    if not targs.resume_from_checkpoint:  # a resumed run goes on in the folder of its checkpoints
        inputs = [margs.model_name_or_path, data.train_file, data.validation_file, data.test_file]
        check_output_dir(targs.output_dir, targs.overwrite_output_dir, inputs=inputs)
    return margs, data, targs


def prepare(margs, data, targs):
    """Everything that can be wrong, checked before training: data, labels, model, lengths."""
    splits, what = load_splits(data, targs.seed)
    names = label_names(label for rows in splits.values() for _, label in rows)
    unseen = sorted(set(names) - {label for _, label in splits["train"]})
    if unseen:
        raise CLIError(f"the training data has no example of label(s) {', '.join(map(repr, unseen))}")

    tokenizer = load_tokenizer_for(margs.tokenizer_name, margs.model_name_or_path)
    tokenizer.padding_side = "right"
    if targs.disable_tqdm:  # the model's loading bar too, not only the Trainer's
        hf_logging.disable_progress_bar()

    set_seed(targs.seed)  # the head's initial weights
    model = build_model(margs, names)
    check_vocab_fits(tokenizer, model.config)
    context = model.config.context_length
    lengths = [len(ids) for ids in tokenizer([t for t, _ in splits["train"]], verbose=False)["input_ids"]]
    longest = max(lengths)
    max_length = data.max_length or min(longest, context)
    if max_length > context:
        raise CLIError(f"--max_length {max_length} is above the model's context_length {context}")
    notes = [f"longest training text {longest} tokens; texts are truncated to {max_length} tokens"]
    too_long = sum(n > max_length for n in lengths)
    if too_long:
        notes.append(
            f"warning: {too_long} training text(s) are longer and lose their ends"
            + (f" (the model's context_length is {context})" if longest > context else "")
        )
    tokenizer.model_max_length = context  # `pipeline(..., truncation=True)` then cuts at the context
    datasets.disable_progress_bars()
    label2id = model.config.label2id

    def encode(rows):
        enc = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length, verbose=False)
        return datasets.Dataset.from_dict({**enc, "labels": [label2id[label] for _, label in rows]})

    encoded = {split: encode(rows) for split, rows in splits.items() if rows}
    return tokenizer, model, names, encoded, what, notes, max_length


def main(argv=None):
    margs, data, targs = parse(argv)
    tokenizer, model, names, encoded, what, notes, max_length = prepare(margs, data, targs)
    model = set_train_mode(model, margs)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    try:
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=encoded["train"],
            eval_dataset=encoded["validation"],
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(
                tokenizer, pad_to_multiple_of=8
            ),  # fewer shapes: faster on CPU
            compute_metrics=compute_metrics,
        )
    except (OSError, ValueError, RuntimeError) as error:  # e.g. --push_to_hub with no network or login
        raise CLIError(f"cannot set up the Trainer: {describe(error)}") from error
    say = print if trainer.is_world_process_zero() else (lambda *a, **k: None)
    sizes = " / ".join(f"{len(encoded[s])} {s}" for s in ("train", "validation", "test") if s in encoded)
    say(f"Data: {what}: {sizes} examples; labels {', '.join(f'{i}={n}' for i, n in enumerate(names))}")
    for note in notes:
        say(f"      {note}")
    say(
        f"Model: {type(trainer.model).__name__} ({margs.model_name_or_path or margs.config_name}), "
        f"train mode {margs.train_mode}: {trainable:,} of {total:,} parameters trainable; "
        f"world size {targs.world_size}"
    )

    train_result = trainer.train(resume_from_checkpoint=targs.resume_from_checkpoint)

    # ---- the book's accuracies, the confusion matrix, the saved model
    results = {"world_size": targs.world_size, "train_mode": margs.train_mode, "labels": names}
    results.update(max_length=max_length, trainable_parameters=trainable, **train_result.metrics)
    results["log_history"] = trainer.state.log_history
    for split in ("train", "validation", "test"):
        if split in encoded:
            metrics = trainer.evaluate(encoded[split], metric_key_prefix=split)
            results.update(metrics)
            say(
                f"{split.capitalize()} accuracy: {metrics[f'{split}_accuracy'] * 100:.2f}% (F1 {metrics[f'{split}_f1']:.4f})"
            )
    if "test" in encoded:
        prediction = trainer.predict(encoded["test"], metric_key_prefix="test")
        matrix, text = confusion_matrix(prediction.predictions.argmax(-1), prediction.label_ids, names)
        results["test_confusion_matrix"] = matrix
        say(text)

    output_dir = Path(targs.output_dir)
    lora = margs.train_mode == "lora"
    if trainer.is_world_process_zero():
        with publish_into(output_dir) as tmp:  # config.json last: the folder is a whole model or none
            if lora:  # the adapter for PeftModel.from_pretrained, then the merged model
                trainer.model.save_pretrained(tmp / "adapter")
            trainer.model = trainer.model_wrapped = (
                trainer.model.merge_and_unload() if lora else trainer.model
            )
            trainer.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=1))
        say(
            f"Saved to {output_dir}/: pipeline('text-classification', model='{output_dir}', trust_remote_code=True) loads it"
        )
    elif lora:
        trainer.model = trainer.model_wrapped = trainer.model.merge_and_unload()
    if targs.push_to_hub:
        source = margs.model_name_or_path
        hub_source = source if source and not os.path.exists(source) else None
        trainer.push_to_hub(
            tags=["gpt-scratch", "text-classification"],
            dataset=data.dataset_name or ("SMS Spam Collection" if not data.train_file else None),
            finetuned_from=hub_source,
        )
    return 0


if __name__ == "__main__":
    exit_process(run_cli(main))
