"""What examples/pretrain.py stands on, so that its loop reads like the book's `train_model_simple`.

- Recipes: the default settings, by what is trained (`recipe_for`): the book's chapter 5 for its
  models, settings that learn in a minute for the small `tiny` preset (`make demo`).
- Accelerate: `make_accelerator` (one call, one error line; FSDP2 on CPU, see `use_fsdp2_on_cpu`),
  portable checkpoints (`register_portable_checkpoints`), the full model at the end (`final_model`),
  --report_to's trackers (`trackers`).
- Data: text files tokenized once through `datasets` (`token_streams`), the book's windows
  (`modeling_gpt_scratch.data.SlidingWindowDataset`), a resumable shuffle (`EpochSampler`), the fixed
  windows each evaluation uses (`spread`).
- The book's pieces: `calc_loss_batch`, `evaluate_model`, `generate_sample`, `plot_losses`,
  `book_init_`; the model to train (`new_model`).
- The run's record: `Progress` (steps, tokens, losses, evaluations; the bar and the trackers' logs),
  and its end, `finish_run` (model and tokenizer, log and plot, the Hub).
- Checkpoints: `save_checkpoint` (complete or invisible), `find_checkpoint` ("latest" = the newest
  complete one), `read_checkpoint` (checked against the model and the run), `prune_checkpoints`.
- `StopRequest`: Ctrl-C / SIGTERM ask for a checkpoint and a stop at the end of the current step
  (`stops`: they, or --stop_after_steps, end the run after this step); `checkpoint_due`.
"""

import collections
import contextlib
import importlib
import io
import json
import logging
import math
import os
import pathlib
import pickle
import shutil
import signal
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import (
    DistributedType,
    ProjectConfiguration,
    is_tensorboard_available,
    is_wandb_available,
)
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_model
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, get_scheduler

from .cli import CLIError, exchange, publish_into, rank, signals_deferred, write_json
from .data import SlidingWindowDataset, resolve_text_files, the_verdict_path
from .hub import push_run
from .resolve import describe, load_pretrained

STATE_FILE = "training_state.json"  # written last into a checkpoint: a folder with it is complete
LOG_FILE = "training_log.json"
PLOT_FILE = "loss-plot.png"
CHECKPOINTS = "checkpoints"
SHAPE_KEYS = (  # what makes two models' weights interchangeable
    "model_type",
    "vocab_size",
    "context_length",
    "emb_dim",
    "n_heads",
    "n_layers",
    "qkv_bias",
    "tie_word_embeddings",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
)

# ------------------------------------------------------------------------------------------ recipes
# The book's chapter 5 (GPT_CONFIG_124M on The Verdict): lr 4e-4, 10 epochs, evaluate every 5 steps,
# 50-token samples, windows of the whole context.
BOOK_RECIPE = {
    "learning_rate": 4e-4,
    "num_train_epochs": 10,
    "eval_steps": 5,
    "max_new_tokens": 50,
    "block_size": None,
}
# The small `tiny` preset learns The Verdict's words in about 2 minutes on a laptop CPU with a larger
# step and shorter windows (what `make demo` runs); the book's settings leave it at "of of of".
SMALL_RECIPE = {
    "learning_rate": 3e-3,
    "num_train_epochs": 15,
    "eval_steps": 45,
    "max_new_tokens": 30,
    "block_size": 128,
}
RECIPES = {"tiny": SMALL_RECIPE}


def recipe_for(config_name: str | None) -> dict:
    """The default settings for training `config_name` (a preset name, or anything else)."""
    return RECIPES.get(config_name or "", BOOK_RECIPE)


