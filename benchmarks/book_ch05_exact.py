#!/usr/bin/env python
"""Chapter 5's pretraining run with the book's randomness (modeling_gpt_scratch/book_pretraining.py):
GPT_CONFIG_124M at context 256, The Verdict split 90/10, windows of 256, batch 2, AdamW 4e-4 with weight
decay 0.1 on every parameter, 10 epochs, an evaluation every 5 steps on 5 batches. On a CPU it prints
the book's lines, from "Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933" to
"Ep 10 (Step 000085): Train loss 0.391, Val loss 6.452" (docs/book-fidelity.md).

    python benchmarks/book_ch05_exact.py [--evaluations N]     # about 30 minutes on a busy 2-core CPU

Stand-in until examples/pretrain.py has a book-exact mode that calls the same library functions.
"""

import argparse
import os
import time
from pathlib import Path

import torch

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
from modeling_gpt_scratch.book_pretraining import book_init_, book_loaders, train_model_simple
from modeling_gpt_scratch.data import train_val_split


class Enough(Exception):
    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--evaluations", type=int, default=18, help="stop after this many (18: the whole run)"
    )
    parser.add_argument(
        "--train_file", default=None, help="default: ../shared/data/the-verdict/the-verdict.txt"
    )
    args = parser.parse_args()
    shared = os.environ.get(
        "GPT_SCRATCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    path = Path(args.train_file or Path(shared) / "the-verdict" / "the-verdict.txt")
    train_text, val_text = train_val_split(path.read_text(encoding="utf-8"))

    config = GPTScratchConfig.from_preset("GPT_CONFIG_124M", context_length=256)
    model = book_init_(GPTScratchForCausalLM(config), 123)  # nothing draws from the generator after this
    train_loader, val_loader = book_loaders(train_text, val_text, block_size=256, batch_size=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    start, lines = time.time(), []

    def log(line):
        print(f"{line}  ({time.time() - start:.0f} s)", flush=True)
        lines.append(line)
        if len(lines) >= args.evaluations:
            raise Enough

    try:
        train_model_simple(model, train_loader, val_loader, optimizer, num_epochs=10, log=log)
    except Enough:
        pass


if __name__ == "__main__":
    main()
