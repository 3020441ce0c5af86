#!/usr/bin/env bash
# Chapter 6's spam classifier trained from random weights (no GPT-2 weights here): the "tiny" preset
# (4 layers, emb_dim 128, 7.3M parameters, most of them the token embedding; dropout 0.2), every
# parameter trained, on the book's balanced SMS split (1,045 / 149 / 300). CPU only. Writes its log
# to out/finetune_classifier_ch06.log (or LOG=...); the measured run is kept in
# benchmarks/finetune_classifier_ch06.log (earlier settings: the *_lr*.log files beside it).
# One OpenMP thread: on a shared 2-core machine two threads wait on each other (10x slower evaluation).
#   bash benchmarks/finetune_classifier_ch06.sh
# Offline, first: source ../shared/offline/env.sh and put SMSSpamCollection into
# $GPT_SCRATCH_CACHE/sms_spam_collection/ (the script says so when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
LOG=${LOG:-out/finetune_classifier_ch06.log}
mkdir -p "$(dirname "$LOG")"
{
  echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) CPU cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# $PYTHON examples/finetune_classifier.py $*"
  rm -rf out/spam-tiny-full
  start=$(date +%s)
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PYTHON" examples/finetune_classifier.py \
    --config_name tiny --config_overrides drop_rate=0.2 --train_mode full \
    --learning_rate 3e-4 --warmup_steps 0.1 --num_train_epochs 8 \
    --per_device_train_batch_size 8 --use_cpu --disable_tqdm true \
    --output_dir out/spam-tiny-full "$@"
  end=$(date +%s)
  echo "# wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
} 2>&1 | grep --line-buffered -v -E "Writing model shards" | tee "$LOG"
