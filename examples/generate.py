#!/usr/bin/env python
"""Generate text with a saved model folder, streaming the tokens to the terminal as they come.

The folder is anything `save_pretrained` wrote: this project's GPT (`make demo` pretrains one into
out/pretrain), or a converted GPT-2 checkpoint. The text goes to stdout, the prompt first, as the book
prints it; notes and errors go to stderr.

    python examples/generate.py out/pretrain --prompt "Every effort moves you"
    python examples/generate.py out/pretrain --max_new_tokens 15 --temperature 1.4 --top_k 25 --seed 123
    python examples/generate.py out/pretrain --num_beams 4 --num_return_sequences 2

Decoding is greedy unless you ask for sampling, with --do_sample or, as in the book's
`generate(..., temperature=1.4, top_k=25)`, with a --temperature above 0 (--temperature 0 is greedy).
"""

import os
import sys

import torch
from transformers import AutoModelForCausalLM, TextStreamer, set_seed
from transformers.utils import logging

from modeling_gpt_scratch.cli import ArgumentParser, CLIError, check_number, run_cli
from modeling_gpt_scratch.resolve import describe, has_tokenizer, load_pretrained, load_tokenizer_for

BOOK_PROMPT = "Every effort moves you"
DTYPES = ("float32", "bfloat16", "float16")


def note(message):
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Long prompts: by default a prompt that does not fit in the model's context together with "
        "--max_new_tokens is an error that gives both numbers; with --truncate_prompt its oldest tokens are "
        "dropped instead (from the left, as the book's generate() crops to context_size), with a warning.",
    )
    p.add_argument("model_dir", help="folder written by save_pretrained (config.json and weights)")
    p.add_argument(
        "--prompt",
        "--start_context",
        dest="prompt",
        default=BOOK_PROMPT,
        help=f"text to continue (default: the book's {BOOK_PROMPT!r}); --start_context is the book's name",
    )
    p.add_argument("--max_new_tokens", type=int, default=50, help="tokens to generate (default: 50)")
    p.add_argument(
        "--do_sample",
        action="store_true",
        help="sample the next token instead of taking the most likely one (greedy, the default)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        help="softmax temperature; above 0 it turns sampling on, as in the book; 0 means greedy",
    )
    p.add_argument(
        "--top_k",
        type=int,
        help="sample only among the k most likely tokens (transformers' default when sampling: 50; "
        "0 = the whole vocabulary, the book's top_k=None)",
    )
    p.add_argument(
        "--top_p", type=float, help="sample only among the most likely tokens whose probabilities add up to p"
    )
    p.add_argument(
        "--num_beams", type=int, default=1, help="beam search with this many beams (default: 1, no beams)"
    )
    p.add_argument(
        "--num_return_sequences", type=int, default=1, help="how many continuations to return (default: 1)"
    )
    p.add_argument("--repetition_penalty", type=float, help="above 1 discourages repeating tokens (1 = none)")
    p.add_argument(
        "--eos_token_id",
        "--eos_id",
        dest="eos_token_id",
        type=int,
        help="stop at this token (default: the model's, <|endoftext|> for GPT-2); --eos_id is the book's name",
    )
    p.add_argument("--seed", type=int, help="random seed, for sampling that gives the same text every run")
    p.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1, mps ... (default: auto = cuda if available, else cpu)",
    )
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype (default: float32)")
    p.add_argument(
        "--truncate_prompt",
        action="store_true",
        help="drop the prompt's oldest tokens when it does not fit in the context (default: an error)",
    )
    p.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="load the model with the code saved in its folder (for models of other projects)",
    )
    return p.parse_args(argv)


