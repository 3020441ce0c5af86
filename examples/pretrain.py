#!/usr/bin/env python
"""Pretrain the book's GPT on plain text (chapter 5 and appendix D) with Accelerate, the same script on
a laptop CPU, one GPU, or many GPUs and machines.

    python examples/pretrain.py --config_name tiny --output_dir out/pretrain        # The Verdict, about 2 minutes
    python examples/pretrain.py --config_name GPT_CONFIG_124M --config_overrides context_length=256 \\
        --book_exact --output_dir out/book-ch05          # chapter 5 as printed: the book's losses, line for line
    accelerate launch --config_file examples/accelerate_configs/ddp.yaml examples/pretrain.py ...
    accelerate launch --config_file examples/accelerate_configs/fsdp.yaml examples/pretrain.py ...
    torchrun --nproc_per_node 4 examples/pretrain.py ...

Data: text files, folders or glob patterns (--train_file, --validation_file), by default the book's
the-verdict.txt. They are tokenized with GPT-2's tokenizer through `datasets` (cached), each document is
split 90/10 on characters as in the book when no validation file is given, and the token stream is cut
into the book's sliding windows (--block_size, --stride; the target is the window moved one token on).

Defaults follow what is trained: the book's chapter 5 settings (lr 4e-4, 10 epochs, whole-context
windows, an evaluation every 5 steps, 50-token samples), and for the small `tiny` preset the settings
that make it learn in about 2 minutes on a laptop (lr 3e-3, 15 epochs, 128-token windows, every 45 steps, 30 tokens;
modeling_gpt_scratch.training.RECIPES). Any option given on the command line wins.

Training: AdamW, warmup then cosine decay, gradient clipping (appendix D; --lr_scheduler_type
book_appendix_d is the book's own: from --initial_lr up, cosine down to --min_lr, clipping only after
warm-up), gradient accumulation, mixed precision, torch.compile, gradient checkpointing. Every
--eval_steps steps it prints the book's "Train loss / Val loss" line and a greedy sample of --prompt;
at the end it writes model and tokenizer (the folder is a whole model or none), loss-plot.png (the
book's figure) and training_log.json.

Checkpoints (accelerator.save_state into OUTPUT_DIR/checkpoints/step_N, each complete or invisible) hold
everything needed to go on exactly: --resume_from_checkpoint DIR (or "latest") gives the losses an
uninterrupted run gives. Ctrl-C or SIGTERM saves a checkpoint at the end of the current step, then stops.
Only one run writes into an output folder at a time; a loss that is not a number stops the run.

--book_exact runs the book's chapter 5 loop and randomness (modeling_gpt_scratch/book_pretraining.py:
its seeded weights, then its shuffled DataLoader, evaluations on new passes over the loaders, printed
with steps from 0, a greedy sample per epoch); on a CPU it prints the book's numbers. It refuses the
options that would change them (more processes, accumulation, mixed precision, a schedule, resuming).
"""

import math
import shutil
import sys
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed
from transformers.utils import logging as hf_logging

from modeling_gpt_scratch import training
from modeling_gpt_scratch.cli import (
    LOCK_FILE,
    ArgumentParser,
    CLIError,
    check_number,
    check_output_dir,
    exit_process,
    lock_output_dir,
    run_cli,
)
from modeling_gpt_scratch.hub import check_push_target
from modeling_gpt_scratch.resolve import check_vocab_fits, load_config, load_tokenizer_for
from modeling_gpt_scratch.training import calc_loss_batch, evaluate_model, generate_sample

BOOK_PROMPT = "Every effort moves you"
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr", "book_appendix_d")


