#!/usr/bin/env bash
# The book's chapter 5 pretraining run with examples/pretrain.py --book_exact: GPT_CONFIG_124M at
# context 256 (162.4M parameters, untied head), the book's loop and randomness (its initial weights
# after torch.manual_seed(123), then its shuffled DataLoader with nothing drawing in between, dropout in
# its order), The Verdict split 90/10, windows of 256 with stride 256, batch 2, AdamW lr 4e-4 weight
# decay 0.1 at a constant rate, 10 epochs (90 steps), an evaluation every 5 steps on 5 batches of new
# passes over the loaders, a greedy sample of "Every effort moves you" after each epoch. On a CPU it
# prints the printed book's lines, 9.781 / 9.933 at step 0 to 0.391 / 6.452 at step 85
# (docs/book-fidelity.md).
#
#   bash benchmarks/pretrain_book_ch05.sh                    # strict chapter 5: no gradient clipping
#   EPOCHS=1 bash benchmarks/pretrain_book_ch05.sh           # the first epoch only (the same lines)
#   CLIP=1 bash benchmarks/pretrain_book_ch05.sh             # plus gradient clipping at norm 1.0 every step
#
# About 13-30 minutes on a 2-core CPU (7 s a step and more when shared). Writes out/book-ch05[-clip]/
# with the model, loss-plot.png and training_log.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/common.sh
. benchmarks/common.sh
shared_train_file the-verdict/the-verdict.txt
CLIP_ARGS=()
OUT=out/book-ch05
if [ "${CLIP:-0}" = 1 ]; then
  CLIP_ARGS=(--max_grad_norm 1.0)
  OUT=out/book-ch05-clip
fi
.venv/bin/python examples/pretrain.py --book_exact --config_name GPT_CONFIG_124M \
  --config_overrides context_length=256 "${DATA[@]}" --per_device_train_batch_size 2 --learning_rate 4e-4 \
  --weight_decay 0.1 --num_train_epochs "${EPOCHS:-10}" "${CLIP_ARGS[@]}" --eval_steps 5 --eval_iters 5 \
  --seed 123 --output_dir "$OUT" --overwrite_output_dir
