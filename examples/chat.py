#!/usr/bin/env python
"""Chat with an instruction-tuned folder (finetune_instruction.py's or finetune_preference.py's output).

    python examples/chat.py out/finetune-instruction
    python examples/chat.py out/dpo --max_new_tokens 100 --multi_turn
    echo "Name three primary colors." | python examples/chat.py out/finetune-instruction

Each line you type is one instruction, put into the book's Alpaca prompt by the folder's chat template
(folders made before the template existed get it here); the answer streams as it is generated, greedy
by default, and stops at <|endoftext|>. The book trained on single instructions, so by default every
line starts afresh; --multi_turn keeps the conversation in the prompt. Ctrl-D (end of input) or Ctrl-C
ends the chat.
"""

import argparse
import sys

from modeling_gpt_scratch.cli import CLIError, one_line, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="chat.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a folder (or Hub id) with a causal LM and its tokenizer")
    parser.add_argument("--max_new_tokens", type=int, default=256, help="at most this many tokens per answer")
    parser.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="with --do_sample")
    parser.add_argument("--top_k", type=int, default=50, help="with --do_sample")
    parser.add_argument("--seed", type=int, default=123, help="with --do_sample")
    parser.add_argument("--system", help="replace the prompt's preamble ('Below is an instruction ...')")
    parser.add_argument("--multi_turn", action="store_true", help="keep earlier turns in the prompt")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error("--max_new_tokens must be >= 1")
    return args


def load(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import modeling_gpt_scratch  # noqa: F401  (registers the model with the Auto classes)
    from modeling_gpt_scratch.instruction import add_chat_template

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot load {args.model}: {one_line(error)}") from error
    if not tokenizer.chat_template:
        add_chat_template(tokenizer)
        print("(this folder has no chat template: using the book's Alpaca prompt)", file=sys.stderr)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def answer(model, tokenizer, messages, args):
    """Stream one reply to stdout and return its text."""
    import torch
    from transformers import TextStreamer

    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    input_ids = ids["input_ids"].to(model.device)
    room = model.config.max_position_embeddings - input_ids.shape[1]
    if room < 1:
        print(
            f"(the prompt is {input_ids.shape[1]} tokens, the model's context is full: start afresh)",
            flush=True,
        )
        return None
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    options = {"do_sample": False}
    if args.do_sample:
        options = {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k}
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=min(args.max_new_tokens, room),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            streamer=streamer,
            **options,
        )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()


def main(argv=None):
    args = parse_args(argv)
    model, tokenizer = load(args)
    if args.do_sample:
        from transformers import set_seed

        set_seed(args.seed)
    history = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type an instruction and press Enter; Ctrl-D or Ctrl-C ends the chat.")
    try:
        while True:
            try:
                line = input("You: " if interactive else "")
            except EOFError:
                break
            if not line.strip():
                continue
            messages = [*history, {"role": "user", "content": line.strip()}]
            print("Model: ", end="", flush=True)
            reply = answer(model, tokenizer, messages, args)
            if args.multi_turn and reply is not None:
                history = [*messages, {"role": "assistant", "content": reply}]
    except KeyboardInterrupt:
        pass
    print()


if __name__ == "__main__":
    sys.exit(run_cli(main))
