#!/usr/bin/env bash
# On the device, in one call (prepared by experiments/gpu_prepare.sh): the
# GPU pipeline's frames/s (issue 31), then issue 26's cross-validated
# embedder grid within what is left of BUDGET_MIN. Brings back through $OUT
# gpu_bench.json, the grid's cv_grid.json/.md, the best run's fold
# checkpoints (experiments.cv_grid --bring) and log.txt.
#
#   bash experiments/gpu_session.sh        (GRID_ARGS="--vary size=96,128" to change the grid)
set -u
DEVICE=${DEVICE:-cuda}; OUT=${OUT:-work/gpu_out}; BUDGET_MIN=${BUDGET_MIN:-8.5}; BENCH_FRAMES=${BENCH_FRAMES:-512}; GRID_ARGS=${GRID_ARGS:-}
mkdir -p "$OUT"
start=$(date +%s)
if ! python3 -c "import ultralytics" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/log.txt"
timeout 180 python3 -m benchmarks.gpu --frames "$BENCH_FRAMES" --batch 1 8 32 64 --device "$DEVICE" --no-verify --out "$OUT/gpu_bench.json" >> "$OUT/log.txt" 2>&1
echo "benchmarks.gpu: rc $? after $(( $(date +%s) - start )) s" >> "$OUT/log.txt"
left=$(python3 -c "print(max(1.0, $BUDGET_MIN - ($(date +%s) - $start) / 60))")
python3 -m experiments.cv_grid --coco .gpu/studycase/annotations.coco.json --out work/cv --pretrained .gpu/init --device "$DEVICE" \
  --budget-min "$left" --bring "$OUT" $GRID_ARGS >> "$OUT/log.txt" 2>&1
echo "cv_grid: rc $? after $(( $(date +%s) - start )) s" >> "$OUT/log.txt"
tail -c 12000 "$OUT/log.txt"
