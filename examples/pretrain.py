#!/usr/bin/env python
"""Pretrain the book's GPT on plain text (chapter 5 and appendix D) with Accelerate, the same script on
a laptop CPU, one GPU, or many GPUs and machines.

    python examples/pretrain.py --config_name tiny --output_dir out/pretrain        # The Verdict, downloaded once
    python examples/pretrain.py --config_name GPT_CONFIG_124M --config_overrides context_length=256 \\
        --init book --lr_scheduler_type constant --max_grad_norm 0 --output_dir out/book-ch05   # chapter 5
    accelerate launch --config_file examples/accelerate_configs/ddp.yaml examples/pretrain.py ...
    accelerate launch --config_file examples/accelerate_configs/fsdp.yaml examples/pretrain.py ...
    torchrun --nproc_per_node 4 examples/pretrain.py ...

Data: text files, folders or glob patterns (--train_file, --validation_file), by default the book's
the-verdict.txt. They are read and tokenized with GPT-2's tokenizer through `datasets` (cached), each
document is split 90/10 on characters as in the book when no validation file is given, and the token
stream is cut into the book's sliding windows (--block_size, --stride; the target is the window moved
one token on). Training: AdamW, warmup then cosine decay, gradient clipping (appendix D), gradient
accumulation, mixed precision, torch.compile, gradient checkpointing. Every --eval_steps steps it
prints the book's "Train loss / Val loss" line and a greedy sample of --prompt; at the end it writes
model and tokenizer with save_pretrained (AutoModelForCausalLM.from_pretrained loads the folder),
loss-plot.png (the book's figure) and training_log.json (every step's loss, every evaluation).

--push_to_hub (--hub_model_id, --hub_token) pushes that folder at the end, without checkpoints, with a model card
(modeling_gpt_scratch.hub): AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True) loads it anywhere.

Checkpoints (accelerator.save_state, in OUTPUT_DIR/checkpoints/step_N) hold everything needed to go
on exactly: --resume_from_checkpoint DIR (or "latest") gives the losses an uninterrupted run gives.
Ctrl-C or SIGTERM saves a checkpoint at the end of the current step, then stops.
"""

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

