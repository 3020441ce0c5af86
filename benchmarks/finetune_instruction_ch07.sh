#!/usr/bin/env bash
# Chapter 7's instruction fine-tuning pipeline with examples/finetune_instruction.py on the book's
# instruction-data.json (split 935 / 110 / 55), measured on a CPU. No GPT-2 weights exist on this machine,
# so the model is a small random-init GPT (the tiny preset cut to emb_dim 64, 2 layers, 4 heads,
# context 256: 3.3M parameters, most of them the tied 50257-token embedding), trained 2 epochs (2 x 117 steps
# of batch 8) at lr 1e-3 decaying linearly to 0 (the book: constant 5e-5, for a pretrained model),
# weight decay 0.1, seed 123. About 8 minutes on a shared 2-core CPU.
# Then greedy responses (32 new tokens) to the 110 test entries.
#
#   bash benchmarks/finetune_instruction_ch07.sh 2>&1 | tee benchmarks/finetune_instruction_ch07.log
#
# Writes out/sft-ch07-tiny/ (model, losses.json, instruction-data-with-response.json).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/common.sh
. benchmarks/common.sh
shared_train_file instruction/instruction-data.json
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
start=$(date +%s)
.venv/bin/python examples/finetune_instruction.py --config_name tiny \
  --config_overrides emb_dim=64,n_layers=2,n_heads=4 "${DATA[@]}" \
  --num_train_epochs 2 --learning_rate 1e-3 --lr_scheduler_type linear --weight_decay 0.1 --per_device_train_batch_size 8 \
  --eval_strategy steps --eval_steps 29 --logging_steps 29 --max_new_tokens 32 \
  --disable_tqdm true --output_dir out/sft-ch07-tiny --overwrite_output_dir
echo "wall time: $(( $(date +%s) - start )) s"
