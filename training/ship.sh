#!/usr/bin/env bash
# How the bundled model is rebuilt around an embedder that training/lever_grid.sh
# trained and training/lever_eval.sh evaluated (issue 11). The detector is kept.
#
#   EMB=work/levers/NAME_s0 OTHER=work/eval/NAME_s1 bash training/ship.sh   # → work/ship/default
#
# 1. prototypes from every labelled frame (thresholds from held-out training frames only);
# 2. the thresholds' quantile chosen on OTHER (the same setting trained on the second
#    split) from its validation frames that are training frames here, never ours;
# 3. the full evaluation on our validation frames, scored with training-frame prototypes;
# 4. ONNX export with its parity and the input-size sweep, then the INT8 files.
set -eu
EMB=${EMB:?the embedder run to ship}; OTHER=${OTHER:?the same setting evaluated on the second split}
OUT=${OUT:-work/ship/default}; DATA=${DATA:-work/data}; TARGET=${TARGET:-0.05}
export PYTHONUNBUFFERED=1
rm -rf "$OUT"
python -m training.build_prototypes --crops "$DATA/crops.json" --detector-from models/default --embedder "$EMB" \
  --frames all --name plankton-studycase --out "$OUT"
python -m training.calibrate --model "$OTHER" --for-model "$OUT" --target-unknown "$TARGET" --apply --out "$OUT.calibration.json"
python -m training.evaluate --model "$OUT" --data "$DATA"
python -m training.export_onnx "$OUT" --data "$DATA" --imgsz 2560 2240 1600 1280 960
python -m training.quantize "$OUT" --data "$DATA" --routes openvino --keep-fp32 decode --imgsz 2560 2240 1600 1280 960
