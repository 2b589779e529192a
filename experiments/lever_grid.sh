#!/usr/bin/env bash
# The identifier levers of issue 11, each trained on two frame-level splits
# (the shipped one, "s0", and the frames split again with seed 1, "s1"), one
# run after another on the CPU. Every run resumes from its checkpoint, so the
# script can be started again after an interruption.
#
#   EPOCHS=24 bash experiments/lever_grid.sh            # writes work/levers/NAME_SPLIT/
set -u
OUT=${OUT:-work/levers}; EPOCHS=${EPOCHS:-24}; CROPS=${CROPS:-work/data/crops.json}
# name:min_side:size_input(0/1)
GRID=${GRID:-"scale48size:48:1 base:16:0 size:16:1 scale48:48:0"}
export PYTHONUNBUFFERED=1
for cfg in $GRID; do
  IFS=: read -r name min_side size_input <<< "$cfg"
  for split in s0 s1; do
    run="$OUT/${name}_$split"
    [ -f "$run/embedder.json" ] && continue
    extra=(); [ "$size_input" = 1 ] && extra+=(--size-input); [ $split = s1 ] && extra+=(--split-seed 1)
    mkdir -p "$run"
    python3 -m training.train_embedder --crops "$CROPS" --out "$run" --epochs "$EPOCHS" --min-side "$min_side" \
      --workers 1 "${extra[@]}" >> "$run/train.log" 2>&1 || echo "run $run failed: see $run/train.log"
  done
done
