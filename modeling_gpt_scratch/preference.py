"""Preference tuning with Direct Preference Optimization, the bonus of the book's chapter 7, on TRL.

    from modeling_gpt_scratch.preference import (
        BookDPOTrainer, load_preference_data, preference_data_path, tokenize_preference)

    data = load_preference_data(preference_data_path())  # the book's 1,100 entries, downloaded once
    rows = [tokenize_preference(entry, tokenizer) for entry in data]

The book (`dpo-from-scratch.ipynb`) scores each response as the AVERAGE log-probability of its tokens,
where the DPO paper and TRL's default `loss_type="sigmoid"` SUM them. TRL's `loss_type="sigmoid_norm"`
divides each log-ratio by its response's length, which is the book's loss exactly (the policy and the
reference score the same tokens). What TRL logs as `rewards/*` stays the paper's beta * summed log-ratio;
`book_metrics` measures the book's unscaled averaged rewards, margins and accuracy.

The book's tokens: prompt = `format_input(entry)`, each sequence = prompt + "\\n\\n### Response:\\n" +
response (no end-of-text token), and only what follows the prompt and its two newline tokens is scored
(so "### Response:\\n" is scored, as in the book's `custom_collate_fn` with `mask_prompt_tokens=True`).
`tokenize_preference` cuts the ids that way, and `BookDPOTrainer` takes such pre-tokenized rows as they
are (TRL would tokenize prompt and response apart and append an end-of-text token).
"""

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import DataError, cached_download, default_cache_dir
from .instruction import RESPONSE_HEADER, encode, format_input, json_entries, read_json_records

PREFERENCE_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/"
    "instruction-data-with-preference.json"
)
PREFERENCE_DATA_FILE = "instruction-data-with-preference.json"
PREFERENCE_DATA_ENTRIES = 1100

# The book's settings (dpo-from-scratch.ipynb), where they differ from TRL's or the Trainer's defaults.
BOOK_DPO_DEFAULTS = {
    "learning_rate": 5e-6,
    "weight_decay": 0.01,
    "lr_scheduler_type": "constant",  # plain AdamW, no schedule
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "beta": 0.1,
    "loss_type": ["sigmoid_norm"],  # averaged log-probabilities, the book's loss
    "seed": 123,
    "logging_steps": 5,  # the book's eval_freq
    "save_strategy": "no",
    "report_to": "none",
    "gradient_checkpointing": False,
    "bf16": False,
}
BOOK_EVAL_BATCHES = 5  # the book's eval_iter