def parse_args(argv=None):
    p = ArgumentParser(prog="pretrain.py", description=__doc__.split("\n\n")[0])
    d = p.add_argument_group("data")
    d.add_argument("--train_file", nargs="+", help="text files, folders or globs (default: the-verdict.txt)")
    d.add_argument("--validation_file", nargs="+", help="the same for validation (default: a split)")
    d.add_argument(
        "--validation_split_percentage",
        type=float,
        default=10.0,
        help="without --validation_file: the last PCT%% of each document validates (default: the book's 10)",
    )
    d.add_argument(
        "--data_cache_dir",
        help="where the-verdict.txt is downloaded to or found (default: $GPT_SCRATCH_CACHE)",
    )
    d.add_argument("--block_size", type=int, help="tokens per window (default: context_length; 128 for tiny)")
    d.add_argument("--stride", type=int, help="tokens between window starts (default: --block_size)")
    d.add_argument("--preprocessing_num_workers", type=int, help="processes for tokenization")
    d.add_argument(
        "--overwrite_cache", action="store_true", help="tokenize again, ignoring the datasets cache"
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--config_name",
        help="from scratch: a preset (tiny, GPT_CONFIG_124M, gpt2-small ... gpt2-xl), "
        "a config JSON file or a folder with config.json",
    )
    m.add_argument(
        "--config_overrides", help='e.g. "context_length=256,drop_rate=0.0" (the book trains at 256)'
    )
    m.add_argument(
        "--init",
        choices=("gpt2", "book"),
        help="from scratch: GPT-2's N(0, 0.02) (default) or the book's (PyTorch's "
        "defaults after torch.manual_seed(--seed), in its order; the default with --book_exact)",
    )
    m.add_argument(
        "--model_name_or_path", help="continue training a saved or converted model (folder or Hub id)"
    )
    m.add_argument("--tokenizer_name", help="default: the model folder's tokenizer, else GPT-2's")
    t = p.add_argument_group("training")
    t.add_argument("--output_dir", default="out/pretrain", help="model, plot, log and checkpoints go here")
    t.add_argument(
        "--book_exact",
        action="store_true",
        help="the book's chapter 5 loop and randomness: its printed losses",
    )
    t.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="train into a folder that holds files (its old checkpoints are deleted)",
    )
    t.add_argument(
        "--per_device_train_batch_size", type=int, default=2, help="windows per step and process (2)"
    )
    t.add_argument("--per_device_eval_batch_size", type=int, help="default: --per_device_train_batch_size")
    t.add_argument(
        "--learning_rate", type=float, help="peak learning rate (default: the book's 4e-4; 3e-3 for tiny)"
    )
    t.add_argument(
        "--weight_decay", type=float, default=0.1, help="AdamW's, on all weights as in the book (0.1)"
    )
    t.add_argument(
        "--num_train_epochs", type=int, help="passes over the windows (default: the book's 10; 15 for tiny)"
    )
    t.add_argument("--max_train_steps", type=int, help="optimizer steps in all; overrides --num_train_epochs")
    t.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step (1)"
    )
    t.add_argument(
        "--lr_scheduler_type",
        choices=SCHEDULERS,
        help="after the warmup (default: cosine; constant with --book_exact, as chapter 5; "
        "book_appendix_d: appendix D's train_model)",
    )
    t.add_argument("--initial_lr", type=float, help="book_appendix_d: the warmup's start (the book's 3e-5)")
    t.add_argument("--min_lr", type=float, help="book_appendix_d: the cosine's end (the book's 1e-6)")
    t.add_argument(
        "--num_warmup_steps", type=int, help="linear warmup (default: 20%% of the steps; 0 for constant)"
    )
    t.add_argument(
        "--max_grad_norm",
        type=float,
        help="clip the gradient norm (appendix D: 1.0, the default; 0: never, the default with --book_exact)",
    )
    t.add_argument("--seed", type=int, default=123, help="the book's torch.manual_seed(123)")
    t.add_argument(
        "--mixed_precision", choices=("no", "bf16", "fp16"), help="default: Accelerate's config, else no"
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
        help="evaluate after step 1 and every N (default: the book's 5; 45 for tiny)",
    )
    e.add_argument("--eval_iters", type=int, default=5, help="batches per evaluation (the book's 5); 0: all")
    e.add_argument("--prompt", default=BOOK_PROMPT, help="each evaluation's greedy sample continues this")
    e.add_argument(
        "--max_new_tokens", type=int, help="tokens per sample (default: the book's 50; 30 for tiny)"
    )
    e.add_argument("--checkpointing_steps", help='save a checkpoint every N steps, or "epoch"')
    e.add_argument("--checkpoints_total_limit", type=int, help="keep only the newest N checkpoints")
    e.add_argument("--resume_from_checkpoint", help='a checkpoint folder, or "latest" (in --output_dir)')
    e.add_argument("--stop_after_steps", type=int, help="checkpoint and stop after N steps, as Ctrl-C would")
    e.add_argument(
        "--report_to", default="none", help="tracker: none, tensorboard, wandb, ... (as in Accelerate)"
    )
    h = p.add_argument_group("Hugging Face Hub")
    h.add_argument("--push_to_hub", action="store_true", help="at the end, push the folder with a model card")
    h.add_argument("--hub_model_id", help="NAME or OWNER/NAME (default: the --output_dir folder's name)")
    h.add_argument("--hub_token", help="default: HF_TOKEN, or the token `hf auth login` saved")
    args = p.parse_args(argv)
    args.recipe = training.recipe_for(args.config_name)
    args.defaulted = [key for key in args.recipe if getattr(args, key) is None]  # not said: the recipe's
    for key in args.defaulted:
        if key != "block_size":  # that one depends on the model's context
            setattr(args, key, args.recipe[key])
    book = args.book_exact
    args.init = args.init or ("book" if book and not args.model_name_or_path else "gpt2")
    args.lr_scheduler_type = args.lr_scheduler_type or ("constant" if book else "cosine")
    args.max_grad_norm = (0.0 if book else 1.0) if args.max_grad_norm is None else args.max_grad_norm
    return args