def check_options(args):
    """Catch impossible combinations before loading anything; turns sampling on for a temperature > 0."""
    if not os.path.isdir(args.model_dir):
        raise CLIError(f"model folder {args.model_dir!r} does not exist")
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        raise CLIError(
            f"{args.model_dir!r} is not a model folder: it has no config.json (write one with save_pretrained)"
        )
    if not args.prompt:
        raise CLIError("--prompt is empty")
    check_number("--max_new_tokens", args.max_new_tokens, at_least=1)
    check_number("--temperature", args.temperature, at_least=0)
    check_number("--top_k", args.top_k, at_least=0)
    check_number("--top_p", args.top_p, above=0, at_most=1)
    check_number("--repetition_penalty", args.repetition_penalty, above=0)
    check_number("--eos_token_id", args.eos_token_id, at_least=0)
    check_number("--num_beams", args.num_beams, at_least=1)
    check_number("--num_return_sequences", args.num_return_sequences, at_least=1)
    if args.temperature == 0 and args.do_sample:
        raise CLIError(
            "--temperature 0 means greedy decoding (as in the book): drop --do_sample or give a temperature > 0"
        )
    if args.temperature:
        args.do_sample = True  # the book samples whenever temperature > 0
    for name in ("top_k", "top_p"):
        if getattr(args, name) is not None and not args.do_sample:
            raise CLIError(f"--{name} only acts when sampling: add --do_sample or a --temperature above 0")
    if not args.do_sample and args.num_return_sequences > args.num_beams:
        n = args.num_beams
        what = "greedy decoding gives only 1" if n == 1 else f"{n} beams give at most {n}"
        raise CLIError(
            f"--num_return_sequences {args.num_return_sequences}, but {what} different sequences: "
            "add --do_sample, or raise --num_beams"
        )


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name!r} is not a device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: PyTorch sees no CUDA GPU here (use --device cpu or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available here (use --device cpu or auto)")
    return device


def load(args, device):
    """The model and its tokenizer (the folder's, else GPT-2's with a note); any failure is one line."""
    logging.disable_progress_bar()
    dtype = getattr(torch, args.dtype)
    model = load_pretrained(
        AutoModelForCausalLM, args.model_dir, dtype=dtype, trust_remote_code=args.trust_remote_code
    )
    model.to(device).eval()
    if not has_tokenizer(args.model_dir):
        note(
            f"note: {args.model_dir} has no tokenizer files; using GPT-2's tokenizer (openai-community/gpt2)"
        )
    tokenizer = load_tokenizer_for(None, args.model_dir, trust_remote_code=args.trust_remote_code)
    return model, tokenizer


def encode_prompt(args, model, tokenizer, device):
    """The prompt's token ids, checked against the model's vocabulary and context length."""
    input_ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    vocab_size = model.config.vocab_size
    if args.eos_token_id is not None and args.eos_token_id >= vocab_size:
        raise CLIError(
            f"--eos_token_id {args.eos_token_id} is outside the model's vocabulary of {vocab_size} tokens"
        )
    if int(input_ids.max()) >= vocab_size:
        raise CLIError(
            f"the tokenizer gives token id {int(input_ids.max())}, but the model's vocabulary has {vocab_size} tokens"
        )

    context = getattr(model.config, "max_position_embeddings", None)  # the book's context_length
    n = input_ids.shape[1]
    if context is not None and n + args.max_new_tokens > context:
        room = context - args.max_new_tokens
        if room < 1:
            raise CLIError(
                f"--max_new_tokens {args.max_new_tokens} leaves no room for the prompt in the model's context of {context} tokens"
            )
        if not args.truncate_prompt:
            raise CLIError(
                f"the prompt is {n} tokens and --max_new_tokens is {args.max_new_tokens}, but the model's "
                f"context_length is {context}: shorten the prompt, lower --max_new_tokens, or pass --truncate_prompt"
            )
        note(
            f"warning: the prompt is {n} tokens; keeping its last {room} so that {args.max_new_tokens} new ones fit in {context}"
        )
        input_ids = input_ids[:, -room:]
    return input_ids.to(device)


def main(argv=None):
    args = parse_args(argv)
    check_options(args)  # before loading anything, so a mistake is reported at once
    device = pick_device(args.device)
    model, tokenizer = load(args, device)
    input_ids = encode_prompt(args, model, tokenizer, device)

    settings = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.do_sample,
        "num_beams": args.num_beams,
        "num_return_sequences": args.num_return_sequences,
    }
    # check_options let --top_k/--top_p through only with sampling; --temperature 0 means greedy.
    names = ("temperature", "top_k", "top_p") if args.do_sample else ()
    for name in (*names, "repetition_penalty", "eos_token_id"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if tokenizer.pad_token_id is None and model.generation_config.pad_token_id is None:
        settings["pad_token_id"] = tokenizer.eos_token_id  # GPT-2 has no padding token; the book pads with it

    # Streaming shows one sequence growing; beams and several sequences are printed at the end.
    stream = args.num_beams == 1 and args.num_return_sequences == 1
    strategy = "sampling" if args.do_sample else "greedy"
    if args.num_beams > 1:
        strategy = f"beam search ({args.num_beams} beams{', sampling' if args.do_sample else ''})"
    n_params = sum(p.numel() for p in model.parameters())
    note(
        f"{type(model).__name__}, {n_params / 1e6:.1f}M parameters, {args.dtype} on {device}; {strategy}, "
        f"up to {args.max_new_tokens} new tokens after a {input_ids.shape[1]}-token prompt"
    )

    if args.seed is not None:
        set_seed(args.seed)
    try:
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=TextStreamer(tokenizer, skip_prompt=False) if stream else None,
                **settings,
            )
    except ValueError as e:  # transformers' checks of the generation settings
        raise CLIError(f"generate: {describe(e)}") from e
    if not stream:
        texts = tokenizer.batch_decode(output)
        for i, text in enumerate(texts):
            if len(texts) > 1:
                print(f"--- {i + 1} of {len(texts)} ---")
            print(text)
    return 0


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # an untrained model emits any character
    sys.exit(run_cli(main))
