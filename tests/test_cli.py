"""The command line, run as users run it: ``python -m plankton`` in a
subprocess. The runs are few and start together (they spend most of their
time importing), each test then checks one run's outputs."""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "plankton_app" / "examples"
FRAMES_COCO = EXAMPLES / "frames.coco.json"
FRAMES = EXAMPLES / "frames"
FRAME_NAMES = sorted(p.name for p in FRAMES.glob("*.jpg"))
TIMEOUT = 600
MAX_PARALLEL = 3


def start(args, log):
    """``python -m plankton ARGS`` from the repository root; output goes to files
    (a pipe nobody reads while polling could fill up and block the process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), YOLO_OFFLINE="true", YOLO_AUTOINSTALL="false")
    with open(f"{log}.out", "w") as stdout, open(f"{log}.err", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "plankton", *map(str, args)], cwd=REPO, env=env,
                                stdout=stdout, stderr=stderr, text=True)


def run_all(commands, parallel, logs):
    """Run the commands, ``parallel`` at a time (each process holds ~1 GB)."""
    pending, running, results = list(commands.items()), {}, {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name, args = pending.pop(0)
                running[name] = start(args, logs / name)
            for name, p in list(running.items()):
                if p.poll() is not None:
                    out, err = (Path(f"{logs / name}{ext}").read_text() for ext in (".out", ".err"))
                    results[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
                    del running[name]
            if time.monotonic() > deadline:
                raise TimeoutError(f"CLI runs still going after {TIMEOUT} s: {sorted(running)}")
            time.sleep(0.1)
    finally:
        for p in running.values():
            p.kill()
            p.wait()
    return results


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def plankton_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("plankton:")]


@pytest.fixture(scope="module")
def runs(tiny_artifact, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    inputs = tmp / "inputs"
    inputs.mkdir()
    small = Image.open(FRAMES / FRAME_NAMES[0]).convert("RGB").resize((640, 360))
    small.convert("L").save(inputs / "gray.png")
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((640, 360)))
    rgba.save(inputs / "rgba.png")
    gray16 = (np.asarray(small.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16, mode="I;16").save(inputs / "gray16.png")
    assert Image.open(inputs / "gray16.png").mode.startswith("I;16")
    small.save(inputs / "good.png")
    shutil.copy(FRAMES / FRAME_NAMES[0], inputs / "big.jpg")  # 1920×1080, over --max-pixels below
    (inputs / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (inputs / "broken.coco.json").write_text('{"images": [')
    broken_model = shutil.copytree(tiny_artifact, tmp / "broken_model")
    (broken_model / "embedder.safetensors").unlink()

    out = {name: tmp / name for name in ("predict", "partial", "classify", "classify_broken", "broken_model")}
    model = ["--model", tiny_artifact]
    commands = {  # slowest first
        "predict": ["predict", FRAMES, inputs / "gray.png", inputs / "rgba.png", inputs / "gray16.png",
                    "--out", out["predict"], *model, "--det-conf", "0.001", "--annotate"],
        "partial": ["predict", inputs / "good.png", inputs / "corrupt.jpg", tmp / "does-not-exist.jpg",
                    inputs / "big.jpg", "--out", out["partial"], *model, "--max-pixels", "500000", "--quiet"],
        "classify": ["classify", FRAMES_COCO.relative_to(REPO), "--images", EXAMPLES.relative_to(REPO),
                     "--out", out["classify"], *model],
        "classify_broken": ["classify", inputs / "broken.coco.json", "--images", inputs,
                            "--out", out["classify_broken"], *model],
        "broken_model": ["predict", inputs / "good.png", "--out", out["broken_model"], "--model", broken_model],
        "info": ["info", *model, "--json"],
        "info_text": ["info", *model],
    }
    logs = tmp / "logs"
    logs.mkdir()
    return run_all(commands, MAX_PARALLEL, logs), out, inputs


def test_predict_writes_csv_coco_and_annotations(runs):
    results, out, inputs = runs
    r = results["predict"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    columns, rows = read_csv(out["predict"] / "detections.csv")
    assert columns[:8] == ["image", "x1", "y1", "x2", "y2", "det_score", "species", "similarity"]
    names = set(FRAME_NAMES) | {"gray.png", "rgba.png", "gray16.png"}
    assert len(rows) >= 1 and {row["image"] for row in rows} <= names
    assert {row["image"] for row in rows} & set(FRAME_NAMES), "the committed frames gave rows"
    sizes = {n: (1920, 1080) for n in FRAME_NAMES} | {n: (640, 360) for n in ("gray.png", "rgba.png", "gray16.png")}
    prototypes = set(json.loads(results["info"].stdout)["classes"])
    for row in rows:
        W, H = sizes[row["image"]]
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H
        assert float(row["det_score"]) >= 0.001 - 5e-5
        assert row["species"] in prototypes | {"unknown"}

    coco = json.loads((out["predict"] / "predictions.coco.json").read_text())
    assert sorted(im["file_name"] for im in coco["images"]) == sorted(names)
    assert {im["file_name"]: (im["width"], im["height"]) for im in coco["images"]} == sizes
    assert len(coco["annotations"]) == len(rows)
    assert "unknown" in {c["name"] for c in coco["categories"]}

    annotated = {p.name: Image.open(p).size for p in (out["predict"] / "annotated").iterdir()}
    assert annotated == {f"{n.rsplit('.', 1)[0]}.jpg": sizes[n] for n in names}


def test_predict_grayscale_rgba_and_16_bit_inputs(runs):
    results, out, _ = runs
    assert results["predict"].returncode == 0
    coco = json.loads((out["predict"] / "predictions.coco.json").read_text())
    assert {"gray.png", "rgba.png", "gray16.png"} <= {im["file_name"] for im in coco["images"]}


def test_predict_carries_on_past_bad_inputs(runs):
    results, out, inputs = runs
    r = results["partial"]
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = plankton_lines(r.stderr)
    assert len(lines) == 3, r.stderr
    assert len([line for line in lines if "corrupt.jpg" in line]) == 1
    assert len([line for line in lines if "does-not-exist.jpg" in line]) == 1
    big = [line for line in lines if "big.jpg" in line]
    assert len(big) == 1 and "exceeds the limit of 500000" in big[0] and "2073600" in big[0]
    _, rows = read_csv(out["partial"] / "detections.csv")
    assert len(rows) >= 1 and {row["image"] for row in rows} == {"good.png"}
    coco = json.loads((out["partial"] / "predictions.coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["good.png"]


def test_classify(runs, frames_coco, tiny_artifact):
    results, out, _ = runs
    r = results["classify"]
    assert r.returncode == 0, r.stderr
    columns, rows = read_csv(out["classify"] / "classifications.csv")
    assert columns[:4] == ["ann_id", "image", "species", "similarity"]
    assert len(rows) == 38 == len(frames_coco.boxes)
    assert sorted(int(row["ann_id"]) for row in rows) == sorted(b.id for b in frames_coco.boxes)
    file_of = {b.id: frames_coco.images[b.image_id].file_name for b in frames_coco.boxes}
    true_of = {b.id: frames_coco.categories[b.category_id].name for b in frames_coco.boxes}
    prototypes = set(json.loads((tiny_artifact / "config.json").read_text())["prototypes"]["names"])
    for row in rows:
        assert row["image"] == file_of[int(row["ann_id"])]
        assert row["true_species"] == true_of[int(row["ann_id"])]
        assert row["species"] in prototypes | {"unknown"}
        assert (row["species"] == "unknown") == (float(row["similarity"]) < 0.0)  # the tiny model's threshold is 0
        if row.get("top2"):  # the answer is the best match: the runner-up is another species, no closer
            assert row["top2"] != row["species"] and float(row["top2_similarity"]) <= float(row["similarity"])
    assert any(row.get("top2") for row in rows)


def _one_line_failure(r) -> None:
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def test_classify_broken_coco_file(runs):
    results, out, _ = runs
    r = results["classify_broken"]
    _one_line_failure(r)
    assert "broken.coco.json" in r.stderr and "not valid JSON" in r.stderr
    assert not (out["classify_broken"] / "classifications.csv").exists()


def test_model_folder_with_a_missing_file(runs):
    results, out, _ = runs
    r = results["broken_model"]
    _one_line_failure(r)
    assert r.stderr.startswith("plankton:") and "embedder.safetensors" in r.stderr and "missing" in r.stderr
    assert not (out["broken_model"] / "detections.csv").exists()


def test_info(runs, tiny_artifact):
    from plankton.artifact.gallery import closest_pairs
    from plankton.model.prototypes import Prototypes

    r = runs[0]["info"]
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["name"] == "random-test-model"
    assert info["classes"] == json.loads((tiny_artifact / "config.json").read_text())["prototypes"]["names"]
    assert info["detector"]["imgsz"] == 640 and info["embedder"]["backbone"] == "efficientnet_lite0"
    pairs = closest_pairs(Prototypes.load(tiny_artifact / "prototypes.safetensors"), 10)
    assert info["gallery"]["closest_pairs"] == pairs
    text = runs[0]["info_text"].stdout
    assert text.startswith("model: random-test-model") and "runtime: " in text
    assert f"  {pairs[0]['a']}" in text and f"{pairs[0]['cosine']:.3f}" in text  # the closest pairs, as text
