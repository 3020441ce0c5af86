"""The book's instruction fine-tuning data (chapter 7): Alpaca prompts, the 85/10/5 split, the padding
collator, and the LLM-judge prompt, shared by `examples/finetune_instruction.py` and
`examples/evaluate_responses.py`.

    from modeling_gpt_scratch.instruction import (
        InstructionCollator, format_input, instruction_data_path, load_instruction_data, split_data)

    data = load_instruction_data(instruction_data_path())   # the book's 1,100 entries, downloaded once
    train, test, val = split_data(data)                      # 935 / 110 / 55, in the book's order

The collator gives the book's `custom_collate_fn` batches, plus the keys the Hugging Face Trainer and
our model's loss read (see `InstructionCollator`).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .cli import check_number
from .data import DataError, cached_download, default_cache_dir

INSTRUCTION_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/"
    "instruction-data.json"
)
INSTRUCTION_DATA_FILE = "instruction-data.json"
INSTRUCTION_DATA_ENTRIES = 1100
PAD_TOKEN_ID = 50256  # <|endoftext|>, the book's padding and end-of-text token
IGNORE_INDEX = -100
REQUIRED_KEYS = ("instruction", "output")  # "input" may be missing or empty
RESPONSE_HEADER = "### Response:"


def format_input(entry: dict) -> str:
    """The book's Alpaca-style prompt (`format_input`, chapter 7): the instruction, then the input
    when there is one. The response follows after "\\n\\n### Response:\\n"."""
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_example(entry: dict) -> str:
    """The text the book trains on (`InstructionDataset`): prompt, response header, response."""
    return format_input(entry) + f"\n\n{RESPONSE_HEADER}\n{entry['output']}"


def extract_response(generated_text: str, prompt: str) -> str:
    """The book's post-processing: what follows the prompt, without the "### Response:" header."""
    if generated_text.startswith(prompt):
        generated_text = generated_text[len(prompt) :]
    return generated_text.replace(RESPONSE_HEADER, "").strip()


@torch.no_grad()
def generate_responses(model, tokenizer, entries, max_new_tokens, batch_size, context_length) -> list[str]:
    """Greedy answers to the book's prompts of `entries`, batched with left padding (the tokenizer's
    side is put back after); a row stops at <|endoftext|>, a prompt that fills the context gets ""."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    model.eval()
    answers = []
    try:
        for start in range(0, len(entries), batch_size):
            prompts = [format_input(entry) for entry in entries[start : start + batch_size]]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
            room = context_length - encoded["input_ids"].shape[1]
            if room < 1:
                answers += [""] * len(prompts)
                continue
            output = model.generate(
                **encoded,
                max_new_tokens=min(max_new_tokens, room),
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            for prompt, ids in zip(prompts, output[:, encoded["input_ids"].shape[1] :], strict=True):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                answers.append(extract_response(prompt + text, prompt))
    finally:
        tokenizer.padding_side = side
    return answers


def judge_prompt(entry: dict, response_key: str = "model_response") -> str:
    """The book's scoring prompt for the Ollama judge (`generate_model_scores`, chapter 7)."""
    return (
        f"Given the input `{format_input(entry)}` "
        f"and correct output `{entry['output']}`, "
        f"score the model response `{entry[response_key]}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


# ------------------------------------------------------------------------------------------ files
@dataclass
class InstructionDataArguments:
    """The data options of the chapter-7 scripts (finetune_instruction.py, finetune_preference.py): the
    entries, the quick-run cuts, the test responses' length."""

    train_file: str | None = field(
        default=None, metadata={"help": "JSON or JSONL file; default: the book's data (see --data_cache_dir)"}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "a `datasets` name instead of a file"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its configuration"})
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "where the default data is downloaded to or found (pre-fill offline)"}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "use only the first N train entries"}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "... validation entries"})
    max_test_samples: int | None = field(default=None, metadata={"help": "... test entries (responses)"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens per test response (book: 256)"})


def instruction_data_path(cache_dir=None, url: str = INSTRUCTION_DATA_URL, timeout: float = 30.0) -> Path:
    """The book's `instruction-data.json` in `cache_dir` (default `$GPT_SCRATCH_CACHE`, else
    `~/.cache/gpt-scratch/data`), downloaded once (see `data.cached_download`)."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    what = f"the book's {INSTRUCTION_DATA_FILE} ({INSTRUCTION_DATA_ENTRIES:,} entries, from {url})"
    return cached_download(cache_dir / INSTRUCTION_DATA_FILE, url, what, timeout)


def read_json_records(path) -> list:
    """A JSON list (the book's format) or JSON Lines, as a list; a `DataError` says where it breaks."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise DataError(f"{path} does not exist") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    if not text.strip():
        raise DataError(f"{path} is empty")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
            ) from error
        return records
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path} line {number} is not valid JSON ({error.msg} at column {error.colno}); "
                "expected a JSON list of entries or one JSON object per line"
            ) from error
    return records