BOOK_PROMPT = "Every effort moves you"
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr")
STATE_FILE = "training_state.json"  # written last into a checkpoint folder: its presence marks a complete one
LOG_FILE = "training_log.json"
PLOT_FILE = "loss-plot.png"
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


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def finish(code: int = 0):
    """Leave without the abort some accelerate runs end with ("terminate called without an active
    exception"): flush, take down the process group, and exit at once."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fail(message):
    """One line on stderr (from the first process only), exit code 2, like a bad command-line option."""
    if rank() == 0:
        print(f"pretrain.py: error: {message}", file=sys.stderr, flush=True)
    finish(2)


def first_line(error) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        if rank() == 0:
            print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr, flush=True)
        sys.exit(2)


def parse_args(argv=None):
    p = Parser(
        prog="pretrain.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--train_file",
        nargs="+",
        help="text files, folders (their .txt/.text/.md files) or glob patterns; default: the book's "
        "the-verdict.txt, downloaded once into --data_cache_dir",
    )
    d.add_argument(
        "--validation_file", nargs="+", help="the same for validation; default: a split of the training text"
    )
    d.add_argument(
        "--validation_split_percentage",
        type=float,
        default=10.0,
        help="without --validation_file: the last PCT%% of each document's characters validate (the book's 90/10); 0: no validation",
    )
    d.add_argument(
        "--data_cache_dir",
        help="where the default the-verdict.txt is downloaded to or found (pre-fill it on a machine without "
        "internet); default: $GPT_SCRATCH_CACHE or ~/.cache/gpt-scratch/data",
    )
    d.add_argument("--block_size", type=int, help="tokens per window (default: the model's context_length)")
    d.add_argument(
        "--stride", type=int, help="tokens between window starts (default: --block_size, as in chapter 5)"
    )
    d.add_argument("--preprocessing_num_workers", type=int, help="processes for tokenization")
    d.add_argument(
        "--overwrite_cache", action="store_true", help="tokenize again instead of using the datasets cache"
    )

    m = p.add_argument_group("model")
    m.add_argument(
        "--config_name",
        help="train from scratch: a preset (tiny, GPT_CONFIG_124M, gpt2-small ... gpt2-xl), a config JSON file or a folder with config.json",
    )
    m.add_argument(
        "--config_overrides",
        help='change the config, e.g. "context_length=256,drop_rate=0.0" (the book trains at 256)',
    )
    m.add_argument(
        "--init",
        choices=("gpt2", "book"),
        default="gpt2",
        help="from scratch: GPT-2's initialization (N(0, 0.02), the model's default) or the book's (PyTorch's "
        "defaults: embeddings N(0, 1), Linear Kaiming-uniform, drawn after torch.manual_seed(--seed) in the "
        "book's order, so the untrained model is the book's)",
    )
    m.add_argument(
        "--model_name_or_path", help="continue training a saved or converted model (a folder or Hub id)"
    )
    m.add_argument("--tokenizer_name", help="default: the model folder's tokenizer, else GPT-2's")

    t = p.add_argument_group("training")
    t.add_argument("--output_dir", default="out/pretrain", help="model, plot, log and checkpoints go here")
    t.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="train into an --output_dir that already holds files (its old checkpoints are deleted)",
    )
    t.add_argument(
        "--per_device_train_batch_size", type=int, default=2, help="windows per step and process (book: 2)"
    )
    t.add_argument("--per_device_eval_batch_size", type=int, help="default: --per_device_train_batch_size")
    t.add_argument("--learning_rate", type=float, default=4e-4, help="peak learning rate (book: 0.0004)")
    t.add_argument(
        "--weight_decay", type=float, default=0.1, help="AdamW weight decay, on all weights as in the book"
    )
    t.add_argument(
        "--num_train_epochs", type=int, default=10, help="passes over the training windows (book: 10)"
    )
    t.add_argument("--max_train_steps", type=int, help="optimizer steps in all; overrides --num_train_epochs")
    t.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    t.add_argument(
        "--lr_scheduler_type",
        default="cosine",
        choices=SCHEDULERS,
        help="after the warmup; 'constant' with --num_warmup_steps 0 is chapter 5, 'cosine' appendix D",
    )
    t.add_argument(
        "--num_warmup_steps",
        type=int,
        help="linear warmup from 0 to --learning_rate (default: 20%% of the steps as in appendix D; 0 for 'constant')",
    )
    t.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="clip the gradient norm (appendix D: 1.0); 0: never"
    )
    t.add_argument("--seed", type=int, default=123, help="the book's torch.manual_seed(123)")
    t.add_argument(
        "--mixed_precision",
        choices=("no", "bf16", "fp16"),
        help="default: what `accelerate launch`/`accelerate config` says, else no",
    )
    t.add_argument(
        "--torch_compile", action="store_true", help="compile the model with torch.compile (inductor)"
    )
    t.add_argument(
        "--gradient_checkpointing", action="store_true", help="recompute activations to save memory"
    )
    t.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")

    e = p.add_argument_group("evaluation, checkpoints, logging")
    e.add_argument(
        "--eval_steps",
        type=int,
        default=5,
        help="evaluate after step 1 and every N steps (book: eval_freq 5)",
    )
    e.add_argument(
        "--eval_iters",
        type=int,
        default=5,
        help="batches of training and of validation windows per evaluation (book: eval_iter 5); 0: all",
    )
    e.add_argument("--prompt", default=BOOK_PROMPT, help="greedy sample at each evaluation starts with this")
    e.add_argument("--max_new_tokens", type=int, default=50, help="tokens per sample (book: 50)")
    e.add_argument(
        "--checkpointing_steps", help='save a checkpoint every N steps, or "epoch" after each epoch'
    )
    e.add_argument("--checkpoints_total_limit", type=int, help="keep only the newest N checkpoints")
    e.add_argument(
        "--resume_from_checkpoint", help='a checkpoint folder, or "latest" (the newest in --output_dir)'
    )
    e.add_argument(
        "--stop_after_steps",
        type=int,
        help="save a checkpoint and stop once this many steps are done, as Ctrl-C would (split a run into sessions)",
    )
    e.add_argument(
        "--report_to",
        default="none",
        help="tracker for the losses: none, tensorboard, wandb, ... (as in Accelerate)",
    )
    h = p.add_argument_group("Hugging Face Hub (as in transformers' run_clm_no_trainer.py)")
    h.add_argument(
        "--push_to_hub",
        action="store_true",
        help="at the end, push model, tokenizer, plot and log with a card",
    )
    h.add_argument("--hub_model_id", help="NAME or OWNER/NAME (default: the --output_dir folder's name)")
    h.add_argument("--hub_token", help="Hub token (default: HF_TOKEN, or the one `hf auth login` saved)")
    return p.parse_args(argv)


def check_options(args):
    """Mistakes in the options alone, before anything slow."""
    if args.init == "book" and args.model_name_or_path:
        fail(
            "--init book is for training from scratch (--config_name); --model_name_or_path brings its own weights"
        )
    if args.config_name and args.model_name_or_path:
        fail("pass --config_name (train from scratch) or --model_name_or_path (continue a model), not both")
    if not (args.config_name or args.model_name_or_path or args.resume_from_checkpoint):
        fail(
            "say which model to train: --config_name tiny (or another preset / a config.json) or --model_name_or_path FOLDER"
        )
    for name in (
        "per_device_train_batch_size",
        "num_train_epochs",
        "gradient_accumulation_steps",
        "eval_steps",
        "max_new_tokens",
    ):
        if getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in (
        "per_device_eval_batch_size",
        "max_train_steps",
        "block_size",
        "stride",
        "checkpoints_total_limit",
        "stop_after_steps",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"--{name} must be at least 1, got {value}")
    for name in ("eval_iters", "num_warmup_steps", "preprocessing_num_workers"):
        value = getattr(args, name)
        if value is not None and value < 0:
            fail(f"--{name} must be >= 0, got {value}")
    if not args.learning_rate > 0:
        fail(f"--learning_rate must be > 0, got {args.learning_rate}")
    if args.weight_decay < 0 or args.max_grad_norm < 0:
        fail("--weight_decay and --max_grad_norm must be >= 0")
    if not 0 <= args.validation_split_percentage < 100:
        fail(f"--validation_split_percentage must be in [0, 100), got {args.validation_split_percentage}")
    if not args.prompt:
        fail("--prompt is empty")
    if args.checkpointing_steps is not None and args.checkpointing_steps != "epoch":
        if not args.checkpointing_steps.isdigit() or int(args.checkpointing_steps) < 1:
            fail(
                f'--checkpointing_steps must be a number of steps or "epoch", got {args.checkpointing_steps!r}'
            )
    args.per_device_eval_batch_size = args.per_device_eval_batch_size or args.per_device_train_batch_size
    if args.push_to_hub:  # before training, not after it
        from huggingface_hub import constants

        from modeling_gpt_scratch.hub import HubError, check_repo_id

        args.hub_model_id = args.hub_model_id or Path(args.output_dir).absolute().name
        try:
            check_repo_id(args.hub_model_id)
        except HubError as e:
            fail(f"--hub_model_id: {e}")
        if constants.HF_HUB_OFFLINE:
            fail("--push_to_hub needs the network, but HF_HUB_OFFLINE=1 is set: run with HF_HUB_OFFLINE=0")
    args.report_to = [t.strip() for t in args.report_to.split(",") if t.strip() and t.strip() != "none"]
    if "tensorboard" in args.report_to:
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            fail("--report_to tensorboard needs the tensorboard package: pip install tensorboard")
    if "wandb" in args.report_to:
        from accelerate.utils import is_wandb_available

        if not is_wandb_available():
            fail("--report_to wandb needs the wandb package: pip install wandb")


# --------------------------------------------------------------------------------------------- setup
def make_accelerator(args):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # Where no GPU is, say cpu=True: `accelerate launch --multi_gpu` and torchrun would otherwise start
    # processes that never talk to each other (see ../shared/docs/facts.md).
    has_accelerator = torch.cuda.is_available() or (
        hasattr(torch, "accelerator") and torch.accelerator.is_available()
    )
    try:
        accelerator = Accelerator(
            cpu=args.cpu or not has_accelerator,
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=args.report_to or None,
            project_config=ProjectConfiguration(
                project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "runs")
            ),
            dynamo_backend="inductor" if args.torch_compile else None,
        )
    except (ValueError, RuntimeError) as error:  # fp16 without a GPU, a bad accelerate config, ...
        fail(f"cannot set up Accelerate: {first_line(error)}")
    use_fsdp2_on_cpu(accelerator)
    return accelerator


def use_fsdp2_on_cpu(accelerator):
    """Accelerate never turns FSDP on for a CPU run: `accelerate launch --config_file fsdp.yaml` on a
    machine without GPUs quietly trains with DDP. torch's FSDP2 (`fully_shard`) does work on CPU over
    gloo, so when the launcher asked for FSDP (ACCELERATE_USE_FSDP=true) and the processes run on CPU,
    switch Accelerate's state to FSDP2 with the launcher's plugin settings. From then on prepare,
    save_state, load_state and get_state_dict take Accelerate's FSDP2 path, as on GPUs; CI tests it so."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if not asked or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = (
        FullyShardedDataParallelPlugin()
    )  # reads FSDP_VERSION, FSDP_TRANSFORMER_CLS_TO_WRAP, ... from the launcher
    if plugin.fsdp_version != 2:
        fail("FSDP on CPU works with fsdp_version: 2 only (set it in the accelerate config)")
    state = accelerator.state
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.fsdp_plugin = plugin