def check_options(args):
    """Mistakes in the options alone, before anything slow."""
    if args.init == "book" and args.model_name_or_path:
        raise CLIError(
            "--init book is for training from scratch (--config_name); --model_name_or_path brings its own weights"
        )
    if args.config_name and args.model_name_or_path:
        raise CLIError(
            "pass --config_name (train from scratch) or --model_name_or_path (continue a model), not both"
        )
    if not (args.config_name or args.model_name_or_path or args.resume_from_checkpoint):
        raise CLIError(
            "say which model to train: --config_name tiny (or another preset / a config.json) or --model_name_or_path FOLDER"
        )
    at_least_1 = "per_device_train_batch_size per_device_eval_batch_size num_train_epochs max_train_steps "
    at_least_1 += (
        "gradient_accumulation_steps eval_steps max_new_tokens block_size stride checkpoints_total_limit"
    )
    for name in (*at_least_1.split(), "stop_after_steps"):
        check_number(f"--{name}", getattr(args, name), at_least=1)
    if args.lr_scheduler_type != "book_appendix_d" and (args.initial_lr, args.min_lr) != (None, None):
        raise CLIError(
            "--initial_lr and --min_lr set --lr_scheduler_type book_appendix_d: add it, or drop them"
        )
    names = (
        "eval_iters num_warmup_steps preprocessing_num_workers weight_decay max_grad_norm initial_lr min_lr"
    )
    for name in names.split():
        check_number(f"--{name}", getattr(args, name), at_least=0)
    check_number("--learning_rate", args.learning_rate, above=0)
    check_number("--validation_split_percentage", args.validation_split_percentage, at_least=0, below=100)
    if not args.prompt:
        raise CLIError("--prompt is empty")
    every = args.checkpointing_steps
    if every is not None and every != "epoch" and not (every.isdigit() and int(every) >= 1):
        raise CLIError(f'--checkpointing_steps must be a number of steps or "epoch", got {every!r}')
    args.per_device_eval_batch_size = args.per_device_eval_batch_size or args.per_device_train_batch_size
    if args.push_to_hub:  # before training, not after it
        args.hub_model_id = check_push_target(args.hub_model_id, args.output_dir)
    args.report_to = training.trackers(args.report_to)
    if args.book_exact:
        training.check_book_exact(args)


