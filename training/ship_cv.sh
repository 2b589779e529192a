#!/usr/bin/env bash
# The bundled model from every labelled frame, its choices cross-fitted (issue 40). Runs on 2 CPU cores;
# every step resumes where it stopped, so a cut-off run is started again with the same command.
#
#   COCO=PATH/annotations.coco.json bash training/ship_cv.sh          # → work/ship/default
#
# 1. experiments.cv_grid: the recipe (RECIPE) on 5 folds over frames; each fold model embeds every box
#    (~12 min a fold on 2 cores; a finished fold is skipped, an unfinished one resumes from its checkpoint);
# 2. the same recipe trained once on every frame but the app's example frames (resumes from its checkpoint);
#    the margin below which the identifier embeds a crop in 8 views (experiments.tta_margin, nested over the folds);
# 3. prototypes from those frames; per-species thresholds from the folds' out-of-fold similarities, at the
#    quantile whose out-of-fold unknown rate meets TARGET while the open-set rate keeps MIN_OPEN_SET;
# 4. the count evidence: the detector on its 72 validation frames (it never trained on them), each box
#    named by the fold model that never saw its frame; then the count calibration;
# 5. evaluation (identification out of fold, detection on the detector's validation frames), ONNX, INT8.
set -eu
COCO=${COCO:?the StudyCase annotation file}; CV=${CV:-work/cv40}; RECIPE=${RECIPE:-"sampling=sqrt,seeds=0"}
RUN=${RUN:-lite0-96-sqrt-e12-s0}; FINAL=${FINAL:-work/final_s0}; OUT=${OUT:-work/ship/default}
TARGET=${TARGET:-0.05}; MIN_OPEN_SET=${MIN_OPEN_SET:-0.8}; RARE_VIEWS=${RARE_VIEWS:-10}; DETECTOR_FROM=${DETECTOR_FROM:-models/default}
export PYTHONUNBUFFERED=1
KEEP=plankton_app/examples/frames.coco.json
python -m experiments.cv_grid --coco "$COCO" --out "$CV" --device cpu --setting "$RECIPE"
python -m experiments.cv_heads "$CV" --run "$RUN" --out "$CV/cv_heads.json"
python -m experiments.tta_margin "$CV" --run "$RUN" --out "$CV/tta_margin.json"
MARGIN=${MARGIN:-$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['ships'])" "$CV/tta_margin.json")}
python -m training.all_frames --crops "$CV/folds/fold0/crops.json" --out work/all/crops.json --keep-out "$KEEP" \
  --split-from "$DETECTOR_FROM" --coco "$COCO"
ARGS=$(python -c "import json,sys; a=json.load(open(sys.argv[1]))['results'][0]; s=a['setting']; print(
  f\"--backbone {s['backbone']} --size {s['size']} --epochs {s['epochs']} --batch {s['batch']} --lr {s['lr']} --sampling {s['sampling']} --seed {a['seed']}\")" "$CV/cv_grid.json")
[ -f "$FINAL/embedder.json" ] || \
  python -m training.train_embedder --crops work/all/crops.json --out "$FINAL" --pretrained package --workers 2 --device cpu --select last $ARGS
rm -rf "$OUT"
python -m training.build_prototypes --crops work/all/crops.json --detector-from "$DETECTOR_FROM" --embedder "$FINAL" \
  --frames all --keep-out "$KEEP" --heldout-from "$CV/runs/$RUN" --tta-margin "$MARGIN" --match mean --rare-views "$RARE_VIEWS" --out "$OUT"
# the curated taxonomy table (spellings, kingdoms) carries over; a derived one would lose them
python -c "import sys; from plankton.artifact.taxonomy import read_csv, store; store(sys.argv[1], read_csv(sys.argv[2]))" "$OUT" "$DETECTOR_FROM/taxonomy.csv"
python -m training.calibrate --oof "$CV/runs/$RUN" --for-model "$OUT" --target-unknown "$TARGET" --min-open-set "$MIN_OPEN_SET" \
  --apply --out "$OUT.calibration.json"
python -m training.calibrate_counts --model "$OUT" --coco "$COCO" --evidence "$OUT.evidence.safetensors" \
  --fold-models "$CV/runs/$RUN" --folds-json "$CV/folds.json" --nested --apply
python -m training.evaluate --model "$OUT" --data work/all --oof "$CV/runs/$RUN"
python -m training.frame_ranges --model "$OUT" --coco "$COCO"
python -m training.export_onnx "$OUT" --data work/all
python -m training.quantize "$OUT" --data work/all --routes openvino --keep-fp32 decode