def parse_overrides(text):
    overrides = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--config_overrides wants key=value pairs separated by commas, got {item!r}")
        value = value.strip()
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        else:
            try:
                parsed = int(value)
            except ValueError:
                try:
                    parsed = float(value)
                except ValueError:
                    parsed = value
        overrides[key.strip()] = parsed
    return overrides


def build_config(args):
    """The config of the model to train, from --config_name or --model_name_or_path (None when the
    model comes from a resumed checkpoint only)."""
    from transformers import AutoConfig

    from modeling_gpt_scratch import PRESETS, GPTScratchConfig

    overrides = parse_overrides(args.config_overrides)
    try:
        if args.config_name in PRESETS:
            return GPTScratchConfig.from_preset(args.config_name, **overrides)
        if args.config_name:
            path = Path(args.config_name)
            if path.is_file():
                config = GPTScratchConfig.from_json_file(str(path))
                for key, value in overrides.items():
                    setattr(config, key, value)
                config._validate()
                return config
            if path.is_dir():
                return AutoConfig.from_pretrained(str(path), **overrides)
            fail(
                f"--config_name {args.config_name!r} is neither a preset ({', '.join(PRESETS)}) nor a config file or folder"
            )
        if args.model_name_or_path:
            return AutoConfig.from_pretrained(args.model_name_or_path, **overrides)
    except (OSError, ValueError, TypeError, KeyError) as error:
        source = args.config_name or args.model_name_or_path
        fail(f"cannot read the model config from {source!r}: {first_line(error)}")
    return None