def main(argv=None):
    args = parse_args(argv)
    check_options(args)
    hf_logging.disable_progress_bar()
    output_dir = Path(args.output_dir)
    if not args.resume_from_checkpoint:
        check_output_dir(
            output_dir, args.overwrite_output_dir, inputs=[args.model_name_or_path], ignore=[LOCK_FILE]
        )
    config = None
    if args.config_name or args.model_name_or_path:
        config = load_config(args.config_name, args.model_name_or_path, args.config_overrides)
    accelerator = training.make_accelerator(
        cpu=args.cpu,
        project_dir=args.output_dir,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to or None,
        dynamo_backend="inductor" if args.torch_compile else None,
    )
    say, world = accelerator.print, accelerator.num_processes
    if args.book_exact:
        training.check_book_exact(args, world, accelerator.mixed_precision)
    fsdp = accelerator.distributed_type == DistributedType.FSDP

    # ---- everything that can be wrong is checked before training, and before anything is written
    checkpoint = resume = None
    if args.resume_from_checkpoint:
        checkpoint = training.find_checkpoint(args.resume_from_checkpoint, output_dir, say)
        resume, saved_config = training.read_checkpoint(checkpoint, config, fsdp)
        config = config or saved_config
        for key in args.defaulted:  # what the command line does not say is what the checkpoint's run used
            setattr(args, key, resume.get("options", {}).get(key, getattr(args, key)))
    context = config.max_position_embeddings
    block_size = args.block_size or min(args.recipe["block_size"] or context, context)
    if block_size > context:
        raise CLIError(
            f"--block_size {block_size} is above the model's context_length {context}: use --block_size "
            f"{context} or less (or --config_overrides context_length={block_size} when training from scratch)"
        )
    stride = args.stride or block_size
    tokenizer = load_tokenizer_for(args.tokenizer_name, args.model_name_or_path)
    check_vocab_fits(tokenizer, config)
    prompt_ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    if prompt_ids.shape[1] >= context:
        raise CLIError(
            f"--prompt is {prompt_ids.shape[1]} tokens, not less than the context_length {context}"
        )
    max_new_tokens = min(args.max_new_tokens, context - prompt_ids.shape[1])
    with accelerator.main_process_first():  # the first process tokenizes; the others read its cache
        train_ids, val_ids, described = training.token_streams(
            tokenizer,
            args.train_file,
            args.validation_file,
            args.validation_split_percentage,
            cache_dir=args.data_cache_dir,
            num_proc=args.preprocessing_num_workers,
            overwrite_cache=args.overwrite_cache,
        )
    batch = args.per_device_train_batch_size
    train_set, val_set = training.window_datasets(train_ids, val_ids, block_size, stride, batch, world)
    lock = lock_output_dir(output_dir, "pretrain.py") if accelerator.is_main_process else None  # noqa: F841
    if args.book_exact:  # the book's own loop and randomness, then the same end
        run = training.run_book_exact(args, accelerator, config, tokenizer, train_set, val_set, prompt_ids)
        return training.finish_run(args, accelerator, *run)

    # ---- model, data loaders, optimizer, schedule
    set_seed(args.seed)  # the same initial weights in every process (FSDP shards them, DDP checks nothing)
    source = None if checkpoint else args.model_name_or_path  # a checkpoint brings its own weights
    model = training.new_model(
        config, source, init=args.init, seed=args.seed, gradient_checkpointing=args.gradient_checkpointing
    )
    n_params, model_class = sum(p.numel() for p in model.parameters()), type(model).__name__
    set_seed(args.seed, device_specific=True)  # dropout: process 0 as a one-process run, the others their own

    eval_windows = args.eval_iters * args.per_device_eval_batch_size * world
    sampler, train_loader, eval_loaders = training.data_loaders(
        train_set, val_set, batch, args.per_device_eval_batch_size, eval_windows, args.seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, train_loader, *evals = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders.values()
    )
    eval_loaders = dict(zip(eval_loaders, evals, strict=True))
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    rates = (args.num_warmup_steps, max_train_steps, args.initial_lr, args.min_lr)
    scheduler, warmup, clips = training.make_scheduler(args.lr_scheduler_type, optimizer.optimizer, *rates)
    accelerator.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us
    training.register_portable_checkpoints(accelerator)

    say(
        f"Model: {model_class}, {n_params / 1e6:.1f}M parameters (n_layers {getattr(config, 'n_layers', '?')}, "
        f"emb_dim {getattr(config, 'emb_dim', '?')}, context_length {context})"
    )
    say(f"Data: {described}")
    say(
        f"      train {len(train_ids):,} tokens -> {len(train_set)} windows of {block_size} (stride {stride})"
        + (f"; validation {len(val_ids):,} tokens -> {len(val_set)} windows" if val_set is not None else "")
    )
    say(
        f"Run: world size {world} ({accelerator.distributed_type.name}{', FSDP2' if fsdp else ''}), device "
        f"{accelerator.device}, mixed precision {accelerator.mixed_precision}; {max_train_steps} steps of "
        f"{batch * world * args.gradient_accumulation_steps} windows ({math.ceil(max_train_steps / steps_per_epoch)} "
        f"epoch(s) of {steps_per_epoch} steps); AdamW lr {args.learning_rate:g} wd {args.weight_decay:g}, "
        f"{args.lr_scheduler_type} schedule, {warmup} warmup steps"
    )
    if args.mixed_precision and args.mixed_precision != accelerator.mixed_precision:
        say(
            f"note: --mixed_precision {args.mixed_precision} is not used by {accelerator.distributed_type.name} runs"
        )

    # ---- state: fresh, or from the checkpoint
    done = dict(global_step=0, tokens_seen=0, history=None)
    facts = {
        "steps_per_epoch": steps_per_epoch,
        "world_size": world,
        "seed": args.seed,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
    }
    if checkpoint:
        training.load_checkpoint(accelerator, checkpoint, resume, facts, say)
        done = {key: resume[key] for key in done}
    elif args.overwrite_output_dir and accelerator.is_main_process:
        shutil.rmtree(output_dir / training.CHECKPOINTS, ignore_errors=True)
    log_facts = dict(
        world_size=world,
        distributed_type=accelerator.distributed_type.name,
        fsdp2=fsdp,
        mixed_precision=accelerator.mixed_precision,
        block_size=block_size,
        stride=stride,
    )
    if args.report_to:
        accelerator.init_trackers("pretrain", config={k: str(v) for k, v in vars(args).items()})

    def save_checkpoint():
        options = {key: getattr(args, key) for key in args.recipe} | {"block_size": block_size}
        state = dict(global_step=run.global_step, tokens_seen=run.tokens_seen, **facts, options=options)
        state |= dict(block_size=block_size, stride=stride, fsdp=fsdp, history=run.history)
        limit = args.checkpoints_total_limit
        return training.save_checkpoint(accelerator, model, output_dir, run.global_step, state, limit)

    # ---- the loop: the book's train_model_simple, with Accelerate's calls in place
    run = training.Progress(accelerator, max_train_steps, **done)
    epoch = run.global_step // steps_per_epoch
    with training.StopRequest() as stop:
        while run.global_step < max_train_steps and stop.reason is None:
            model.train()
            sampler.set_epoch(epoch)
            train_loader.set_epoch(epoch)
            skip = (run.global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps  # resumed
            batches = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
            loss_sum, micro = torch.zeros((), device=accelerator.device), 0
            for input_batch, target_batch in batches:
                with accelerator.accumulate(model):
                    loss = calc_loss_batch(model, input_batch, target_batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0 and clips(run.global_step):
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()  # Accelerate's optimizer steps only at the last batch of an accumulation
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                micro += 1
                if not accelerator.sync_gradients:
                    continue

                # ---- one optimizer step done
                lr = scheduler.get_last_lr()[0]  # the rate this step used
                if not accelerator.optimizer_step_was_skipped:  # fp16 skips steps whose gradients overflowed
                    scheduler.step()
                run.step(loss_sum / micro, lr, micro * input_batch.shape[0] * block_size * world, epoch)
                loss_sum.zero_()
                micro = 0
                if (run.global_step - 1) % args.eval_steps == 0 or run.global_step == max_train_steps:
                    losses = evaluate_model(accelerator, model, eval_loaders)
                    sample = generate_sample(accelerator, model, tokenizer, prompt_ids, max_new_tokens)
                    run.evaluated(epoch, losses, sample)
                due = training.checkpoint_due(args.checkpointing_steps, run.global_step, steps_per_epoch)
                saved = save_checkpoint() if due else None
                if run.global_step >= max_train_steps:
                    break
                if stop.stops(accelerator, run.global_step, args.stop_after_steps):
                    saved = saved or save_checkpoint()
                    run.bar.close()
                    say(f"Stopped by {stop.reason} after step {run.global_step}: saved {saved}")
                    say(f"Go on with: --resume_from_checkpoint {saved}")
                    break
            epoch += 1
    run.close()
    log = dict(log_facts, global_step=run.global_step, tokens_seen=run.tokens_seen)
    if stop.reason is not None:
        if accelerator.is_main_process:
            training.write_log(output_dir, run.history, steps_per_epoch, **log, finished=False)
        accelerator.end_training()
        return stop.exit_status
    return training.finish_run(args, accelerator, model, config, tokenizer, run.history, steps_per_epoch, log)


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # an untrained model emits any character
    exit_process(run_cli(main))