def json_entries(records, source: str, keys: str):
    """(index, entry) for each entry of a JSON list of objects; a list that is not one, or is empty, and
    the first entry that is not an object (`keys`: what it should hold) are a `DataError`."""
    if not isinstance(records, list):
        raise DataError(f"{source} holds a JSON {type(records).__name__}; expected a list of entries")
    if not records:
        raise DataError(f"{source} holds no entries")
    for index, entry in enumerate(records):
        if not isinstance(entry, dict):
            raise DataError(
                f"{source}: entry {index} is a {type(entry).__name__}, expected an object with {keys}"
            )
        yield index, entry


def check_records(records, source: str) -> list[dict]:
    """Entries as dicts of strings with the book's keys; the first bad entry is named by its index."""
    checked = []
    for index, entry in json_entries(records, source, '"instruction", "input" and "output"'):
        for key in REQUIRED_KEYS:
            if key not in entry:
                raise DataError(f'{source}: entry {index} has no "{key}" key (it has {sorted(entry)})')
        for key in REQUIRED_KEYS:
            if entry[key] is None:  # it would train on the text "None"
                raise DataError(f'{source}: entry {index} "{key}" is null; it must be a string')
        for key in (*REQUIRED_KEYS, "input"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                raise DataError(f'{source}: entry {index} "{key}" is a {type(value).__name__}, not a string')
        if not entry["instruction"].strip():
            raise DataError(f'{source}: entry {index} has an empty "instruction"')
        checked.append({**entry, "input": entry.get("input") or ""})
    return checked


def load_dataset_entries(dataset_name: str, config_name: str | None = None) -> list:
    """The train split of the `datasets` data set `dataset_name` as a list of entries (to be checked);
    a failure is one line."""
    import datasets

    from .resolve import describe

    try:
        return list(datasets.load_dataset(dataset_name, config_name, split="train"))
    except Exception as error:  # datasets raises many kinds; the first line says what went wrong
        raise DataError(f"cannot load the dataset {dataset_name!r}: {describe(error)}") from error


def load_instruction_data(path) -> list[dict]:
    """Entries `{"instruction", "input", "output"}` from a JSON or JSON Lines file, checked."""
    return check_records(read_json_records(path), str(path))


def split_data(data: list, train_frac: float = 0.85, test_frac: float = 0.1):
    """The book's positional split, in its order: the first 85% train, the next 10% test, the rest
    (5%) validate; 935 / 110 / 55 on the book's 1,100 entries. No shuffling."""
    train_portion = int(len(data) * train_frac)
    test_portion = int(len(data) * test_frac)
    train_data = data[:train_portion]
    test_data = data[train_portion : train_portion + test_portion]
    val_data = data[train_portion + test_portion :]
    return train_data, test_data, val_data


# ------------------------------------------------------------------------------------- tokenizing


def split_for_training(data: list, source: str, max_train=None, max_eval=None, max_test=None):
    """The book's 85/10/5 split with its printed lengths, each part then cut to `max_*` entries (quick
    runs); `(train, test, validation)` like `split_data`. No training entry left is a `DataError`."""
    train, test, val = split_data(data)
    print(f"Training set length: {len(train)}")
    print(f"Validation set length: {len(val)}")
    print(f"Test set length: {len(test)}")
    train, val, test = train[:max_train], val[:max_eval], test[:max_test]
    if not train:
        raise DataError(f"{source}: no entries left to train on ({len(data)} entries, 85% of them train)")
    return train, test, val


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text`, from a tiktoken encoding (the book's) or a `transformers` tokenizer."""
    if hasattr(tokenizer, "encode_ordinary"):  # tiktoken
        return tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


class InstructionDataset(Dataset):
    """The book's `InstructionDataset`: each entry tokenized as prompt + response. Items are dicts:
    `input_ids` and `prompt_length` (tokens of `format_input(entry)`, what --mask_prompt hides)."""

    def __init__(self, data, tokenizer):
        self.data = data
        self.items = [
            {
                "input_ids": encode(tokenizer, format_example(entry)),
                "prompt_length": len(encode(tokenizer, format_input(entry))),
            }
            for entry in data
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


class InstructionCollator:
    """The book's `custom_collate_fn` for the Trainer.

    Each row gets one <|endoftext|> (50256) appended and is padded with 50256 to the batch's longest
    row + 1; `inputs` is that without its last token, `targets` without its first; every 50256 in
    `targets` after the first becomes -100 (ignored); both are cut to `allowed_max_length`. With
    `mask_prompt` (the book's exercise 7.2) the targets that are prompt tokens are -100 too.

    Our model, like every Hugging Face causal LM, shifts `labels` itself (logit t is scored against
    label t + 1). So the batch carries the book's targets as `shift_labels`, which the loss uses as
    is, and `labels` = the same targets moved one to the right (`labels[:, t + 1] == targets[:, t]`,
    `labels[:, 0] = -100`) for what reads `labels` (the Trainer's token count, `model(..., labels=)`
    alone). Scored this way, the loss is exactly the book's `calc_loss_batch(inputs, targets)`.
    """

    def __init__(
        self, pad_token_id=PAD_TOKEN_ID, ignore_index=IGNORE_INDEX, allowed_max_length=None, mask_prompt=False
    ):
        self.pad_token_id = pad_token_id
        self.ignore_index = ignore_index
        self.allowed_max_length = allowed_max_length
        self.mask_prompt = mask_prompt

    def book_batch(self, batch):
        """(inputs, targets) as the book's `custom_collate_fn` returns them; `batch` holds lists of
        ids or dicts with `input_ids` (and `prompt_length` for `mask_prompt`)."""
        items = [item if isinstance(item, dict) else {"input_ids": item} for item in batch]
        batch_max_length = max(len(item["input_ids"]) + 1 for item in items)
        inputs_lst, targets_lst = [], []
        for item in items:
            new_item = list(item["input_ids"]) + [self.pad_token_id]
            padded = new_item + [self.pad_token_id] * (batch_max_length - len(new_item))
            inputs = torch.tensor(padded[:-1])
            targets = torch.tensor(padded[1:])
            indices = torch.nonzero(targets == self.pad_token_id).squeeze(-1)
            if indices.numel() > 1:
                targets[indices[1:]] = self.ignore_index
            if self.mask_prompt:
                targets[: item["prompt_length"] - 1] = self.ignore_index
            if self.allowed_max_length is not None:
                inputs = inputs[: self.allowed_max_length]
                targets = targets[: self.allowed_max_length]
            inputs_lst.append(inputs)
            targets_lst.append(targets)
        return torch.stack(inputs_lst), torch.stack(targets_lst)

    def __call__(self, batch):
        inputs, targets = self.book_batch(batch)
        labels = torch.full_like(targets, self.ignore_index)
        labels[:, 1:] = targets[:, :-1]
        return {"input_ids": inputs, "labels": labels, "shift_labels": targets}


# ------------------------------------------------------------------------------------------- LoRA
# Every Linear layer of the transformer blocks, as the book's exercise 7.4 (appendix E) replaces them;
# the output head stays as it is (it is tied to the token embedding in GPT-2-shaped models).
LORA_TARGET_MODULES = ["W_query", "W_key", "W_value", "out_proj", "ff.layers.0", "ff.layers.2"]
# book: appendix E's LoRALayer, `alpha * (x @ A @ B)`, A drawn as the book draws it; peft: peft's own
# `(lora_alpha / r) * B(A(x))` with its own A, for runs that compare with other peft models.
LORA_STYLES = ("book", "peft")


def peft_lora_alpha(alpha: float, r: int, style: str = "book") -> float:
    """peft's `lora_alpha` for a LoRA scaled as `style` says. peft multiplies the update by
    `lora_alpha / r`; the book's `LoRALayer` by `alpha` itself. So the book's alpha 16 at rank 16
    is peft's lora_alpha 256: a 16 times stronger update than peft's lora_alpha 16. (rsLoRA's
    `lora_alpha / sqrt(r)` would need lora_alpha = alpha * sqrt(r): the same number, more arithmetic.)"""
    if style not in LORA_STYLES:
        raise ValueError(f"LoRA style must be one of {', '.join(LORA_STYLES)}, got {style!r}")
    return alpha * r if style == "book" else alpha


def init_lora_like_book(model, seed: int | None = None):
    """Every LoRA `A` of a peft model drawn as the book's `LoRALayer` draws it, in module order:
    `kaiming_uniform_(A, a=sqrt(5))` on an `(in, r)` tensor, so uniform within 1/sqrt(r) (peft's
    `lora_A` is `(r, in)`: within 1/sqrt(in), about 7 times narrower for GPT-2 at r 16). With the book's
    seed set just before (`seed`, appendix E: 123), the values are the book's. `B` stays zero, so the
    model's outputs do not change. Returns `model`."""
    import math

    from peft.tuners.lora import LoraLayer

    if seed is not None:
        torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, lora_a in module.lora_A.items():
                weight = torch.empty(lora_a.in_features, lora_a.out_features, device=lora_a.weight.device)
                torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                with torch.no_grad():
                    lora_a.weight.copy_(weight.T)
                module.lora_B[name].weight.data.zero_()
    return model


def check_lora_options(r, alpha, dropout) -> None:
    """--lora_r, --lora_alpha and --lora_dropout, each checked under its own name (before any work)."""
    check_number("--lora_r", r, at_least=1)
    check_number("--lora_alpha", alpha, above=0)
    check_number("--lora_dropout", dropout, at_least=0, below=1)


def add_lora(
    model,
    r: int = 16,
    alpha: float = 16,
    dropout: float = 0.0,
    target_modules=None,
    *,
    style: str = "book",
    task_type: str | None = "CAUSAL_LM",
    modules_to_save=None,
    seed: int | None = None,
):
    """`model` with peft LoRA adapters; only they (and `modules_to_save`) train.

    The defaults are appendix E's and the book's exercise 7.4: rank 16, alpha 16, every Linear of
    the blocks, and `style="book"`: the update is `alpha * x A B` (peft's lora_alpha = alpha * r,
    see `peft_lora_alpha`) with A drawn as the book's LoRALayer draws it (`init_lora_like_book`).
    `style="peft"` is peft's own scaling `alpha / r` and initialisation. Appendix E also puts LoRA
    on the classifier head (frozen otherwise): pass `target_modules=[*LORA_TARGET_MODULES, "score"]`
    with `task_type=None` (peft's SEQ_CLS task trains `score` in full instead, as we do by default);
    the adapter then needs the same base head, so keep the merged model."""
    from peft import LoraConfig, get_peft_model

    check_lora_options(r, alpha, dropout)
    config = LoraConfig(
        r=r,
        lora_alpha=peft_lora_alpha(alpha, r, style),
        lora_dropout=dropout,
        target_modules=list(target_modules or LORA_TARGET_MODULES),
        task_type=task_type,
        modules_to_save=modules_to_save,
    )
    model = get_peft_model(model, config)
    return init_lora_like_book(model, seed) if style == "book" else model


# ------------------------------------------------------------------------------------------- chat
# The book's Alpaca prompt as a chat template, so `pipeline("text-generation")` with messages,
# `transformers chat` and OpenAI-style servers talk to an instruction-tuned folder the way the book
# prompts it. One user message renders exactly `format_input({"instruction": content, "input": ""})`
# and, with add_generation_prompt, the response header the model was trained to answer after. A system
# message replaces the preamble ("Below is an instruction ..."). Later turns repeat the
# "### Instruction:" / "### Response:" blocks; the book trained on single turns only, so answers to
# later turns are the model's best guess, not something it learned.
ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
ALPACA_CHAT_TEMPLATE = (
    "{%- set preamble = '" + ALPACA_PREAMBLE + "' -%}"
    "{%- set turns = messages -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set preamble = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- endif -%}"
    "{{- preamble -}}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}{{- '\n\n### Instruction:\n' + message['content'] -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '\n\n### Response:\n' + message['content'] -}}"
    "{%- else -%}{{- raise_exception('the Alpaca chat template takes system, user and assistant "
    "messages, not ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '\n\n### Response:\n' -}}{%- endif -%}"
)


def add_chat_template(tokenizer, template: str = ALPACA_CHAT_TEMPLATE):
    """`tokenizer` with the book's Alpaca chat template (saved with it by `save_pretrained`); returned
    for chaining. Replaces any template it had."""
    tokenizer.chat_template = template
    return tokenizer


__all__ = [
    "INSTRUCTION_DATA_URL",
    "PAD_TOKEN_ID",
    "IGNORE_INDEX",
    "format_input",
    "format_example",
    "extract_response",
    "judge_prompt",
    "instruction_data_path",
    "read_json_records",
    "check_records",
    "load_instruction_data",
    "split_data",
    "split_for_training",
    "encode",
    "InstructionDataset",
    "InstructionCollator",
    "LORA_TARGET_MODULES",
    "LORA_STYLES",
    "peft_lora_alpha",
    "init_lora_like_book",
    "add_lora",
    "ALPACA_PREAMBLE",
    "ALPACA_CHAT_TEMPLATE",
    "add_chat_template",
]