# ------------------------------------------------------------------------------------------- data
def preference_data_path(cache_dir=None, url: str = PREFERENCE_DATA_URL, timeout: float = 30.0) -> Path:
    """The book's `instruction-data-with-preference.json` in `cache_dir` (default `$GPT_SCRATCH_CACHE`,
    else `~/.cache/gpt-scratch/data`), downloaded once (see `data.cached_download`)."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    what = f"the book's {PREFERENCE_DATA_FILE} ({PREFERENCE_DATA_ENTRIES:,} entries, from {url})"
    return cached_download(cache_dir / PREFERENCE_DATA_FILE, url, what, timeout)


def check_preference_records(records, source: str, identical: str = "error") -> list[dict]:
    """Entries `{"instruction", "input", "chosen", "rejected"}` (TRL's `prompt` is taken as the
    instruction), checked: the first bad entry is named by its index and what is wrong with it.

    A pair whose chosen and rejected texts are the same has a constant loss (ln 2) and no gradient:
    `identical="error"` refuses it, "keep" keeps it (the book's data has 6, entries 122, 226, 400, 566,
    628 and 676, and the book trains on them), "drop" leaves it out."""
    checked = []
    for index, entry in json_entries(records, source, '"chosen" and "rejected"'):
        where = f"{source}: entry {index}"
        instruction = entry.get("instruction", entry.get("prompt"))
        if instruction is None:
            raise DataError(f'{where} has neither "instruction" nor "prompt" (it has {sorted(entry)})')
        for key in ("chosen", "rejected"):
            if key not in entry:
                raise DataError(
                    f'{where} has no "{key}" response (it has {sorted(entry)}); preference data needs '
                    '"chosen" and "rejected"'
                )
        for key, value in (("instruction", instruction), ("input", entry.get("input") or "")):
            if not isinstance(value, str):
                raise DataError(
                    f'{where} "{key}" is a {type(value).__name__}, not a string (conversational data: '
                    "give plain-text prompts and responses)"
                )
        for key in ("chosen", "rejected"):
            if not isinstance(entry[key], str):
                raise DataError(f'{where} "{key}" is a {type(entry[key]).__name__}, not a string')
            if not entry[key].strip():
                raise DataError(f'{where} has an empty "{key}" response: fill it in or drop the entry')
        if not instruction.strip():
            raise DataError(f"{where} has an empty instruction")
        if entry["chosen"].strip() == entry["rejected"].strip():
            if identical == "drop":
                continue
            if identical != "keep":
                raise DataError(
                    f'{where}: "chosen" and "rejected" are the same text, which teaches no preference; drop the '
                    "entry (or pass --identical_pairs drop / keep)"
                )
        checked.append(
            {
                **entry,
                "instruction": instruction,
                "input": entry.get("input") or "",
            }
        )
    return checked


def load_preference_data(path, identical: str = "error") -> list[dict]:
    """Preference entries from a JSON list or JSON Lines file, checked (see `check_preference_records`)."""
    return check_preference_records(read_json_records(path), str(path), identical)


# ------------------------------------------------------------------------------------- tokenizing
def _newline_tokens(tokenizer) -> int:
    """How many tokens the two newlines before "### Response:" take (2 with GPT-2's BPE, the book's +2)."""
    return len(encode(tokenizer, "\n\n" + RESPONSE_HEADER)) - len(encode(tokenizer, RESPONSE_HEADER))


def tokenize_preference(entry: dict, tokenizer) -> dict:
    """The book's `PreferenceDataset` + `custom_collate_fn` masking as TRL's pre-tokenized columns:
    `prompt_ids` (the prompt and the two newline tokens, not scored) and `chosen_ids` / `rejected_ids`
    ("### Response:\\n" and the response, scored)."""
    prompt = format_input(entry)
    cut = len(encode(tokenizer, prompt)) + _newline_tokens(tokenizer)
    row = {}
    for key in ("chosen", "rejected"):
        ids = encode(tokenizer, f"{prompt}\n\n{RESPONSE_HEADER}\n{entry[key]}")
        row.setdefault("prompt_ids", ids[:cut])
        if ids[:cut] != row["prompt_ids"]:  # only if a tokenizer merged across the cut
            raise DataError(
                f"the prompt of {entry['instruction'][:40]!r} tokenizes differently with each response"
            )
        row[f"{key}_ids"] = ids[cut:]
    return row


# ------------------------------------------------------------------------------------ book metrics
def sequence_logprobs(logits, input_ids, completion_mask):
    """The book's `compute_logprobs`: per row, the average log-probability of the tokens where
    `completion_mask` is 1 (token t is predicted by the logits at t - 1)."""
    labels = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logits.dtype)
    log_probs = torch.gather(F.log_softmax(logits[:, :-1].float(), dim=-1), -1, labels.unsqueeze(-1)).squeeze(
        -1
    )
    return (log_probs * mask).sum(-1) / mask.sum(-1)


def book_dpo_terms(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """The book's `compute_dpo_loss` per pair: (losses, chosen rewards, rejected rewards); the rewards
    are the averaged log-ratios, not scaled by beta (the book's margins)."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return -F.logsigmoid(beta * logits), policy_chosen - ref_chosen, policy_rejected - ref_rejected


def _rows_logprobs(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logprobs(logits, batch["input_ids"], batch["completion_mask"]).chunk(2)


try:
    from trl import DPOTrainer
except ImportError:  # `pip install -e '.[trl]'`; the data helpers above work without it
    DPOTrainer = None


if DPOTrainer is not None:

    class BookDPOTrainer(DPOTrainer):
        """TRL's `DPOTrainer` that trains on rows from `tokenize_preference` as they are, and measures
        the book's metrics (`book_metrics`)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:  # the book's tokens and masks, from tokenize_preference
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        @contextlib.contextmanager
        def reference_model(self):
            """The reference model: TRL's copy, or with LoRA the policy with its adapters disabled."""
            if self.ref_model is not None:
                yield self.ref_model
                return
            policy = self.accelerator.unwrap_model(self.model)
            with policy.disable_adapter():
                yield policy

        @torch.no_grad()
        def book_metrics(self, dataset, max_batches: int | None = BOOK_EVAL_BATCHES) -> dict:
            """The book's `compute_dpo_loss_loader` in eval mode over the first `max_batches` batches of
            `dataset` (a prepared dataset): loss, chosen and rejected rewards, margin, reward accuracy."""
            policy = self.accelerator.unwrap_model(self.model)
            was_training = policy.training
            policy.eval()
            size = self.args.per_device_eval_batch_size
            sums = {"loss": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0, "accuracy": 0.0}
            batches = 0
            try:
                for start in range(0, len(dataset), size):
                    if max_batches is not None and batches >= max_batches:
                        break
                    rows = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
                    batch = {k: v.to(self.accelerator.device) for k, v in self.data_collator(rows).items()}
                    policy_chosen, policy_rejected = _rows_logprobs(policy, batch)
                    with self.reference_model() as reference:
                        reference.eval()
                        ref_chosen, ref_rejected = _rows_logprobs(reference, batch)
                    losses, chosen, rejected = book_dpo_terms(
                        policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta
                    )
                    sums["loss"] += losses.mean().item()
                    sums["chosen_reward"] += chosen.mean().item()
                    sums["rejected_reward"] += rejected.mean().item()
                    sums["accuracy"] += (chosen > rejected).float().mean().item()
                    batches += 1
            finally:
                policy.train(was_training)
            result = {k: v / max(batches, 1) for k, v in sums.items()}
            result["margin"] = result["chosen_reward"] - result["rejected_reward"]
            return result

else:
    BookDPOTrainer = None


__all__ = [
    "PREFERENCE_DATA_URL",
    "BOOK_DPO_DEFAULTS",
    "BOOK_EVAL_BATCHES",
    "preference_data_path",
    "check_preference_records",
    "load_preference_data",
    "tokenize_preference",
    "sequence_logprobs",
    "book_dpo_terms",
    "BookDPOTrainer",
]
