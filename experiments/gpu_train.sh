#!/usr/bin/env bash
# One GPU session: the detector's long run beside a grid of embedder runs
# (sampling × crop size, each on two frame-level splits so that the choice
# does not rest on one validation split). Expects the prepared data in
# work/data (training.prepare) and, where Ultralytics is missing, its wheels
# in .whl/. Writes at most 8 files under $OUT (the device tool's limit).
#
#   DET_INIT=work/init/detector.safetensors EMB_INIT=work/init/lite0_imagenet.safetensors bash experiments/gpu_train.sh
set -u
OUT=${OUT:-work/gpu_out}; HOURS=${HOURS:-0.12}; DEV=${DEV:-cuda}; IMGSZ=${IMGSZ:-1920}
EMB_EPOCHS=${EMB_EPOCHS:-40}; EMB_MINUTES=${EMB_MINUTES:-6.2}; EMB_INIT=${EMB_INIT:-package}
DET_INIT=${DET_INIT:-}; DET_LR=${DET_LR:-0.002}; DET_WORKERS=${DET_WORKERS:-10}; EMB_WORKERS=${EMB_WORKERS:-1}
# name:sampling:size — each runs on the shipped split and on a second one.
GRID=${GRID:-"uniform96:uniform:96 sqrt96:sqrt:96 balanced96:balanced:96 sqrt128:sqrt:128"}
EXTRA_DET=${EXTRA_DET:-}; EXTRA_EMB=${EXTRA_EMB:-}
mkdir -p "$OUT/det" "$OUT/emb"
if ! python3 -c "import ultralytics" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
(
  export OMP_NUM_THREADS=2  # eight runs share the CPU with the detector's loaders
  for cfg in $GRID; do
    IFS=: read -r name mode size <<< "$cfg"
    for split in orig s1; do  # orig: the shipped split; s1: the frames split again with seed 1
      resplit=(); [ $split = s1 ] && resplit=(--split-seed 1)
      python3 -m training.train_embedder --crops work/data/crops.json --out /tmp/emb/${name}_$split --epochs "$EMB_EPOCHS" \
        --size "$size" --sampling "$mode" "${resplit[@]}" --pretrained "$EMB_INIT" --max-minutes "$EMB_MINUTES" \
        --batch 128 --workers "$EMB_WORKERS" --device $DEV $EXTRA_EMB > /tmp/emb_${name}_$split.log 2>&1 &
    done
  done
  wait
  python3 -m experiments.choose_embedder /tmp/emb "$OUT/emb"
) &
EMB=$!
init=(); [ -n "$DET_INIT" ] && init=(--init "$DET_INIT")
python3 -m training.train_detector --data work/data/detector/data.yaml --model yolo11n.yaml --imgsz $IMGSZ --epochs 300 \
  --hours "$HOURS" --batch 16 --workers "$DET_WORKERS" --device $DEV --cache ram --lr0 "$DET_LR" "${init[@]}" $EXTRA_DET \
  --project /tmp/runs --out "$OUT/det" > /tmp/det.log 2>&1
wait $EMB
{ tail -c 4000 /tmp/det.log; for f in /tmp/emb_*.log; do echo "== $f"; tail -c 600 "$f"; done; } > "$OUT/log.txt"
ls -la "$OUT" "$OUT"/*