def trackers(report_to: str) -> list[str]:
    """--report_to as Accelerate's `log_with` names ("none" is none); a tracker whose package is
    missing is a `CLIError` before anything slow."""
    names = [t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none"]
    for tracker, available in (("tensorboard", is_tensorboard_available), ("wandb", is_wandb_available)):
        if tracker in names and not available():
            raise CLIError(f"--report_to {tracker} needs the {tracker} package: pip install {tracker}")
    return names


# --------------------------------------------------------------------------------------- accelerate
def make_accelerator(*, cpu=False, project_dir, fsdp_on_cpu=True, **kwargs) -> Accelerator:
    """`Accelerator(...)` for this machine; a bad setting is a `CLIError`. Where no GPU is it says
    cpu=True: `accelerate launch --multi_gpu` and torchrun would otherwise start processes that never
    talk to each other. With `fsdp_on_cpu`, a launcher's FSDP request is honoured on CPU too."""
    if "tensorboard" in (kwargs.get("log_with") or []):  # tensorboard starts TensorFlow when it is there
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # whose start-up logs tell the user nothing
    has_gpu = torch.cuda.is_available() or (
        hasattr(torch, "accelerator") and torch.accelerator.is_available()
    )
    try:
        accelerator = Accelerator(
            cpu=cpu or not has_gpu,
            project_config=ProjectConfiguration(
                project_dir=str(project_dir), logging_dir=os.path.join(project_dir, "runs")
            ),
            **kwargs,
        )
    except (ValueError, RuntimeError) as error:  # fp16 without a GPU, a bad accelerate config, ...
        raise CLIError(f"cannot set up Accelerate: {describe(error)}") from error
    if fsdp_on_cpu:
        use_fsdp2_on_cpu(accelerator)
    return accelerator


def use_fsdp2_on_cpu(accelerator: Accelerator) -> None:
    """FSDP2 for processes on CPU, when the launcher asked for FSDP (ACCELERATE_USE_FSDP=true).

    Accelerate (1.x) never turns FSDP on for a CPU run: `accelerate launch --config_file fsdp.yaml`
    on a machine without GPUs quietly trains with DDP. torch's FSDP2 (`fully_shard`) does work on CPU
    over gloo, so this switches Accelerate's state to FSDP with the launcher's plugin settings; from
    then on prepare, save_state, load_state and get_state_dict take Accelerate's FSDP2 path, as on
    GPUs. Accelerate offers no public switch for this, so it sets the shared state's distributed type;
    it is the supported way to rehearse an FSDP run on a laptop, and how CI tests fsdp.yaml."""
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if not asked or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_VERSION, ... from the launcher's environment
    if plugin.fsdp_version != 2:
        raise CLIError("FSDP on CPU works with fsdp_version: 2 only (set it in the accelerate config)")
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def register_portable_checkpoints(accelerator: Accelerator) -> None:
    """save_state stores the model as the training wrapper sees it: keys carry DDP's `module.` and
    torch.compile's `_orig_mod.`, so a checkpoint would resume only under the same wrappers. These
    hooks store and load the plain model's weights instead (FSDP keeps its own sharded format)."""
    # A tied output head is stored once; Accelerate says so at every save, and it is fine.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)

    def save_hook(models, weights, output_dir):
        if accelerator.distributed_type != DistributedType.FSDP:
            for i, model in enumerate(models):
                weights[i] = accelerator.unwrap_model(model, keep_torch_compile=False).state_dict()

    def load_hook(models, input_dir):
        for i, model in enumerate(models):  # the ones Accelerate would load itself (never FSDP models)
            name = f"model{f'_{i}' if i else ''}.safetensors"
            plain = accelerator.unwrap_model(model, keep_torch_compile=False)
            load_model(plain, os.path.join(input_dir, name), device=str(accelerator.device))
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def final_model(accelerator: Accelerator, model, config):
    """The trained model as a plain `from_pretrained`-able model on the main process (None on the
    others). Under FSDP every process takes part while the shards are gathered."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return accelerator.unwrap_model(model, keep_torch_compile=False)  # no DDP, no _orig_mod. prefix
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    with torch.device("meta"):  # a plain model (the FSDP one is another class), filled from the dict
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(state_dict, assign=True, strict=False)
    plain.tie_weights()  # a tied output head may come without its own key
    missing = [n for n, t in plain.state_dict().items() if t.is_meta]
    if missing:
        raise RuntimeError(f"the gathered FSDP state dict lacks {missing}")
    return plain


def finish_run(args, accelerator, model, config, tokenizer, history, steps_per_epoch, log) -> int:
    """The end of examples/pretrain.py: model and tokenizer (config.json last), the book's plot, the
    log, the Hub. Returns the exit status."""
    say, output_dir = accelerator.print, Path(args.output_dir)
    plain = final_model(accelerator, model, config)
    if accelerator.is_main_process:
        with publish_into(output_dir) as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        write_log(output_dir, history, steps_per_epoch, **log, finished=True)
    accelerator.wait_for_everyone()
    last = history["evals"][-1] if history["evals"] else {}
    if args.push_to_hub and accelerator.is_main_process:
        push_run(
            output_dir,
            args.hub_model_id,
            token=args.hub_token,
            val_loss=last.get("val_loss"),
            base_model=args.model_name_or_path,
            datasets=None if args.train_file else ["the-verdict"],
        )
    say(
        f"Done: {log['global_step']} steps, {log['tokens_seen']:,} tokens in {history['train_runtime_s']:.1f} s "
        f"({history['tokens_per_second']:,.0f} tokens/s); train loss {last.get('train_loss', float('nan')):.3f}"
        + (f", val loss {last['val_loss']:.3f}" if last.get("val_loss") is not None else "")
    )
    say(
        f"Saved model and tokenizer to {output_dir}/ (AutoModelForCausalLM.from_pretrained loads it), "
        f"and {PLOT_FILE}, {LOG_FILE}"
    )
    accelerator.end_training()
    return 0


# --------------------------------------------------------------------------------------------- data
def token_streams(
    tokenizer,
    train_file,
    validation_file,
    split_percentage,
    *,
    cache_dir=None,
    num_proc=None,
    overwrite_cache=False,
):
    """(train ids, validation ids or None, description): every document tokenized through `datasets`
    (cached), documents joined by <|endoftext|>. Without validation files the last `split_percentage`
    of each document's characters validate (the book's 90/10 split)."""
    train_files = resolve_text_files(train_file) if train_file else [the_verdict_path(cache_dir)]
    val_files = resolve_text_files(validation_file) if validation_file else []
    fraction = 0.0 if val_files else split_percentage / 100
    datasets.disable_progress_bars()
    data_files = {"train": [str(f) for f in train_files]}
    if val_files:
        data_files["validation"] = [str(f) for f in val_files]
    try:
        raw = datasets.load_dataset("text", data_files=data_files, sample_by="document")
    except Exception as error:  # the files were readable a moment ago; report whatever datasets says
        raise CLIError(f"cannot read the text files: {describe(error)}") from error

    def tokenize(batch, fraction):
        heads, tails = [], []
        for text in batch["text"]:
            cut = int((1 - fraction) * len(text))  # the book's split_idx = int(0.9 * len(text))
            heads.append(text[:cut])
            tails.append(text[cut:])
        enc = lambda texts: tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731
        return {"head_ids": enc(heads), "tail_ids": enc(tails), "chars": [len(t) for t in batch["text"]]}

    def run_map(ds, fraction):
        return ds.map(
            tokenize,
            fn_kwargs={"fraction": fraction},
            batched=True,
            batch_size=16,
            num_proc=num_proc if num_proc and len(ds) > 1 else None,
            remove_columns=["text"],
            load_from_cache_file=not overwrite_cache,
            desc="tokenizing",
        )

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    eot = eot if isinstance(eot, int) and eot != tokenizer.unk_token_id else tokenizer.eos_token_id

    def join(docs):
        parts = []
        for ids in docs:
            if len(ids):
                if parts and eot is not None:
                    parts.append([eot])
                parts.append(ids)
        return np.fromiter((i for part in parts for i in part), dtype=np.int64)

    train = run_map(raw["train"], fraction)
    train_ids = join(train["head_ids"])
    if val_files:
        val_ids, val_what = (
            join(run_map(raw["validation"], 0.0)["head_ids"]),
            f"{len(val_files)} validation file(s)",
        )
    elif fraction > 0:
        val_ids, val_what = join(train["tail_ids"]), f"the last {split_percentage:g}% of each document"
    else:
        val_ids, val_what = None, "none"
    names = ", ".join(f.name for f in train_files[:3]) + (
        f" and {len(train_files) - 3} more" if len(train_files) > 3 else ""
    )
    chars = sum(train["chars"])
    described = f"{len(train_files)} training file(s) ({names}), {chars:,} characters; validation: {val_what}"
    return train_ids, val_ids, described


class EpochSampler:
    """A shuffle that depends only on (seed, epoch), the same in every process and after a resume.
    (Not a RandomSampler, so Accelerate leaves it alone; it touches no global random state.)"""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


def spread(n, k):
    """k indices spread evenly over range(n) (all of them when k is 0 or >= n)."""
    if k == 0 or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def window_datasets(train_ids, val_ids, block_size, stride, batch_size, world):
    """The book's sliding windows over the training (and validation) tokens; too little text for one
    batch, or for one validation window, is a `CLIError` that says what to change."""
    train_set = SlidingWindowDataset(train_ids, block_size, stride)
    need = f"one window of --block_size {block_size} needs {block_size + 1} tokens"
    if len(train_set) == 0:
        raise CLIError(
            f"the training text is {len(train_ids)} tokens: {need}; give more text or a smaller --block_size"
        )
    if len(train_set) < batch_size * world:
        raise CLIError(
            f"the training text makes {len(train_set)} windows, fewer than one batch of {batch_size * world} ({world} "
            f"process(es) x --per_device_train_batch_size {batch_size}): give more text, or lower "
            "--per_device_train_batch_size, --block_size or --stride"
        )
    val_set = SlidingWindowDataset(val_ids, block_size, stride) if val_ids is not None else None
    if val_set is not None and len(val_set) == 0:
        raise CLIError(
            f"the validation text is {len(val_ids)} tokens: {need}; give a --validation_file, a larger "
            "--validation_split_percentage, a smaller --block_size, or --validation_split_percentage 0"
        )
    return train_set, val_set


def data_loaders(train_set, val_set, batch_size, eval_batch_size, eval_windows, seed):
    """(sampler, training loader, {"train", "val"} evaluation loaders): the training windows shuffled
    per epoch by `EpochSampler`, each evaluation on the same `eval_windows` windows `spread` over each
    set. No loader touches the global random generator."""
    sampler = EpochSampler(len(train_set), seed)
    train_loader = DataLoader(
        train_set,
        sampler=sampler,
        batch_size=batch_size,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    eval_loaders = {
        name: DataLoader(
            Subset(dataset, spread(len(dataset), eval_windows)),
            batch_size=eval_batch_size,
            generator=torch.Generator().manual_seed(seed),
        )
        for name, dataset in (("train", train_set), ("val", val_set))
        if dataset is not None
    }
    return sampler, train_loader, eval_loaders


def make_scheduler(name, optimizer, warmup, total_steps, initial_lr=None, min_lr=None):
    """transformers' schedule `name` over `total_steps`, or appendix D's own ("book_appendix_d": from
    `initial_lr` up to the peak, cosine down to `min_lr`, the book's `train_model` step by step);
    `warmup` None: 20% of the steps (appendix D), none for "constant" (chapter 5).
    Returns (scheduler, warmup steps, clips(step)): whether 0-based step `step` clips its gradients
    (appendix D's schedule clips only once warm-up is over, the others always)."""
    if warmup is None:
        warmup = 0 if name == "constant" else int(0.2 * total_steps)
    if name == "book_appendix_d":
        from .schedules import BOOK_INITIAL_LR, BOOK_MIN_LR, book_appendix_d_scheduler, book_clips_gradients

        try:
            scheduler = book_appendix_d_scheduler(
                optimizer,
                warmup_steps=warmup,
                total_steps=total_steps,
                initial_lr=BOOK_INITIAL_LR if initial_lr is None else initial_lr,
                min_lr=BOOK_MIN_LR if min_lr is None else min_lr,
            )
        except ValueError as error:
            raise CLIError(
                f"--lr_scheduler_type book_appendix_d: {error}; set --num_warmup_steps, or train more steps"
            ) from error
        return scheduler, warmup, lambda step: book_clips_gradients(step, warmup)
    extra = {"min_lr_rate": 0.1} if name == "cosine_with_min_lr" else None
    scheduler = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
        scheduler_specific_kwargs=extra,
    )
    return scheduler, warmup, lambda step: True


def check_book_exact(args, world: int = 1, mixed_precision: str = "no") -> None:
    """`--book_exact` runs the book's chapter 5 loop as printed: one process, float32, one batch per
    step, AdamW at a constant rate, whole epochs from the book's initialization, evaluations on the
    same loaders. An option it cannot honour is a `CLIError`, never silently ignored. (Called with
    the options alone, then with what the Accelerator and its launcher made of them.)"""
    mixed_precision = args.mixed_precision or mixed_precision
    refused = [
        (world > 1, f"runs the book's loop in one process, not {world}: start it with python, not a launcher"),
        (mixed_precision != "no", f"trains in float32 as the book does: drop mixed precision {mixed_precision}"),
        (args.gradient_accumulation_steps != 1, "takes one batch per step: drop --gradient_accumulation_steps"),
        (args.lr_scheduler_type != "constant", "keeps the book's constant rate: drop --lr_scheduler_type"),
        (args.num_warmup_steps, "keeps the book's constant rate: drop --num_warmup_steps"),
        (args.max_train_steps, "runs whole epochs as the book does: use --num_train_epochs"),
        (args.model_name_or_path, "trains from the book's initial weights: use --config_name"),
        (args.init != "book", "draws the book's initial weights: drop --init gpt2"),
        (args.resume_from_checkpoint, "runs uninterrupted (no checkpoints to resume): drop --resume_from_checkpoint"),
        (args.checkpointing_steps or args.stop_after_steps, "saves no checkpoints: drop --checkpointing_steps/--stop_after_steps"),
        (args.torch_compile or args.gradient_checkpointing, "runs the book's eager kernels: drop --torch_compile/--gradient_checkpointing"),
        (args.per_device_eval_batch_size != args.per_device_train_batch_size, "evaluates with the training batch size: drop --per_device_eval_batch_size"),
        (args.report_to, "logs to no tracker: drop --report_to"),
        (args.validation_split_percentage == 0 and not args.validation_file, "evaluates on validation text: give --validation_file or a --validation_split_percentage"),
    ]  # fmt: skip
    for wrong, why in refused:
        if wrong:
            raise CLIError(f"--book_exact {why}")


def run_book_exact(args, accelerator, config, tokenizer, train_set, val_set, prompt_ids):
    """examples/pretrain.py --book_exact: the book's chapter 5 run (`pretrain_book_exact`: its seeded
    weights, then at once its shuffled loader; no `set_seed` in between) over pretrain.py's windows,
    printing the book's lines and a greedy sample per epoch. Returns (model, config, tokenizer,
    history, steps per epoch, log facts) for pretrain.py's `finish`."""
    from .book_pretraining import pretrain_book_exact

    say, batch = accelerator.print, args.per_device_train_batch_size
    block_size, stride = train_set.block_size, train_set.stride
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if args.overwrite_output_dir and accelerator.is_main_process:
        shutil.rmtree(Path(args.output_dir) / CHECKPOINTS, ignore_errors=True)
    say(
        f"Run: --book_exact, the book's chapter 5 loop on {accelerator.device}, {args.num_train_epochs} epochs"
    )
    say(
        f"      train {len(train_set)} windows, validation {len(val_set)} windows of {block_size} (stride {stride})"
    )
    max_new_tokens = min(args.max_new_tokens, config.max_position_embeddings - prompt_ids.shape[1])
    start_time = time.perf_counter()
    history = pretrain_book_exact(
        model, train_set, val_set, seed=args.seed, batch_size=batch, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, num_epochs=args.num_train_epochs, eval_freq=args.eval_steps,
        eval_iter=args.eval_iters or None, max_grad_norm=args.max_grad_norm or None,
        device=accelerator.device, log=say, on_step=lambda step, loss: check_finite(loss, step),
        sample=lambda m: generate_sample(accelerator, m, tokenizer, prompt_ids, max_new_tokens),
    )  # fmt: skip
    steps = len(history["step_losses"])
    history["train_runtime_s"] = time.perf_counter() - start_time
    history["tokens_per_second"] = steps * batch * block_size / max(history["train_runtime_s"], 1e-9)
    log = dict(book_exact=True, world_size=1, mixed_precision="no", block_size=block_size, stride=stride)
    log |= dict(global_step=steps, tokens_seen=steps * batch * block_size)
    return model, config, tokenizer, history, len(train_set) // batch, log


# ------------------------------------------------------------------------------------ book's pieces
def calc_loss_batch(model, input_batch, target_batch, reduction="mean"):
    """The book's loss: cross-entropy of every position's logits against the next token. With
    reduction="none", one loss per window (their mean is the token mean: all windows are as long)."""
    logits = model(input_ids=input_batch, use_cache=False).logits
    loss = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), target_batch.flatten(), reduction=reduction
    )
    return loss if reduction == "mean" else loss.view(target_batch.shape).mean(dim=1)


