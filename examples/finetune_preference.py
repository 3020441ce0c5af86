#!/usr/bin/env python
"""Preference tuning with DPO (the bonus of the book's chapter 7) on TRL's DPOTrainer, fully or with LoRA.

    python examples/finetune_preference.py --model_name_or_path out/sft --output_dir out/dpo
    python examples/finetune_preference.py --model_name_or_path out/sft --use_peft --output_dir out/dpo-lora
    torchrun --nproc_per_node 2 examples/finetune_preference.py --model_name_or_path out/sft --output_dir out/dpo

Start from an instruction-tuned folder (examples/finetune_instruction.py's output): the policy and the
reference both begin as that model. Data: the book's instruction-data-with-preference.json (downloaded
once into $GPT_SCRATCH_CACHE or ~/.cache/gpt-scratch/data), a JSON or JSON Lines file (--train_file)
or a `datasets` name (--dataset_name) whose entries have "instruction" (and "input") or TRL's "prompt",
plus "chosen" and "rejected". It is split as in the book (85% train, 10% test, 5% validation, in order)
and tokenized as the book does: the Alpaca prompt, then "### Response:" and the response; only the
response part is scored.

The defaults are the book's: AdamW lr 5e-6, weight decay 0.01, beta 0.1, 1 epoch, batch 8, and the book's
loss, which averages the response tokens' log-probabilities (--loss_type sigmoid_norm; TRL's `sigmoid`
sums them as the DPO paper does). Every DPOConfig / Trainer option works (--loss_type, --beta,
--max_steps, --bf16, --eval_strategy, ...). Every --book_eval_steps steps the book's line is printed: loss
and reward margins on the first 5 training and validation batches, in eval mode; TRL's own log has
loss, rewards/chosen, rewards/rejected, rewards/margins and rewards/accuracies (beta * summed log-ratios).

At the end --output_dir holds the model (LoRA merged into it) and tokenizer with the Alpaca chat
template, preference-responses.json (greedy answers of the policy and the reference to the test split,
side by side) and dpo_results.json (the book's metrics before and after, TRL's log).
"""

import contextlib
import copy
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from modeling_gpt_scratch.cli import (
    CLIError,
    ModelSource,
    atomic_output_dir,
    hf_argument_parser,
    one_line,
    run_cli,
)
from modeling_gpt_scratch.instruction import InstructionDataArguments, check_lora_options
from modeling_gpt_scratch.resolve import check_vocab_fits, load_causal_lm, load_tokenizer_for

RESPONSES_FILE = "preference-responses.json"
RESULTS_FILE = "dpo_results.json"
DEFAULT_OUTPUT = "out/finetune-preference"


