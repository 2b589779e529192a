"""benchmarks.gpu's device-resident pipeline, run on the CPU: it must find
the CPU cascade's objects, which is what makes its GPU figures
trustworthy before anyone has a GPU."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from repo_paths import EXAMPLES, REPO

FRAMES = sorted((EXAMPLES / "frames").glob("*.jpg"))


def _frame(path) -> np.ndarray:
    from plankton.images import read_image

    return read_image(path)


def test_the_pipeline_finds_the_cpu_cascades_objects(tmp_path):
    """The bundled model on the committed frames, end to end from JPEG
    bytes, against cascade.analyse + resolve."""
    from benchmarks import gpu

    out = gpu.main(["--model", str(REPO / "models" / "default"), "--frames", "3", "--batch", "3", "--device", "cpu",
                    "--out", str(tmp_path / "gpu.json")])
    parity = out["parity"]
    assert parity["frames"] == 3 and parity["cpu_objects"] >= 10
    assert parity["cpu_boxes_matched_fraction"] >= 0.9
    assert parity["matched_same_species_fraction"] >= 0.95
    batch = out["batches"]["3"]
    assert batch["fps"] > 0 and batch["objects_per_frame"] > 0
    assert set(batch["stage_ms_per_frame"]) == {"decode", "detect", "crop", "embed", "match"}


@pytest.mark.parametrize("crop", [dict(size=96, context=0.25, min_side=16.0), dict(size=64, context=0.1, min_side=0.0)])
def test_crops_are_extract_crops(crop):
    """Boxes of every size (enlarged and shrunk), inside the frame and past
    its edges, from two frames at once: the crops extract_crops cuts."""
    from benchmarks.gpu_pipeline import cut_crops
    from plankton.model.crops import CropConfig, extract_crops

    cfg = CropConfig(**crop)
    images = [_frame(p) for p in FRAMES[:2]]
    H, W = images[0].shape[:2]
    rng = np.random.default_rng(0)
    n = 60
    centre = rng.uniform([-20, -20], [W + 20, H + 20], (n, 2))
    wh = np.exp(rng.uniform(np.log(2), np.log(500), (n, 2)))
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)
    frame = rng.integers(0, 2, n)
    frames = torch.stack([torch.from_numpy(im.copy()).permute(2, 0, 1) for im in images])
    mine = cut_crops(frames, torch.from_numpy(boxes), torch.from_numpy(frame), cfg).permute(0, 2, 3, 1).numpy()
    ref = np.concatenate([extract_crops(images[f], boxes[i : i + 1], cfg) for i, f in enumerate(frame)])
    diff = np.abs(mine - ref.astype(np.float32))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


def test_letterbox_is_ultralytics(tiny_cascade):
    """Scaled down, up, by odd factors, and not at all: LetterBox's input."""
    from ultralytics.data.augment import LetterBox
    import cv2

    from benchmarks.gpu_pipeline import GpuPipeline

    pipe = GpuPipeline(tiny_cascade, "cpu")
    image = _frame(FRAMES[0])
    for h, w in [(1080, 1920), (777, 1301), (300, 500), (384, 640)]:
        im = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        ref = LetterBox((pipe.imgsz, pipe.imgsz), auto=True, stride=pipe.stride)(image=im)
        mine = pipe.letterbox(torch.from_numpy(im).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        assert mine.shape == ref.shape and np.abs(mine * 255 - ref).max() < 1e-3


def test_a_batch_of_mixed_sizes_keeps_each_frames_objects(tiny_cascade):
    """Frames of two sizes in one batch run as two groups; each frame's
    objects come back in its place, as a batch of its own group gives them."""
    from PIL import Image

    from benchmarks.gpu_pipeline import GpuPipeline, read_jpegs

    pipe = GpuPipeline(tiny_cascade, "cpu")
    big = read_jpegs(FRAMES[:1], 1)[0]
    buf = io.BytesIO()
    Image.fromarray(_frame(FRAMES[1])).resize((960, 540)).save(buf, format="JPEG", quality=90)
    small = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    together = pipe.run([big, small, big])
    assert together.sizes == [(1080, 1920), (540, 960), (1080, 1920)]
    frame = together.frame.numpy()
    assert (np.diff(frame) >= 0).all()
    bigs, alone = pipe.run([big, big]), pipe.run([small])
    for i, (ref, j) in enumerate([(bigs, 0), (alone, 0), (bigs, 1)]):
        assert np.array_equal(together.boxes.numpy()[frame == i], ref.boxes.numpy()[ref.frame.numpy() == j])
        assert list(together.species[frame == i]) == list(ref.species[ref.frame.numpy() == j])
    assert together.boxes.numpy()[frame == 1][:, 2].max() <= 960


def test_the_fp16_route_keeps_the_species(tmp_path):
    """What CUDA runs (fp16, channels-last, the head's box decoding in
    fp32), on the CPU: boxes within a pixel, the same species."""
    from benchmarks import gpu

    out = gpu.main(["--model", str(REPO / "models" / "default"), "--frames", "1", "--batch", "1", "--device", "cpu", "--precision", "fp16",
                    "--parity-frames", "1"])
    parity = out["parity"]
    assert out["precision"].startswith("fp16") and parity["cpu_objects"] > 5
    assert parity["cpu_boxes_matched_fraction"] >= 0.9 and parity["matched_same_species_fraction"] >= 0.9
    assert parity["matched_box_max_abs_diff_px"] < 1


def test_runs_on_a_model_folder_with_its_onnx_files_set_aside(tmp_path):
    """experiments/gpu_prepare.sh leaves the bundled model without its ONNX
    and INT8 files (to fit the device's upload); --no-verify runs on the
    safetensors weights alone, and without it the folder is refused."""
    import shutil

    from benchmarks import gpu
    from plankton.artifact.manifest import ArtifactError

    folder = tmp_path / "model"
    shutil.copytree(REPO / "models" / "default", folder, ignore=shutil.ignore_patterns("*.onnx", "*.int8.*"))
    args = ["--model", str(folder), "--frames", "1", "--batch", "1", "--device", "cpu", "--parity-frames", "1"]
    with pytest.raises(ArtifactError, match="is missing"):
        gpu.main(args)
    out = gpu.main(args + ["--no-verify"])
    assert out["parity"]["cpu_objects"] > 5 and out["parity"]["matched_same_species_fraction"] >= 0.95