@torch.no_grad()
def evaluate_model(accelerator, model, eval_loaders) -> dict:
    """The book's evaluate_model: the mean loss on a fixed set of windows per loader, in eval mode
    (no dropout), gathered over every process."""
    model.eval()
    losses = {}
    for name, loader in eval_loaders.items():
        per_window = [accelerator.gather_for_metrics(calc_loss_batch(model, x, y, "none")) for x, y in loader]
        losses[name] = torch.cat(per_window).mean().item()
    model.train()
    return losses


@torch.no_grad()
def generate_sample(accelerator, model, tokenizer, prompt_ids, max_new_tokens) -> str:
    """The book's generate_and_print_sample: a greedy continuation of the prompt, on one line. Every
    process generates (FSDP needs them all for each forward); greedy, so they agree."""
    model.eval()
    generator = accelerator.unwrap_model(model, keep_torch_compile=False)
    ids = prompt_ids.to(accelerator.device)
    with accelerator.autocast():
        out = generator.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    model.train()
    return tokenizer.decode(out[0]).replace("\n", " ")


def book_init_(model, seed):
    """The book's initialization: chapter 4 builds GPTModel after torch.manual_seed(123) and keeps
    PyTorch's defaults. Our modules are registered in the book's order (tok_emb, pos_emb, each block's
    W_query, W_key, W_value, out_proj, ff, ..., out_head), so resetting them in that order after the
    same seed draws the very numbers the book's constructor draws."""
    torch.manual_seed(seed)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            if tied and module is model.get_output_embeddings():
                continue  # a tied head is the token embedding
            module.reset_parameters()
        elif hasattr(module, "scale") and hasattr(module, "shift"):  # the book's LayerNorm
            nn.init.ones_(module.scale)
            nn.init.zeros_(module.shift)