@dataclass
class ScriptArguments(InstructionDataArguments, ModelSource):
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "the model to align: a saved causal-LM folder (or Hub id), typically SFT"},
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON or JSONL preference file; default: the book's instruction-data-with-preference.json"
        },
    )
    book_eval_steps: int = field(
        default=5,
        metadata={"help": "print the book's metrics every N steps (book: 5); 0: before and after only"},
    )
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "train LoRA adapters; the reference is the model with them disabled; merged at the end"
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    identical_pairs: str | None = field(
        default=None,
        metadata={
            "help": "entries whose chosen and rejected are the same: error, keep or drop (default: error; keep "
            "for the book's own file, which has 6 that the book trains on)",
            "choices": ["error", "keep", "drop"],
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a non-empty --output_dir"})


def parse_args(argv=None):
    from trl import DPOConfig

    from modeling_gpt_scratch.preference import BOOK_DPO_DEFAULTS

    description = __doc__.split("\n\n")[0]
    parser = hf_argument_parser((ScriptArguments, DPOConfig), "finetune_preference.py", description)
    parser.set_defaults(output_dir=DEFAULT_OUTPUT, **BOOK_DPO_DEFAULTS)
    try:
        args, config = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # DPOConfig's and TrainingArguments' own checks
        raise CLIError(one_line(error)) from error
    if bool(args.model_name_or_path) == bool(args.config_name):
        raise CLIError("say which model to align: --model_name_or_path FOLDER (or --config_name PRESET)")
    if args.train_file and args.dataset_name:
        raise CLIError("pass --train_file or --dataset_name, not both")
    if args.max_new_tokens < 1 or args.book_eval_steps < 0:
        raise CLIError("--max_new_tokens must be >= 1 and --book_eval_steps >= 0")
    for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise CLIError(f"--{name} must be >= 0")
    check_lora_options(args.lora_r, args.lora_alpha, args.lora_dropout)
    if config.precompute_ref_log_probs:
        raise CLIError(
            "--precompute_ref_log_probs is not supported here: the book's metrics need the reference"
        )
    output = Path(config.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite_output_dir:
        raise CLIError(
            f"output folder {output} exists and is not empty; pass --overwrite_output_dir to replace it"
        )
    return args, config


def load_data(args) -> tuple[list[dict], str]:
    from modeling_gpt_scratch.data import DataError
    from modeling_gpt_scratch.instruction import load_dataset_entries
    from modeling_gpt_scratch.preference import (
        check_preference_records,
        load_preference_data,
        preference_data_path,
    )

    identical = args.identical_pairs or ("error" if args.train_file or args.dataset_name else "keep")
    try:
        if args.dataset_name:
            entries = load_dataset_entries(args.dataset_name, args.dataset_config_name)
            return check_preference_records(entries, args.dataset_name, identical), args.dataset_name
        path = args.train_file or preference_data_path(args.data_cache_dir)
        return load_preference_data(path, identical), str(path)
    except DataError as error:
        raise CLIError(str(error)) from error


def tokenize(entries, tokenizer, max_length, source, offset):
    """The book's token rows; a prompt that leaves no room for a response stops the run here."""
    from modeling_gpt_scratch.data import DataError
    from modeling_gpt_scratch.preference import tokenize_preference

    rows = []
    for index, entry in enumerate(entries, start=offset):
        try:
            row = tokenize_preference(entry, tokenizer)
        except DataError as error:
            raise CLIError(f"{source}: entry {index}: {error}") from error
        if len(row["prompt_ids"]) >= max_length:
            raise CLIError(
                f"{source}: entry {index}'s prompt is {len(row['prompt_ids'])} tokens, but the model sees at most "
                f"{max_length} (--max_length and its context_length): shorten or drop the entry"
            )
        rows.append(row)
    return rows


def book_line(label, train, val):
    text = f"{label}: Train loss {train['loss']:.3f}, "
    text += f"Val loss {val['loss']:.3f}, " if val else ""
    text += f"Train reward margins {train['margin']:.3f}"
    text += f", Val reward margins {val['margin']:.3f}" if val else ""
    return text


def make_callback(trainer_ref, train_set, val_set, every, history):
    from transformers import TrainerCallback

    class BookMetrics(TrainerCallback):
        """The book's evaluation every `every` steps: 5 batches of train and validation, in eval mode."""

        def on_step_end(self, args, state, control, **kwargs):
            if every and state.global_step % every == 0:
                trainer = trainer_ref[0]
                train = trainer.book_metrics(train_set)
                val = trainer.book_metrics(val_set) if val_set is not None else None
                history.append({"step": state.global_step, "train": train, "validation": val})
                if state.is_world_process_zero:
                    epoch = max(math.ceil(state.epoch or 0), 1)
                    print(book_line(f"Ep {epoch} (Step {state.global_step:06d})", train, val), flush=True)

    return BookMetrics()


def push(config, output_dir, args, metrics, source):
    from modeling_gpt_scratch.hub import push_run

    push_run(
        output_dir,
        config.hub_model_id or Path(config.output_dir).name,
        token=config.hub_token,
        metrics=metrics,
        commit_message="Preference tuning with DPO (chapter 7 bonus)",
        ignore_patterns=(),
        private=config.hub_private_repo,
        base_model=args.model_name_or_path,
        datasets=[args.dataset_name] if args.dataset_name else None,
        tags=["dpo", "trl", "preference-tuning"],
    )


def main(argv=None):
    # transformers/TRL renames a user cannot act on (TRL's DPOConfig still sets gradient_checkpointing)
    warnings.filterwarnings(
        "ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    args, config = parse_args(argv)
    data, source = load_data(args)  # bad data stops here, before any model is loaded

    from datasets import Dataset
    from transformers import set_seed

    from modeling_gpt_scratch.instruction import (
        add_chat_template,
        add_lora,
        generate_responses,
        split_for_training,
    )
    from modeling_gpt_scratch.preference import BookDPOTrainer

    tokenizer = load_tokenizer_for(args.tokenizer_name, args.model_name_or_path)
    set_seed(config.seed)
    model = load_causal_lm(args.config_name, args.model_name_or_path, args.config_overrides)
    check_vocab_fits(tokenizer, model.config)
    context_length = model.config.max_position_embeddings
    config.max_length = min(config.max_length or context_length, context_length)

    train_data, test_data, val_data = split_for_training(
        data, source, args.max_train_samples, args.max_eval_samples, args.max_test_samples
    )
    n_train, n_test = int(len(data) * 0.85), int(len(data) * 0.1)
    train_set = Dataset.from_list(tokenize(train_data, tokenizer, config.max_length, source, 0))
    val_rows = tokenize(val_data, tokenizer, config.max_length, source, n_train + n_test)
    val_set = Dataset.from_list(val_rows) if val_rows else None
    tokenize(test_data, tokenizer, config.max_length, source, n_train)  # checked now, not after training
    if val_set is None:
        config.eval_strategy = "no"

    if args.use_peft:
        model = add_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
        model.print_trainable_parameters()
        ref_model = None  # TRL's reference: the same model with its adapters disabled
    else:
        ref_model = copy.deepcopy(model)
    push_to_hub, config.push_to_hub = config.push_to_hub, False  # pushed below, once the folder is complete
    output_dir = Path(config.output_dir)
    config.output_dir = str(output_dir.parent / f".{output_dir.name}.trainer")  # checkpoints, if asked for

    history = []
    trainer_ref = []
    callback = make_callback(trainer_ref, train_set, val_set, args.book_eval_steps, history)
    trainer = BookDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer_ref.append(trainer)
    main_process = trainer.is_world_process_zero()
    if main_process:
        print(f"Run: world size {config.world_size}, loss {'+'.join(config.loss_type)}, beta {config.beta}")

    before = {"train": trainer.book_metrics(train_set)}
    before["validation"] = trainer.book_metrics(val_set) if val_set is not None else None
    if main_process:
        print(book_line("Before training", before["train"], before["validation"]), flush=True)
    trainer.train()
    after = {"train": trainer.book_metrics(train_set)}
    after["validation"] = trainer.book_metrics(val_set) if val_set is not None else None
    if main_process:
        print(book_line("After training", after["train"], after["validation"]), flush=True)

    if main_process:
        policy = trainer.accelerator.unwrap_model(trainer.model)
        responses = []
        if test_data:
            batch = config.per_device_eval_batch_size
            with trainer.reference_model() as reference:
                reference_answers = generate_responses(
                    reference, tokenizer, test_data, args.max_new_tokens, batch, context_length
                )
            policy_answers = generate_responses(
                policy, tokenizer, test_data, args.max_new_tokens, batch, context_length
            )
            for entry, ref_text, policy_text in zip(
                test_data, reference_answers, policy_answers, strict=True
            ):
                responses.append({**entry, "reference_response": ref_text, "policy_response": policy_text})
        if args.use_peft:  # one plain model again: LoRA's updates folded into the weights
            policy = policy.merge_and_unload()
        results = {
            "world_size": config.world_size,
            "loss_type": config.loss_type,
            "beta": config.beta,
            "before": before,
            "after": after,
            "book_log": history,
            "log_history": trainer.state.log_history,
        }
        add_chat_template(tokenizer)
        with atomic_output_dir(output_dir, overwrite=args.overwrite_output_dir) as tmp:
            policy.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / RESPONSES_FILE).write_text(json.dumps(responses, indent=4))
            (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        print(f"Model and tokenizer saved to {output_dir}")
        if responses:
            print(
                f"Responses of policy and reference to {len(responses)} test entries: {output_dir / RESPONSES_FILE}"
            )
            for entry in responses[:3]:
                print(f"\n>> {entry['instruction']}\nReference model:\n>> {entry['reference_response']}")
                print(f"Policy model:\n>> {entry['policy_response']}")
        if push_to_hub:
            metrics = {}
            if after["validation"]:
                metrics = {
                    "validation loss": after["validation"]["loss"],
                    "validation margin": after["validation"]["margin"],
                }
            push(config, output_dir, args, metrics, source)
    trainer.accelerator.wait_for_everyone()
    if main_process:
        with contextlib.suppress(OSError):
            Path(config.output_dir).rmdir()  # the Trainer's folder, when no checkpoint went there


def finish(code):
    """Leave without the abort distributed runs sometimes end with: flush, close the process group, exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    code = run_cli(main)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        finish(code)
    sys.exit(code)
