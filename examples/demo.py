#!/usr/bin/env python
"""The project in one run: build the book's GPT (a tiny one), save it, load it back, generate.

    python examples/demo.py --output_dir out/demo      # what `make demo` runs

1. builds GPTScratchConfig.from_preset("tiny") with random weights (seed 123),
2. saves model and tokenizer with save_pretrained (to a temporary folder, then moved into place),
3. loads the folder again with AutoModelForCausalLM.from_pretrained and checks the logits,
4. streams a greedy continuation of "Every effort moves you" and shows what each step chose.

The weights are random, so the text is gibberish: pretraining (the book's chapter 5) comes later.
Afterwards `python examples/generate.py out/demo` generates from the saved folder.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Every effort moves you"
SEED = 123
MARKER = "<!-- written by examples/demo.py: running the demo again replaces this folder -->"
MODEL_CARD = f"""{MARKER}
# gpt-scratch demo model

The GPT from *Build a Large Language Model (From Scratch)*, preset `tiny`, with **random weights**
(seed {SEED}). It loads with `AutoModelForCausalLM.from_pretrained` (add `trust_remote_code=True`
where `modeling_gpt_scratch` is not installed) and generates gibberish until it is trained.
"""


def fail(message):
    print(f"demo.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_output_dir(out: Path, overwrite: bool):
    """Refuse to replace a folder this demo did not write, before anything slow happens."""
    if out.exists() and not out.is_dir():
        fail(f"--output_dir {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        card = out / "README.md"
        if not (card.is_file() and card.read_text(encoding="utf-8", errors="replace").startswith(MARKER)):
            fail(
                f"--output_dir {out} already holds files this demo did not write; pick another folder or pass --overwrite"
            )


def save_atomically(model, tokenizer, out: Path):
    """save_pretrained into a temporary folder beside `out`, then rename it into place: an interrupted
    run leaves the old folder (or none), never a half-written one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(MODEL_CARD, encoding="utf-8")
        # mkdtemp makes the folder private and transformers writes model.safetensors 0600: give them
        # the permissions of any other folder and file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there if something failed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default="out/demo", help="where to save the model (default: out/demo)")
    p.add_argument("--max_new_tokens", type=int, default=20, help="tokens to generate (default: 20)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --output_dir even if this demo did not write it"
    )
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    check_output_dir(out, args.overwrite)
    start = time.perf_counter()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer
    from transformers.utils import logging

    from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
    from modeling_gpt_scratch.tokenization import load_tokenizer

    logging.disable_progress_bar()

    print(f"[1/4] Build the book's GPT, preset 'tiny', random weights (torch.manual_seed({SEED}))")
    torch.manual_seed(SEED)
    config = GPTScratchConfig.from_preset("tiny")
    model = GPTScratchForCausalLM(config).eval()  # eval: no dropout, so outputs are repeatable
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"      {config.n_layers} transformer blocks, {config.n_heads} heads, emb_dim {config.emb_dim}, "
        f"context_length {config.context_length}, vocab {config.vocab_size}: {n_params / 1e6:.1f}M parameters "
        f"(output head tied to the token embedding: {config.tie_word_embeddings})"
    )
    tokenizer = load_tokenizer()
    print(
        f"      tokenizer: GPT-2's byte-pair encoding, {len(tokenizer)} tokens, padding = {tokenizer.pad_token}"
    )

    print(f"[2/4] Save model and tokenizer with save_pretrained to {out}/")
    save_atomically(model, tokenizer, out)
    for f in sorted(out.iterdir()):
        print(f"      {f.name:28} {f.stat().st_size / 1e6:8.2f} MB")

    print("[3/4] Load it back with AutoModelForCausalLM.from_pretrained")
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(input_ids).logits - reloaded(input_ids).logits).abs().max().item()
    same_class = type(reloaded) is type(model)
    print(f"      class: {type(reloaded).__name__} (same class as the one built: {same_class})")
    print(
        f"      logits on {PROMPT!r}: largest difference {diff:.1e} ({'match' if diff == 0 else 'MISMATCH'})"
    )
    if not same_class or diff != 0:
        fail("the reloaded model differs from the saved one")

    print(f"[4/4] Greedy generation, {args.max_new_tokens} new tokens, streamed by TextStreamer.")
    print("      The weights are random, so expect gibberish: pretraining (chapter 5) comes later.\n")
    with torch.no_grad():
        output = reloaded.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            streamer=TextStreamer(tokenizer, skip_prompt=False),
            return_dict_in_generate=True,
            output_logits=True,
        )

    n_prompt = input_ids.shape[1]
    print(f"\n      What each step did (the prompt is {n_prompt} tokens; the KV cache keeps earlier ones;")
    print(
        f"      p is the chosen token's probability, 1/{reloaded.config.vocab_size} = {1 / reloaded.config.vocab_size:.1e} if uniform):"
    )
    for step, logits in enumerate(output.logits):
        token_id = int(output.sequences[0, n_prompt + step])
        prob = torch.softmax(logits[0].float(), dim=-1)[token_id].item()
        fed = f"the {n_prompt} prompt tokens" if step == 0 else "1 new token + cache"
        print(
            f"      step {step + 1:2}: fed {fed:21} -> id {token_id:5} {tokenizer.decode([token_id])!r:16} "
            f"(most likely of {logits.shape[-1]}, p = {prob:.1e})"
        )
    print(
        f"\nDone in {time.perf_counter() - start:.1f} s. Try: python examples/generate.py {out} --prompt 'Hello'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
