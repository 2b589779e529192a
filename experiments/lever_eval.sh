#!/usr/bin/env bash
# Prototypes, thresholds and scores of every embedder run of experiments/lever_grid.sh, on its own split's
# validation frames (identification only: the detector trained on the shipped split), then the
# table of levers (experiments.lever_table). Prototypes come from training frames only.
#
#   bash experiments/lever_eval.sh                         # work/levers/NAME_SPLIT → work/eval/NAME_SPLIT
#   RARE_VIEWS=10 SUFFIX=_rv bash experiments/lever_eval.sh  # the rare-species lever on the same runs
#   MATCH=mean SUFFIX=_mean bash experiments/lever_eval.sh   # matching class means alone on the same runs
set -u
RUNS=${RUNS:-work/levers}; OUT=${OUT:-work/eval}; CROPS=${CROPS:-work/data/crops.json}; DATA=${DATA:-work/data}
RARE_VIEWS=${RARE_VIEWS:-0}; MATCH=${MATCH:-subcenter}; SUFFIX=${SUFFIX:-}; DETECTOR=${DETECTOR:-models/default}
for run in "$RUNS"/*_s0 "$RUNS"/*_s1; do
  [ -f "$run/embedder.json" ] || continue
  name=$(basename "$run")$SUFFIX; split=${name##*_}; split=${split%$SUFFIX}
  [ -f "$OUT/$name/metrics.json" ] && continue
  extra=(); [[ "$(basename "$run")" == *_s1 ]] && extra=(--split-seed 1)
  python3 -m training.build_prototypes --crops "$CROPS" --detector-from "$DETECTOR" --embedder "$run" --out "$OUT/$name" \
    --rare-views "$RARE_VIEWS" --match "$MATCH" "${extra[@]}" || { echo "build failed: $run"; continue; }
  python3 -m training.evaluate --model "$OUT/$name" --data "$DATA" --identification-only --no-umap || echo "evaluate failed: $name"
done
python3 -m experiments.lever_table "$OUT"
