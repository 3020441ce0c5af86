#!/usr/bin/env python
"""Instruction fine-tuning of the book's GPT (chapter 7) with the Hugging Face Trainer, fully or with LoRA.

    python examples/finetune_instruction.py --model_name_or_path out/gpt2-medium --output_dir out/sft
    python examples/finetune_instruction.py --config_name tiny --output_dir out/sft-tiny   # random init
    python examples/finetune_instruction.py --model_name_or_path out/gpt2-medium --use_lora --mask_prompt \\
        --output_dir out/sft-lora --push_to_hub --hub_model_id me/gpt2-medium-sft

Data: the book's instruction-data.json (downloaded once into $GPT_SCRATCH_CACHE or
~/.cache/gpt-scratch/data), an Alpaca-style JSON or JSON Lines file (--train_file) or a `datasets` name
(--dataset_name), entries {"instruction", "input", "output"}. It is split as in the book: the first 85%
train, the next 10% test, the last 5% validate, no shuffling. Each entry is the book's Alpaca prompt and
response; batches are padded with <|endoftext|> by the book's `custom_collate_fn` (first end-of-text
kept as a target, the rest ignored, --allowed_max_length), --mask_prompt leaves the prompt out of the loss.

Every Trainer option works (--learning_rate, --num_train_epochs, --max_steps, --bf16, --eval_strategy,
--push_to_hub, ...); the defaults are the book's: AdamW at a constant lr 5e-5, weight decay 0.1,
batch 8, 2 epochs, seed 123. At the end the model (LoRA merged into it) and tokenizer are saved to
--output_dir, greedy responses to the test split are written next to them as
instruction-data-with-response.json (the book's file, which examples/evaluate_responses.py scores),
and losses.json holds the losses.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Subset
from transformers import Trainer, TrainingArguments, set_seed

from modeling_gpt_scratch.cli import (
    CLIError,
    ModelSource,
    check_number,
    check_output_dir,
    check_trainer_arguments,
    hf_argument_parser,
    publish_into,
    run_cli,
)
from modeling_gpt_scratch.instruction import (
    InstructionCollator,
    InstructionDataArguments,
    InstructionDataset,
    add_chat_template,
    add_lora,
    check_lora_options,
    check_records,
    encode,
    format_input,
    generate_responses,
    instruction_data_path,
    load_dataset_entries,
    load_instruction_data,
    split_for_training,
)
from modeling_gpt_scratch.resolve import (
    check_vocab_fits,
    describe,
    load_causal_lm,
    load_tokenizer_for,
)

RESPONSE_FILE = "instruction-data-with-response.json"
# The book's chapter-7 settings, where they differ from the Trainer's defaults.
BOOK_DEFAULTS = {
    "output_dir": "out/finetune-instruction",
    "learning_rate": 5e-5,
    "lr_scheduler_type": "constant",
    "weight_decay": 0.1,
    "num_train_epochs": 2,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "seed": 123,
    "eval_strategy": "epoch",
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
}


@dataclass
class ModelArguments(ModelSource):
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "write into an --output_dir that already holds files"}
    )
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters only, merged at the end"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (book's exercise 7.4: 16)"})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha (book's exercise 7.4: 16)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})


@dataclass
class DataArguments(InstructionDataArguments):
    train_file: str | None = field(
        default=None,
        metadata={"help": "Alpaca JSON or JSONL file; default: the book's instruction-data.json"},
    )
    allowed_max_length: int = field(
        default=1024, metadata={"help": "cut examples to this many tokens (book: 1024; at most the context)"}
    )
    mask_prompt: bool = field(
        default=False, metadata={"help": "leave instruction and input tokens out of the loss (exercise 7.2)"}
    )


def parse_args(argv=None):
    dataclasses, description = (ModelArguments, DataArguments, TrainingArguments), __doc__.split("\n\n")[0]
    parser = hf_argument_parser(dataclasses, "finetune_instruction.py", description)
    parser.set_defaults(**BOOK_DEFAULTS)
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # TrainingArguments' own checks (e.g. --fp16 without a GPU)
        raise CLIError(describe(error)) from error
    if bool(model_args.model_name_or_path) == bool(model_args.config_name):
        raise CLIError(
            "say which model to train: --model_name_or_path FOLDER, or --config_name PRESET for random init"
        )
    if data_args.train_file and data_args.dataset_name:
        raise CLIError("pass --train_file or --dataset_name, not both")
    check_number("--allowed_max_length", data_args.allowed_max_length, at_least=2)
    check_number("--max_new_tokens", data_args.max_new_tokens, at_least=1)
    for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        check_number(f"--{name}", getattr(data_args, name), at_least=0)
    check_lora_options(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout)
    check_trainer_arguments(training_args)
    inputs = [model_args.model_name_or_path, data_args.train_file]
    check_output_dir(training_args.output_dir, model_args.overwrite_output_dir, inputs=inputs)
    return model_args, data_args, training_args


def load_data(data_args):
    if data_args.dataset_name:
        entries = load_dataset_entries(data_args.dataset_name, data_args.dataset_config_name)
        return check_records(entries, data_args.dataset_name)
    return load_instruction_data(data_args.train_file or instruction_data_path(data_args.data_cache_dir))


def check_prompt_lengths(data, tokenizer, max_length, source):
    """A prompt that fills the context leaves no room for a response: say which one, before training."""
    for index, entry in enumerate(data):
        n = len(encode(tokenizer, format_input(entry)))
        if n >= max_length:
            raise CLIError(
                f"{source}: entry {index}'s prompt is {n} tokens, but the model sees at most {max_length} "
                "(--allowed_max_length and the model's context_length): shorten or drop it"
            )


def main(argv=None):
    model_args, data_args, training_args = parse_args(argv)
    source = data_args.dataset_name or data_args.train_file or "instruction-data.json"
    data = load_data(data_args)  # bad files stop here, before any model or tokenizer is loaded
    tokenizer = load_tokenizer_for(model_args.tokenizer_name, model_args.model_name_or_path)
    add_chat_template(tokenizer)  # the book's prompt from chat messages, saved with the model
    set_seed(training_args.seed)
    model = load_causal_lm(model_args.config_name, model_args.model_name_or_path, model_args.config_overrides)
    check_vocab_fits(tokenizer, model.config)
    context_length = model.config.max_position_embeddings
    max_length = min(data_args.allowed_max_length, context_length)
    if max_length < data_args.allowed_max_length:
        print(f"Examples are cut to {max_length} tokens, the model's context_length")
    check_prompt_lengths(data, tokenizer, max_length, source)

    train_data, test_data, val_data = split_for_training(
        data, source, data_args.max_train_samples, data_args.max_eval_samples, data_args.max_test_samples
    )
    train_set = InstructionDataset(train_data, tokenizer)
    val_set = InstructionDataset(val_data, tokenizer) if val_data else None
    if val_set is None and training_args.eval_strategy != "no":
        training_args.eval_strategy = "no"

    if model_args.use_lora:
        model = add_lora(
            model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout
        )
        model.print_trainable_parameters()
    collator = InstructionCollator(
        pad_token_id=tokenizer.pad_token_id, allowed_max_length=max_length, mask_prompt=data_args.mask_prompt
    )
    training_args.remove_unused_columns = False  # the collator reads `prompt_length`, the model does not
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        processing_class=tokenizer,
    )

    # The book's "Training loss / Validation loss" (eval mode): the train loss over the first 5 batches
    # (its eval_iter 5), the validation loss over the whole validation set.
    train_probe = Subset(train_set, range(min(len(train_set), 5 * training_args.per_device_eval_batch_size)))

    def losses():
        result = {"train": trainer.evaluate(train_probe, metric_key_prefix="train_eval")["train_eval_loss"]}
        if val_set is not None:
            result["validation"] = trainer.evaluate(val_set, metric_key_prefix="val_eval")["val_eval_loss"]
        return result

    before = losses()
    print(f"Before training: {', '.join(f'{k} loss {v:.3f}' for k, v in before.items())}")
    trainer.train()
    after = losses()
    print(f"After training:  {', '.join(f'{k} loss {v:.3f}' for k, v in after.items())}")

    if model_args.use_lora:  # one plain model again: LoRA's updates folded into the weights
        trainer.model = trainer.model_wrapped = trainer.model.merge_and_unload()
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        responses = []
        if test_data:
            batch_size = training_args.per_device_eval_batch_size
            answers = generate_responses(
                trainer.model, tokenizer, test_data, data_args.max_new_tokens, batch_size, context_length
            )
            responses = [{**entry, "model_response": a} for entry, a in zip(test_data, answers, strict=True)]
        with publish_into(output_dir) as tmp:  # config.json last: the folder is a whole model or none
            trainer.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            log = {"before": before, "after": after, "log_history": trainer.state.log_history}
            (tmp / "losses.json").write_text(json.dumps(log, indent=2))
            if responses:
                (tmp / RESPONSE_FILE).write_text(json.dumps(responses, indent=4))
        if responses:
            print(f"Responses to {len(responses)} test entries written to {output_dir / RESPONSE_FILE}")
        for entry in responses[:3]:
            print(f"\n>> {entry['instruction']}\nCorrect response:\n>> {entry['output']}")
            print(f"Model response:\n>> {entry['model_response']}")
        print(f"Model and tokenizer saved to {output_dir}")
    if training_args.push_to_hub:  # the saved folder, with the Trainer's card
        trainer.push_to_hub(
            commit_message="Instruction fine-tuning (chapter 7)",
            tags=["gpt-scratch", "instruction-tuning"],
            finetuned_from=model_args.model_name_or_path,
            tasks="text-generation",
        )


if __name__ == "__main__":
    sys.exit(run_cli(main))
