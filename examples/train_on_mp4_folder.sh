#!/usr/bin/env bash
# Adapt a backbone on a folder of mp4 files with the published recipe (SPEC.md section 2).
# On one GPU:            bash examples/train_on_mp4_folder.sh facebook/dinov2-small videos/ out/
# On N GPUs:             NUM_PROCESSES=N bash examples/train_on_mp4_folder.sh ...
# Extra trainer flags go after the three positional arguments (e.g. --max-train-steps 100 --cpu).
set -euo pipefail
BACKBONE=${1:?backbone id or path}; VIDEOS=${2:?folder of videos}; OUTPUT=${3:?output folder}; shift 3
LAUNCH=(accelerate launch --num_processes "${NUM_PROCESSES:-1}")
if [ "${NUM_PROCESSES:-1}" -gt 1 ]; then LAUNCH+=(--multi_gpu); fi
"${LAUNCH[@]}" -m co_settle_hf.train \
  --model_name_or_path "$BACKBONE" --train_dir "$VIDEOS" --output_dir "$OUTPUT" \
  --per_device_train_batch_size "${BATCH:-128}" --base_learning_rate 1e-4 --weight_decay 0.05 \
  --num_train_epochs 5 --warmup_epochs 1 --checkpointing_steps epoch --with_tracking "$@"