def shape_of(config) -> dict:
    values = config.to_dict()
    return {k: values[k] for k in SHAPE_KEYS if k in values}


def find_checkpoint(args):
    """The folder --resume_from_checkpoint names, checked; 'latest' is the newest complete one."""
    if args.resume_from_checkpoint == "latest":
        root = Path(args.output_dir) / "checkpoints"
        done = (
            sorted(
                (p for p in root.glob("*") if (p / STATE_FILE).is_file()),
                key=lambda p: json.loads((p / STATE_FILE).read_text())["global_step"],
            )
            if root.is_dir()
            else []
        )
        if not done:
            fail(f"--resume_from_checkpoint latest: no checkpoint in {root}")
        return done[-1]
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir():
        fail(f"--resume_from_checkpoint {path} is not a folder")
    if not (path / STATE_FILE).is_file():
        fail(
            f"--resume_from_checkpoint {path} is not a checkpoint written by pretrain.py (no {STATE_FILE} in it)"
        )
    return path


def check_resume(args, checkpoint: Path, config, accelerator):
    """The saved training state; a checkpoint of another model or another kind of run is an error."""
    from transformers import AutoConfig

    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        saved = AutoConfig.from_pretrained(str(checkpoint))
    except (OSError, ValueError) as error:
        fail(f"cannot read checkpoint {checkpoint}: {first_line(error)}")
    if config is not None:
        ours, theirs = shape_of(config), shape_of(saved)
        diff = [
            f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here"
            for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)
        ]
        if diff:
            fail(
                f"checkpoint {checkpoint} is of another model ({'; '.join(diff)}): resume with the model it was saved from"
            )
    fsdp_now = accelerator.distributed_type.name == "FSDP"
    if state.get("fsdp", False) != fsdp_now:
        kind = "an FSDP run (sharded weights)" if state.get("fsdp") else "a run without FSDP"
        fail(f"checkpoint {checkpoint} was written by {kind}: resume it the same way")
    return state, saved


def load_model(args, config, accelerator):
    import torch
    from transformers import AutoModelForCausalLM

    if args.model_name_or_path and not args.resume_from_checkpoint:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                args.model_name_or_path, config=config, dtype=torch.float32
            )
        except (OSError, ValueError, RuntimeError) as error:
            fail(f"cannot load a model from {args.model_name_or_path!r}: {first_line(error)}")
    else:  # from scratch, or the weights come from the checkpoint anyway
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if args.init == "book":
            book_init_(model, args.seed)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def book_init_(model, seed):
    """The book's initialization: chapter 4 builds GPTModel after torch.manual_seed(123) and keeps
    PyTorch's defaults. Our modules are registered in the book's order (tok_emb, pos_emb, each block's
    W_query, W_key, W_value, out_proj, ff, ..., out_head), so resetting them in that order after the
    same seed draws the very numbers the book's constructor draws."""
    import torch
    from torch import nn

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


def load_tokenizer_for(args):
    from transformers import AutoTokenizer

    from modeling_gpt_scratch.tokenization import load_tokenizer

    source = args.tokenizer_name
    if source is None and args.model_name_or_path and os.path.isdir(args.model_name_or_path):
        folder = Path(args.model_name_or_path)
        if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
            source = str(folder)
    try:
        if source is None:
            return load_tokenizer()
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    except (OSError, ValueError) as error:
        fail(f"cannot load the tokenizer ({source or 'GPT-2'}): {first_line(error)}")


# ---------------------------------------------------------------------------------------------- data
def token_streams(args, tokenizer):
    """(train ids, validation ids or None, description): every document tokenized through `datasets`
    (cached), documents joined by <|endoftext|>."""
    import datasets
    import numpy as np

    from modeling_gpt_scratch.data import resolve_text_files, the_verdict_path

    if args.train_file:
        train_files = resolve_text_files(args.train_file)
    else:
        train_files = [the_verdict_path(args.data_cache_dir)]
    val_files = resolve_text_files(args.validation_file) if args.validation_file else []
    split = 0.0 if val_files else args.validation_split_percentage / 100

    datasets.disable_progress_bars()
    data_files = {"train": [str(f) for f in train_files]}
    if val_files:
        data_files["validation"] = [str(f) for f in val_files]
    try:
        raw = datasets.load_dataset("text", data_files=data_files, sample_by="document")
    except Exception as error:  # the files were readable a moment ago; report whatever datasets says
        raise DataFailure(f"cannot read the text files: {first_line(error)}") from error

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
            num_proc=args.preprocessing_num_workers
            if args.preprocessing_num_workers and len(ds) > 1
            else None,
            remove_columns=["text"],
            load_from_cache_file=not args.overwrite_cache,
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

    train = run_map(raw["train"], split)
    train_ids = join(train["head_ids"])
    chars = sum(train["chars"])
    if val_files:
        val = run_map(raw["validation"], 0.0)
        val_ids, val_what = join(val["head_ids"]), f"{len(val_files)} validation file(s)"
    elif split > 0:
        val_ids, val_what = (
            join(train["tail_ids"]),
            f"the last {args.validation_split_percentage:g}% of each document",
        )
    else:
        val_ids, val_what = None, "none"
    names = ", ".join(f.name for f in train_files[:3]) + (
        f" and {len(train_files) - 3} more" if len(train_files) > 3 else ""
    )
    described = f"{len(train_files)} training file(s) ({names}), {chars:,} characters; validation: {val_what}"
    return train_ids, val_ids, described


