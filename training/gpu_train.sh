#!/usr/bin/env bash
# One GPU session: the detector's long run and the embedder's sampling
# comparison side by side. Expects the prepared data in work/data (from
# training.prepare) and, where Ultralytics is missing, its wheels in .whl/.
# Writes at most 8 files under $OUT (the device tool's limit).
set -u
OUT=${OUT:-work/gpu_out}; HOURS=${HOURS:-0.105}; EMB_EPOCHS=${EMB_EPOCHS:-30}; MODES=${MODES:-sqrt balanced}; DEV=${DEV:-cuda}
IMGSZ=${IMGSZ:-1920}; EXTRA_DET=${EXTRA_DET:-}; EXTRA_EMB=${EXTRA_EMB:-}
mkdir -p "$OUT/det" "$OUT/emb"
if ! python3 -c "import ultralytics" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
(
  for mode in $MODES; do
    python3 -m training.train_embedder --crops work/data/crops.json --out /tmp/emb_$mode --epochs "$EMB_EPOCHS" \
      --batch 128 --workers 3 --device $DEV --sampling $mode $EXTRA_EMB > /tmp/emb_$mode.log 2>&1 &
  done
  wait
  python3 - "$OUT" $MODES <<'PY'
import json, shutil, sys
out = sys.argv[1]
runs = {m: json.load(open(f"/tmp/emb_{m}/embedder.json")) for m in sys.argv[2:]}
best = max(runs, key=lambda m: runs[m]["best_val_f1_macro"])
json.dump({"chosen": best, "runs": {m: {"best_val_f1_macro": r["best_val_f1_macro"], "history": r["history"]} for m, r in runs.items()}}, open(f"{out}/emb/sampling.json", "w"), indent=1)
shutil.copy(f"/tmp/emb_{best}/embedder.safetensors", f"{out}/emb/")
shutil.copy(f"/tmp/emb_{best}/embedder.json", f"{out}/emb/")
PY
) &
EMB=$!
python3 -m training.train_detector --data work/data/detector/data.yaml --model yolo11n.yaml --imgsz $IMGSZ --epochs 300 \
  --hours "$HOURS" --batch 16 --workers 10 --device $DEV $EXTRA_DET --project /tmp/runs --out "$OUT/det" > /tmp/det.log 2>&1
cp /tmp/runs/detector/weights/last.pt "$OUT/det/last.pt" 2>/dev/null
wait $EMB
{ tail -c 3000 /tmp/det.log; for m in $MODES; do echo "== $m"; grep "val top-1" /tmp/emb_$m.log | tail -5; tail -3 /tmp/emb_$m.log; done; } > "$OUT/log.txt"
ls -la "$OUT" "$OUT"/*