def new_model(config, model_name_or_path=None, *, init="gpt2", seed=123, gradient_checkpointing=False):
    """The float32 model a run trains: `model_name_or_path`'s weights, else `config`'s from scratch
    with GPT-2's initialization or, with init="book", the book's (`book_init_`)."""
    if model_name_or_path:
        model = load_pretrained(AutoModelForCausalLM, model_name_or_path, config=config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if init == "book":
            book_init_(model, seed)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


class Progress:
    """What a run has done so far, kept where training_log.json and the checkpoints read it (the
    step count, the tokens seen, every step's loss and rate, every evaluation), and shown: the
    progress bar, the book's "Train loss / Val loss" lines, the trackers' logs."""

    def __init__(self, accelerator, max_steps, global_step=0, tokens_seen=0, history=None):
        self.accelerator, self.global_step, self.tokens_seen = accelerator, global_step, tokens_seen
        self.history = history or {"step_losses": [], "learning_rates": [], "evals": []}
        self.bar = tqdm(
            total=max_steps,
            initial=global_step,
            disable=not accelerator.is_local_main_process,
            unit="step",
            dynamic_ncols=True,
        )
        self.start_time, self.start_tokens = time.perf_counter(), tokens_seen

    def step(self, loss, lr, tokens, epoch) -> None:
        """One optimizer step done, at rate `lr` over `tokens` tokens (all processes'); `loss` is this
        process's mean over the step's batches. A loss that is not a number stops the run."""
        self.global_step += 1
        self.tokens_seen += tokens
        step_loss = self.accelerator.reduce(loss, reduction="mean").item()  # all processes'
        check_finite(step_loss, self.global_step)
        self.history["step_losses"].append(step_loss)
        self.history.setdefault("learning_rates", []).append(lr)  # (a checkpoint of an older run has none)
        speed = (self.tokens_seen - self.start_tokens) / max(time.perf_counter() - self.start_time, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(epoch=epoch + 1, loss=f"{step_loss:.3f}", tok_s=f"{speed:,.0f}")
        self.accelerator.log(
            {"train/loss": step_loss, "train/lr": lr, "train/tokens_seen": self.tokens_seen},
            step=self.global_step,
        )

    def evaluated(self, epoch, losses: dict, sample: str) -> None:
        """The book's evaluation line and sample, printed and recorded."""
        train_loss, val_loss = losses["train"], losses.get("val")
        self.history["evals"].append(
            dict(
                step=self.global_step,
                epoch=epoch + 1,
                tokens_seen=self.tokens_seen,
                train_loss=train_loss,
                val_loss=val_loss,
                sample=sample,
            )
        )
        line = f"Ep {epoch + 1} (Step {self.global_step:06d}): Train loss {train_loss:.3f}"
        line += f", Val loss {val_loss:.3f}" if val_loss is not None else ""
        if self.accelerator.is_main_process:
            self.bar.write(f"{line}\n  {sample}")
        self.accelerator.log({f"eval/{k}_loss": v for k, v in losses.items()}, step=self.global_step)

    def close(self) -> None:
        """The bar closed, this session's time and speed added to the history."""
        self.bar.close()
        train_time = time.perf_counter() - self.start_time
        self.history["train_runtime_s"] = self.history.get("train_runtime_s", 0.0) + train_time
        self.history["tokens_per_second"] = (self.tokens_seen - self.start_tokens) / max(train_time, 1e-9)


def checkpoint_due(every: str | None, step: int, steps_per_epoch: int) -> bool:
    """Whether --checkpointing_steps (N, "epoch" or None) asks for a checkpoint after `step`."""
    if every == "epoch":
        return step % steps_per_epoch == 0
    return every is not None and step % int(every) == 0


def plot_losses(evals, path, steps_per_epoch):
    """The book's plot_losses: training and validation loss against epochs, tokens seen on the top axis."""
    if not evals:
        return
    import matplotlib  # only here: a run that never plots never pays for matplotlib's import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs_seen = [e["step"] / steps_per_epoch for e in evals]
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, [e["train_loss"] for e in evals], label="Training loss")
    if evals[0].get("val_loss") is not None:
        ax1.plot(epochs_seen, [e["val_loss"] for e in evals], linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax1.twiny()  # the same curve against tokens seen, drawn invisibly to set the top axis
    ax2.plot([e["tokens_seen"] for e in evals], [e["train_loss"] for e in evals], alpha=0)
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_log(output_dir, history, steps_per_epoch, **facts) -> None:
    """training_log.json (the run's facts, every step's loss, every evaluation) and the loss plot."""
    write_json(Path(output_dir) / LOG_FILE, {**facts, **history})
    plot_losses(history["evals"], Path(output_dir) / PLOT_FILE, steps_per_epoch)


# -------------------------------------------------------------------------------------- checkpoints
def _read_state(folder: Path) -> dict | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        return state if isinstance(state, dict) and isinstance(state.get("global_step"), int) else None
    except (OSError, ValueError):
        return None


def complete_checkpoints(output_dir) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints under output_dir/checkpoints, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    found = []
    for folder in root.glob("step_*") if root.is_dir() else []:
        state = _read_state(folder)
        if state is not None:
            found.append((state["global_step"], folder))
    return sorted(found)


def save_checkpoint(accelerator, model, output_dir, global_step, state: dict, keep: int | None) -> Path:
    """accelerator.save_state into checkpoints/step_N, complete or invisible: written under a
    temporary name, the state file last, then put in place: swapped with an older step_N in one step
    (`exchange`), or, where the system cannot, after renaming the older one aside. A kill at any
    instant leaves step_N old and whole or new and whole (or, without the swap, absent: `latest` then
    takes the one before and says so); Ctrl-C and SIGTERM wait for the renames. The old one is deleted
    state file first. Keeps the newest `keep` complete checkpoints."""
    root = Path(output_dir) / CHECKPOINTS
    path, tmp = root / f"step_{global_step}", root / f".step_{global_step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process has written its part (shards, random states)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model, keep_torch_compile=False).config.save_pretrained(tmp)
        write_json(tmp / STATE_FILE, state)  # last: the checkpoint is complete
        old = root / f".step_{global_step}.old"
        with signals_deferred():
            if path.exists() and exchange(tmp, path):
                old = tmp  # the old step_N, swapped out in one step
            else:
                remove_checkpoint(old)
                if path.exists():
                    os.replace(path, old)
                os.replace(tmp, path)
        remove_checkpoint(old)
        if keep:
            for _, stale in complete_checkpoints(output_dir)[:-keep]:
                remove_checkpoint(stale)
    accelerator.wait_for_everyone()
    return path


def remove_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder, its state file first: a deletion cut short leaves an invisible
    (incomplete) folder, never one that looks complete and lacks files."""
    with contextlib.suppress(FileNotFoundError):
        (folder / STATE_FILE).unlink()
    shutil.rmtree(folder, ignore_errors=True)


def find_checkpoint(name: str, output_dir, say=None) -> Path:
    """The folder --resume_from_checkpoint names, checked; "latest" is the newest complete one (and
    `say` is told of any newer folder skipped because it is incomplete: an interrupted save)."""
    if name == "latest":
        done = complete_checkpoints(output_dir)
        root = Path(output_dir) / CHECKPOINTS
        newest = done[-1][0] if done else -1
        skipped = sorted(
            p.name
            for p in (root.iterdir() if root.is_dir() else [])
            if p.is_dir() and p not in [f for _, f in done] and _step_of(p.name) > newest
        )
        if not done:
            extra = f" (incomplete: {', '.join(skipped)})" if skipped else ""
            raise CLIError(f"--resume_from_checkpoint latest: no complete checkpoint in {root}{extra}")
        if skipped and say is not None:
            say(
                f"note: skipping {', '.join(skipped)} in {root}: incomplete (a save was interrupted); "
                f"resuming from {done[-1][1].name}, the newest complete checkpoint"
            )
        return done[-1][1]
    path = Path(name)
    if not path.is_dir():
        raise CLIError(f"--resume_from_checkpoint {path} is not a folder")
    if not (path / STATE_FILE).is_file():
        raise CLIError(
            f"--resume_from_checkpoint {path} is not a checkpoint written by pretrain.py (no {STATE_FILE} in it)"
        )
    return path


def _step_of(name: str) -> int:
    digits = name.strip(".").removeprefix("step_").split(".")[0]
    return int(digits) if digits.isdigit() else -1


PICKLED = (".pkl", ".bin", ".pt", ".pth")


def check_no_code(checkpoint: Path) -> None:
    """Refuse a checkpoint any of whose files would run code when a resume reads it. Accelerate's
    load_state unpickles the registered objects' states (custom_checkpoint_N.pkl), random states,
    optimizer and scheduler with `weights_only=False`; torch.distributed.checkpoint (FSDP) reads
    `.metadata` with plain pickle and the non-tensor entries of `.distcp` files with `weights_only=False`.
    Each is read here first the safe way (`weights_only=True`; `.metadata` through an unpickler that
    knows only the checkpoint format's own classes; every entry a `.metadata` names in its `.distcp`
    file), so a crafted file is stopped before anything runs. Safetensors and JSON hold no code."""
    for path in sorted(checkpoint.rglob("*")):
        if not path.is_file():
            continue
        try:
            if path.suffix in PICKLED:
                accelerate_load(path, map_location="cpu")
            elif path.name.endswith(".metadata"):
                _check_distcp_folder(path)
        except Exception as error:  # UnpicklingError for code, others for torn files
            raise CLIError(
                f"checkpoint file {path} holds more than tensors and numbers (or is damaged), so it is "
                f"not loaded: {describe(error)}"
            ) from error


class _MetadataUnpickler(pickle.Unpickler):
    """Builds torch.distributed.checkpoint's `.metadata`: its own dataclasses, torch's sizes, dtypes
    and layouts, paths; any other name (a function that would run) is refused."""

    MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")

    def find_class(self, module, name):
        found = None
        if module in self.MODULES:
            found = getattr(importlib.import_module(module), name, None)
            found = found if isinstance(found, type) else None
        elif module == "torch" and name == "Size":
            found = torch.Size
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            found = getattr(torch, name)
        elif (module, name) == ("torch.serialization", "_get_layout"):
            found = torch.serialization._get_layout
        elif (module, name) in (("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "Path")):
            found = getattr(pathlib, name)
        elif (module, name) == ("collections", "OrderedDict"):
            found = collections.OrderedDict
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")
        return found


def _check_distcp_folder(metadata_path: Path) -> None:
    """The `.metadata` of a torch.distributed.checkpoint folder, read safely; then every entry it
    names, read from its `.distcp` file with `weights_only=True` (tensors and plain values)."""
    with open(metadata_path, "rb") as f:
        metadata = _MetadataUnpickler(f).load()
    for info in getattr(metadata, "storage_data", {}).values():
        if getattr(info, "transform_descriptors", None):
            raise ValueError(f"{info.relative_path} is stored with transforms this check does not read")
        with open(metadata_path.parent / info.relative_path, "rb") as f:
            f.seek(info.offset)
            torch.load(io.BytesIO(f.read(info.length)), map_location="cpu", weights_only=True)


def read_checkpoint(checkpoint: Path, config, fsdp: bool):
    """(training state, saved config) of a checkpoint, after `check_no_code`; one of another model
    (when `config` is given) or of another kind of run (FSDP or not) is a `CLIError`."""
    state = _read_state(checkpoint)
    try:
        saved = AutoConfig.from_pretrained(str(checkpoint))
    except Exception as error:  # a broken config.json fails in many ways; the first line says which
        raise CLIError(f"cannot read checkpoint {checkpoint}: {describe(error)}") from error
    if state is None:
        raise CLIError(
            f"checkpoint {checkpoint} is incomplete ({STATE_FILE} is unreadable): resume another one"
        )
    if config is not None:
        ours, theirs = shape_of(config), shape_of(saved)
        diff = [
            f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here"
            for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)
        ]
        if diff:
            raise CLIError(
                f"checkpoint {checkpoint} is of another model ({'; '.join(diff)}): resume with the model it was saved from"
            )
    if state.get("fsdp", False) != fsdp:
        kind = "an FSDP run (sharded weights)" if state.get("fsdp") else "a run without FSDP"
        raise CLIError(f"checkpoint {checkpoint} was written by {kind}: resume it the same way")
    check_no_code(checkpoint)
    return state, saved


def load_checkpoint(accelerator, checkpoint: Path, state: dict, now: dict, say) -> None:
    """accelerator.load_state, then a note for each run fact (`now`) that differs from the checkpoint's:
    such a run does not repeat the interrupted one exactly, and the optimizer and schedule keep the
    checkpoint's learning rate and weight decay."""
    try:
        accelerator.load_state(str(checkpoint))  # read_checkpoint checked that it unpickles no code
    except Exception as error:  # a torn or foreign checkpoint fails in many ways; the first line says which
        raise CLIError(f"cannot load checkpoint {checkpoint}: {describe(error)}") from error
    # Checkpoints are taken between optimizer steps: a new accumulation starts here, whatever the
    # counter saved by a run with other --gradient_accumulation_steps says.
    accelerator.step = 0
    for key, value in now.items():
        if state.get(key, value) != value:
            kept = (
                " (the optimizer and schedule keep the checkpoint's)"
                if key in ("learning_rate", "weight_decay")
                else ""
            )
            say(
                f"note: {key} was {state.get(key)} in the checkpoint, {value} now{kept}: the run will not repeat exactly"
            )
    say(f"Resumed from {checkpoint} at step {state['global_step']} ({state['tokens_seen']:,} tokens seen)")


def shape_of(config) -> dict:
    values = config.to_dict()
    return {k: values[k] for k in SHAPE_KEYS if k in values}


# ------------------------------------------------------------------------------------------ signals
class StopRequest:
    """Ctrl-C or SIGTERM ask for a stop at the end of the current step (a checkpoint first); a second
    one stops at once. Use as a context manager around the loop."""

    def __init__(self):
        self.signal = None
        self.previous = {}
        self.reason = None  # why the run stopped: "--stop_after_steps" or a signal's name
        self.exit_status = 0

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread
                pass
        return self

    def handle(self, signum, frame):
        self.signal = signum
        signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))  # a second one is not polite
        if rank() == 0:
            print(
                f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
                "(again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def stops(self, accelerator, step: int, stop_after_steps: int | None) -> bool:
        """Whether the run stops after `step`: a signal to any process (they all agree), or
        --stop_after_steps. Sets `reason` and `exit_status` (0, or 128 + the signal's number)."""
        if self.signal is not None:
            accelerator.set_trigger()
        if accelerator.check_trigger():  # all processes agree, whichever got the signal
            sig = self.signal or signal.SIGTERM
            self.reason, self.exit_status = signal.Signals(sig).name, 128 + int(sig)
        elif step == stop_after_steps:
            self.reason = "--stop_after_steps"
        return self.reason is not None

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def check_finite(loss: float, step: int) -> None:
    """A loss that is not a number stops the run before it becomes the model."""
    if not math.isfinite(loss):
        raise CLIError(
            f"the training loss is {loss} at step {step}: the weights diverged; lower --learning_rate "
            "(or keep --max_grad_norm on) and start again, or resume from an earlier checkpoint"
        )
