#!/usr/bin/env bash
# The book's chapter 5 pretraining run with examples/pretrain.py: GPT_CONFIG_124M at context 256
# (162.4M parameters, untied head), the book's initialization (--init book: PyTorch's defaults after
# torch.manual_seed(123)), The Verdict split 90/10, windows of 256 with stride 256, batch 2, AdamW
# lr 4e-4 weight decay 0.1 at a constant rate, 10 epochs (90 steps), evaluation every 5 steps on 5
# batches, greedy samples of "Every effort moves you".
#
#   bash benchmarks/pretrain_book_ch05.sh          # strict chapter 5: no gradient clipping
#   CLIP=1 bash benchmarks/pretrain_book_ch05.sh   # plus appendix D's gradient clipping at norm 1.0
#
# About 13 minutes on a 2-core CPU (7 s a step). Writes out/book-ch05[-clip]/ with loss-plot.png and
# training_log.json; the results kept in benchmarks/ are pretrain_ch05*_loss.png and *_log.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/common.sh
. benchmarks/common.sh
shared_train_file the-verdict/the-verdict.txt
CLIP_ARGS=(--max_grad_norm 0)
OUT=out/book-ch05
if [ "${CLIP:-0}" = 1 ]; then
  CLIP_ARGS=(--max_grad_norm 1.0)
  OUT=out/book-ch05-clip
fi
.venv/bin/python examples/pretrain.py --config_name GPT_CONFIG_124M --config_overrides context_length=256 \
  --init book "${DATA[@]}" --per_device_train_batch_size 2 --learning_rate 4e-4 --weight_decay 0.1 \
  --num_train_epochs 10 --lr_scheduler_type constant "${CLIP_ARGS[@]}" --eval_steps 5 --eval_iters 5 \
  --seed 123 --output_dir "$OUT" --overwrite_output_dir