class DataFailure(Exception):
    pass


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
        import torch

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


def spread(n, k):
    """k indices spread evenly over range(n) (all of them when k is 0 or >= n)."""
    if k == 0 or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


# ------------------------------------------------------------------------------------------ training
def calc_loss_batch(model, input_batch, target_batch):
    """The book's loss: cross-entropy of every position's logits against the next token."""
    import torch

    logits = model(input_ids=input_batch, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), target_batch.flatten())


def window_losses(model, input_batch, target_batch):
    """One loss per window (all windows have the same number of tokens, so their mean is the token mean)."""
    import torch

    logits = model(input_ids=input_batch, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), target_batch.flatten(), reduction="none"
    )
    return loss.view(target_batch.shape).mean(dim=1)


def main(argv=None):
    args = parse_args(argv)
    check_options(args)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        fail(f"--output_dir {output_dir} exists and is not a folder")

    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, Subset
    from transformers import AutoModelForCausalLM, get_scheduler
    from transformers.utils import logging as hf_logging

    import modeling_gpt_scratch  # noqa: F401  (registers the model with the Auto classes)
    from modeling_gpt_scratch.data import DataError, SlidingWindowDataset

    hf_logging.disable_progress_bar()
    accelerator = make_accelerator(args)
    say = accelerator.print
    world = accelerator.num_processes

    # ---- everything that can be wrong is checked before training, and before anything is written
    config = build_config(args)
    checkpoint = resume_state = None
    if args.resume_from_checkpoint:
        checkpoint = find_checkpoint(args)
        resume_state, saved_config = check_resume(args, checkpoint, config, accelerator)
        config = config if config is not None else saved_config
    context = getattr(config, "context_length", None) or getattr(config, "max_position_embeddings", None)
    block_size = args.block_size or context
    if context is not None and block_size > context:
        fail(
            f"--block_size {block_size} is above the model's context_length {context}: use --block_size {context} or "
            f"less (or --config_overrides context_length={block_size} when training from scratch)"
        )
    stride = args.stride or block_size
    if not checkpoint and output_dir.is_dir() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        fail(
            f"--output_dir {output_dir} already holds files: pass --overwrite_output_dir, "
            "--resume_from_checkpoint, or another folder"
        )
    tokenizer = load_tokenizer_for(args)
    if len(tokenizer) > config.vocab_size:
        fail(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}")
    prompt_ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    if context is not None and prompt_ids.shape[1] >= context:
        fail(f"--prompt is {prompt_ids.shape[1]} tokens, not less than the model's context_length {context}")
    max_new_tokens = (
        min(args.max_new_tokens, context - prompt_ids.shape[1]) if context else args.max_new_tokens
    )

    problem = None
    with accelerator.main_process_first():  # the first process tokenizes; the others read its cache
        try:
            train_ids, val_ids, described = token_streams(args, tokenizer)
        except (DataError, DataFailure) as error:
            problem = str(error)
    if problem:
        fail(problem)
    train_set = SlidingWindowDataset(train_ids, block_size, stride)
    need = f"one window of --block_size {block_size} needs {block_size + 1} tokens"
    if len(train_set) == 0:
        fail(
            f"the training text is {len(train_ids)} tokens: {need}; give more text or a smaller --block_size"
        )
    global_batch = args.per_device_train_batch_size * world
    if len(train_set) < global_batch:
        fail(
            f"the training text makes {len(train_set)} windows, fewer than one batch of {global_batch} "
            f"({world} process(es) x --per_device_train_batch_size {args.per_device_train_batch_size}): "
            "give more text, or lower --per_device_train_batch_size, --block_size or --stride"
        )
    val_set = None
    if val_ids is not None:
        val_set = SlidingWindowDataset(val_ids, block_size, stride)
        if len(val_set) == 0:
            fail(
                f"the validation text is {len(val_ids)} tokens: {need}; give a --validation_file, a larger "
                "--validation_split_percentage, a smaller --block_size, or --validation_split_percentage 0"
            )

    # ---- model, data loaders, optimizer, schedule
    set_seed(args.seed)  # the same initial weights in every process (FSDP shards them, DDP checks nothing)
    model = load_model(args, config, accelerator)
    n_params = sum(p.numel() for p in model.parameters())
    model_class = type(model).__name__
    set_seed(args.seed, device_specific=True)  # dropout: process 0 as a one-process run, the others their own

    sampler = EpochSampler(len(train_set), args.seed)
    loader_rng = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731  (never the global generator)
    train_loader = DataLoader(
        train_set,
        sampler=sampler,
        batch_size=args.per_device_train_batch_size,
        drop_last=True,
        generator=loader_rng(),
    )
    eval_windows = args.eval_iters * args.per_device_eval_batch_size * world
    eval_loaders = {}
    for name, dataset in (("train", train_set), ("val", val_set)):
        if dataset is not None:
            subset = Subset(dataset, spread(len(dataset), eval_windows))
            eval_loaders[name] = DataLoader(
                subset, batch_size=args.per_device_eval_batch_size, generator=loader_rng()
            )

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    prepared = accelerator.prepare(model, optimizer, train_loader, *eval_loaders.values())
    model, optimizer, train_loader = prepared[:3]
    eval_loaders = dict(zip(eval_loaders, prepared[3:], strict=True))

    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    warmup = args.num_warmup_steps
    if warmup is None:
        warmup = 0 if args.lr_scheduler_type == "constant" else int(0.2 * max_train_steps)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer.optimizer,
        num_warmup_steps=warmup,
        num_training_steps=max_train_steps,
        scheduler_specific_kwargs={"min_lr_rate": 0.1}
        if args.lr_scheduler_type == "cosine_with_min_lr"
        else None,
    )
    accelerator.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us
    register_portable_checkpoints(accelerator)

    fsdp = accelerator.distributed_type.name == "FSDP"
    say(
        f"Model: {model_class}, {n_params / 1e6:.1f}M parameters"
        f" (n_layers {getattr(config, 'n_layers', '?')}, emb_dim {getattr(config, 'emb_dim', '?')}, context_length {context})"
    )
    say(f"Data: {described}")
    say(
        f"      train {len(train_ids):,} tokens -> {len(train_set)} windows of {block_size} (stride {stride})"
        + (f"; validation {len(val_ids):,} tokens -> {len(val_set)} windows" if val_set is not None else "")
    )
    say(
        f"Run: world size {world} ({accelerator.distributed_type.name}{', FSDP2' if fsdp else ''}), device "
        f"{accelerator.device}, mixed precision {accelerator.mixed_precision}; {max_train_steps} steps of "
        f"{global_batch * args.gradient_accumulation_steps} windows ({num_epochs} epoch(s) of {steps_per_epoch} steps); "
        f"AdamW lr {args.learning_rate:g} wd {args.weight_decay:g}, {args.lr_scheduler_type} schedule, {warmup} warmup steps"
    )
    if args.mixed_precision and args.mixed_precision != accelerator.mixed_precision:
        say(
            f"note: --mixed_precision {args.mixed_precision} is not used by {accelerator.distributed_type.name} runs"
        )

    # ---- state: fresh, or from the checkpoint
    history = {"step_losses": [], "evals": []}
    global_step = tokens_seen = 0
    if checkpoint:
        try:
            accelerator.load_state(str(checkpoint))
        except Exception as error:
            fail(f"cannot load checkpoint {checkpoint}: {first_line(error)}")
        # Checkpoints are taken between optimizer steps: a new accumulation starts here, whatever the
        # counter saved by a run with other --gradient_accumulation_steps says.
        accelerator.step = 0
        global_step, tokens_seen = resume_state["global_step"], resume_state["tokens_seen"]
        history = resume_state["history"]
        for key, now in (("steps_per_epoch", steps_per_epoch), ("world_size", world), ("seed", args.seed)):
            if resume_state.get(key) != now:
                say(
                    f"note: {key} was {resume_state.get(key)} in the checkpoint, {now} now: the run will not repeat exactly"
                )
        say(f"Resumed from {checkpoint} at step {global_step} ({tokens_seen:,} tokens seen)")
    elif args.overwrite_output_dir and accelerator.is_main_process:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    if args.report_to:
        run_config = {
            k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in vars(args).items()
        }
        accelerator.init_trackers("pretrain", config=run_config)

    run = Run(
        args=args,
        accelerator=accelerator,
        model=model,
        tokenizer=tokenizer,
        eval_loaders=eval_loaders,
        prompt_ids=prompt_ids,
        max_new_tokens=max_new_tokens,
        history=history,
        output_dir=output_dir,
        fsdp=fsdp,
        world=world,
        steps_per_epoch=steps_per_epoch,
        block_size=block_size,
        stride=stride,
    )

    # ---- the loop
    from tqdm.auto import tqdm

    stop = StopRequest()
    bar = tqdm(
        total=max_train_steps,
        initial=global_step,
        disable=not accelerator.is_local_main_process,
        unit="step",
        dynamic_ncols=True,
    )
    start_time, start_tokens = time.perf_counter(), tokens_seen
    epoch = global_step // steps_per_epoch
    stopped_by = None  # "--stop_after_steps" or a signal number
    while global_step < max_train_steps and stopped_by is None:
        model.train()
        sampler.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        skip = (global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps  # resumed mid-epoch
        batches = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        loss_sum, micro = torch.zeros((), device=accelerator.device), 0
        for input_batch, target_batch in batches:
            with accelerator.accumulate(model):
                loss = calc_loss_batch(model, input_batch, target_batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()  # Accelerate's optimizer steps only at the last batch of an accumulation
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            micro += 1
            if not accelerator.sync_gradients:
                continue

            # ---- one optimizer step done
            if not accelerator.optimizer_step_was_skipped:  # fp16 skips steps whose gradients overflowed
                scheduler.step()
            global_step += 1
            tokens_seen += micro * input_batch.shape[0] * block_size * world
            step_loss = accelerator.reduce(
                loss_sum / micro, reduction="mean"
            ).item()  # the global batch's loss
            loss_sum.zero_()
            micro = 0
            history["step_losses"].append(step_loss)
            speed = (tokens_seen - start_tokens) / max(time.perf_counter() - start_time, 1e-9)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{step_loss:.3f}", tok_s=f"{speed:,.0f}")
            accelerator.log(
                {
                    "train/loss": step_loss,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/tokens_seen": tokens_seen,
                },
                step=global_step,
            )
            if (global_step - 1) % args.eval_steps == 0 or global_step == max_train_steps:
                run.evaluate(global_step, epoch, tokens_seen, bar)
            saved = None
            every = args.checkpointing_steps
            if (every == "epoch" and global_step % steps_per_epoch == 0) or (
                every not in (None, "epoch") and global_step % int(every) == 0
            ):
                saved = run.save_checkpoint(global_step, tokens_seen)
            if global_step >= max_train_steps:
                break
            if stop.signal is not None:
                accelerator.set_trigger()
            signalled = accelerator.check_trigger()  # all processes agree, whichever got the signal
            if signalled or global_step == args.stop_after_steps:
                saved = saved or run.save_checkpoint(global_step, tokens_seen)
                stopped_by = (stop.signal or signal.SIGTERM) if signalled else "--stop_after_steps"
                reason = stopped_by if isinstance(stopped_by, str) else signal.Signals(stopped_by).name
                bar.close()
                say(f"Stopped by {reason} after step {global_step}: saved {saved}")
                say(f"Go on with: --resume_from_checkpoint {saved}")
                break
        epoch += 1
    bar.close()
    stop.restore()
    train_time = time.perf_counter() - start_time
    history["train_runtime_s"] = history.get("train_runtime_s", 0.0) + train_time
    history["tokens_per_second"] = (tokens_seen - start_tokens) / max(train_time, 1e-9)

    if stopped_by is not None:
        run.write_log(global_step, tokens_seen, finished=False)
        accelerator.end_training()
        finish(0 if stopped_by == "--stop_after_steps" else 128 + int(stopped_by))

    # ---- the end: model and tokenizer with save_pretrained, the book's plot, the log
    if fsdp:  # every process takes part while the shards are gathered into one full state dict
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:  # into a plain model (the FSDP one is another class)
            with torch.device("meta"):
                plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(state_dict, assign=True, strict=False)
            plain.tie_weights()  # a tied output head may come without its own key
            missing = [n for n, t in plain.state_dict().items() if t.is_meta]
            if missing:
                raise RuntimeError(f"the gathered FSDP state dict lacks {missing}")
    else:
        plain = accelerator.unwrap_model(model, keep_torch_compile=False)  # no DDP, no _orig_mod. prefix
    if accelerator.is_main_process:
        plain.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    run.write_log(global_step, tokens_seen, finished=True)
    accelerator.wait_for_everyone()
    last = history["evals"][-1] if history["evals"] else {}
    if args.push_to_hub and accelerator.is_main_process:
        push_run(args, output_dir, last, num_parameters=plain.num_parameters())
    say(
        f"Done: {global_step} steps, {tokens_seen:,} tokens in {history['train_runtime_s']:.1f} s "
        f"({history['tokens_per_second']:,.0f} tokens/s); train loss {last.get('train_loss', float('nan')):.3f}"
        + (f", val loss {last['val_loss']:.3f}" if last.get("val_loss") is not None else "")
    )
    say(
        f"Saved model and tokenizer to {output_dir}/ (AutoModelForCausalLM.from_pretrained loads it), "
        f"and {PLOT_FILE}, {LOG_FILE}"
    )
    accelerator.end_training()
    finish(0)


def push_run(args, output_dir, last_eval, num_parameters):
    """The end of a run with --push_to_hub: the saved folder, without checkpoints, in one commit."""
    from modeling_gpt_scratch.hub import HubError, hub_id_or_none, push_folder

    metrics = {}
    if last_eval.get("val_loss") is not None:
        metrics = {
            "validation loss": last_eval["val_loss"],
            "validation perplexity": math.exp(last_eval["val_loss"]),
        }
    try:
        info = push_folder(
            output_dir,
            args.hub_model_id,
            token=args.hub_token,
            commit_message="End of training",
            base_model=hub_id_or_none(args.model_name_or_path),
            datasets=None if args.train_file else ["the-verdict"],
            metrics=metrics,
            ignore_patterns=("checkpoints/*",),
            num_parameters=num_parameters,
        )
    except HubError as e:
        fail(
            f"the model is saved in {output_dir}, but {e} (push it later: python -m modeling_gpt_scratch.hub push "
            f"{output_dir} {args.hub_model_id})"
        )
    print(f"Pushed {output_dir} -> {info.commit_url}", flush=True)


class StopRequest:
    """Ctrl-C or SIGTERM ask for a stop at the end of the current step (a checkpoint first); a second
    one stops at once."""

    def __init__(self):
        self.signal = None
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread
                pass

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

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def register_portable_checkpoints(accelerator):
    """save_state stores the model as the training wrapper sees it: keys carry DDP's `module.` and
    torch.compile's `_orig_mod.`, so a checkpoint would resume only under the same wrappers. These
    hooks store and load the plain model's weights instead (FSDP keeps its own sharded format)."""
    import logging

    from safetensors.torch import load_model

    # A tied output head is stored once; Accelerate says so at every save, and it is fine.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)

    def save_hook(models, weights, output_dir):
        if accelerator.distributed_type.name != "FSDP":
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


class Run:
    """Evaluation, samples, checkpoints and the log of one training run."""

    def __init__(self, **parts):
        self.__dict__.update(parts)  # args, accelerator, model, tokenizer, eval_loaders, history, ...

    def evaluate(self, global_step, epoch, tokens_seen, bar):
        """The book's evaluate_model and generate_and_print_sample: losses on a fixed set of training and
        validation windows (eval mode, no dropout), then a greedy continuation of the prompt."""
        import torch

        accelerator, model = self.accelerator, self.model
        model.eval()
        losses = {}
        with torch.no_grad():
            for name, loader in self.eval_loaders.items():
                per_window = [accelerator.gather_for_metrics(window_losses(model, x, y)) for x, y in loader]
                losses[name] = torch.cat(per_window).mean().item()
            # Every process generates (FSDP needs them all for each forward); greedy, so they agree.
            generator = accelerator.unwrap_model(model, keep_torch_compile=False)
            ids = self.prompt_ids.to(accelerator.device)
            with accelerator.autocast():
                out = generator.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
        model.train()
        sample = self.tokenizer.decode(out[0]).replace("\n", " ")  # printed on one line, as in the book
        record = {
            "step": global_step,
            "epoch": epoch + 1,
            "tokens_seen": tokens_seen,
            "train_loss": losses.get("train"),
            "val_loss": losses.get("val"),
            "sample": sample,
        }
        self.history["evals"].append(record)
        line = f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {losses['train']:.3f}"
        if "val" in losses:
            line += f", Val loss {losses['val']:.3f}"
        if accelerator.is_main_process:
            bar.write(line)
            bar.write(f"  {sample}")
        accelerator.log({f"eval/{k}_loss": v for k, v in losses.items()}, step=global_step)

    def save_checkpoint(self, global_step, tokens_seen):
        accelerator = self.accelerator
        path = self.output_dir / "checkpoints" / f"step_{global_step}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            accelerator.unwrap_model(self.model, keep_torch_compile=False).config.save_pretrained(path)
            state = {
                "global_step": global_step,
                "tokens_seen": tokens_seen,
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.world,
                "seed": self.args.seed,
                "block_size": self.block_size,
                "stride": self.stride,
                "fsdp": self.fsdp,
                "history": self.history,
            }
            (path / STATE_FILE).write_text(json.dumps(state, indent=1))  # last: the checkpoint is complete
            self.prune_checkpoints()
        accelerator.wait_for_everyone()
        return path

    def prune_checkpoints(self):
        limit = self.args.checkpoints_total_limit
        root = self.output_dir / "checkpoints"
        if not limit or not root.is_dir():
            return
        done = sorted(
            (p for p in root.iterdir() if (p / STATE_FILE).is_file()),
            key=lambda p: json.loads((p / STATE_FILE).read_text())["global_step"],
        )
        for old in done[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def write_log(self, global_step, tokens_seen, finished):
        if not self.accelerator.is_main_process:
            return
        log = {
            "world_size": self.world,
            "distributed_type": self.accelerator.distributed_type.name,
            "fsdp2": self.fsdp,
            "mixed_precision": self.accelerator.mixed_precision,
            "finished": finished,
            "global_step": global_step,
            "tokens_seen": tokens_seen,
            "block_size": self.block_size,
            "stride": self.stride,
            **self.history,
        }
        (self.output_dir / LOG_FILE).write_text(json.dumps(log, indent=1))
        plot_losses(self.history["evals"], self.output_dir / PLOT_FILE, self.steps_per_epoch)


def plot_losses(evals, path, steps_per_epoch):
    """The book's plot_losses: training and validation loss against epochs, tokens seen on the top axis."""
    if not evals:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs_seen = [e["step"] / steps_per_epoch for e in evals]
    tokens_seen = [e["tokens_seen"] for e in evals]
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, [e["train_loss"] for e in evals], label="Training loss")
    if evals[0].get("val_loss") is not None:
        ax1.plot(epochs_seen, [e["val_loss"] for e in evals], linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax1.twiny()  # the same curve against tokens seen, drawn invisibly to set the top axis
    ax2.plot(tokens_seen, [e["train_loss"] for e in evals], alpha=0)
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # an untrained model emits any character
    try:
        main()
    except KeyboardInterrupt:  # before training starts, or a second Ctrl-C
        print(file=sys.stderr)
        finish(130)
