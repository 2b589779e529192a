#!/usr/bin/env bash
# Here, before one GPU call (issues 26 and 31): pack what the device needs
# into the ignored .gpu/ and .whl/, and set the bundled model's fp32 ONNX
# files aside so the working tree fits the device tool's 64 MiB (the tracked
# tree alone is ~62 MiB). Prints the call to make. Afterwards:
# `git checkout -- models/default` puts the ONNX files back.
#
#   COCO=PATH/annotations.coco.json bash experiments/gpu_prepare.sh
set -eu
: "${COCO:?set COCO to the annotations.coco.json of the study frames}"
if [ ! -f .gpu/studycase/annotations.coco.json ]; then  # the frames, outside the boxes filled with background (~19 MiB)
  python -m experiments.cv_folds pack --coco "$COCO" --out .gpu/studycase
fi
[ -f .gpu/init/efficientnet_lite0.safetensors ] || python -m training.save_backbone efficientnet_lite0 .gpu/init/efficientnet_lite0.safetensors
if ! ls .whl/ultralytics-*.whl >/dev/null 2>&1; then  # the device image has torch and timm but not Ultralytics (inference needs no more)
  v=$(python -c "import ultralytics; print(ultralytics.__version__)")
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl "ultralytics==$v"
fi
rm -f models/default/*.onnx models/default/*.int8.*  # the GPU path runs the safetensors weights (benchmarks.gpu --no-verify)
du -sh .gpu .whl
cat <<'CALL'
device run, carry [".gpu", ".whl"], timeout_s 560:
  bash experiments/gpu_session.sh
then here: git checkout -- models/default
CALL
