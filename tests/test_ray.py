"""``predict --engine ray`` on local Ray clusters of 2 CPUs, run as users run
it (``python -m plankton`` in a subprocess): the same bytes as the local
engine, bad inputs reported once each, ``--resume`` sending no journaled
frame again, and an actor killed mid-run whose frames Ray retries.

The committed frames are shrunk to 640×360 (the tiny random model's input
size: full frames would only cost time) and packed into every kind of
input: a folder with a same-named frame in a sub-folder, a zip, a tar.gz,
a manifest and a glob.
"""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest
from PIL import Image

from repo_paths import REPO

TIMEOUT = 400
BAD = ("corrupt.jpg", "gone.jpg", "absent.jpg")  # a broken file, a manifest line naming nothing, an argument naming nothing
GOOD = 9


def env():
    return dict(os.environ, PYTHONPATH=str(REPO), YOLO_OFFLINE="true", YOLO_AUTOINSTALL="false")


def start(args, cwd, log: Path):
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "plankton", *map(str, args)], cwd=cwd, env=env(), stdout=out, stderr=err)


def finish(proc, log: Path):
    try:
        proc.wait(TIMEOUT)
    finally:
        proc.kill()
    return proc.returncode, Path(f"{log}.err").read_text()


def plankton_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("plankton:")]


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def frames(frames_coco) -> list[Image.Image]:
    return [Image.open(frames_coco.path_of(i)).convert("RGB").resize((640, 360)) for i in sorted(frames_coco.images)]


@pytest.fixture(scope="module")
def inputs(frames, tmp_path_factory) -> Path:
    """9 good frames in every kind of input, and 3 bad inputs."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "frames" / "sub").mkdir(parents=True)
    for i, im in enumerate(frames):
        im.save(root / "frames" / f"f{i}.jpg", quality=90)
    frames[0].rotate(180).save(root / "frames" / "sub" / "f0.jpg", quality=90)  # same name: annotated f0_1.jpg
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("z/z1.jpg", jpeg(frames[1].rotate(180)))
        zf.writestr("z2.jpg", jpeg(frames[2].rotate(180)))
    with tarfile.open(root / "pack.tar.gz", "w:gz") as tf:
        data = jpeg(frames[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        info = tarfile.TarInfo("t/t1.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (root / "extra").mkdir()
    frames[1].transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(root / "extra" / "m1.jpg", quality=90)
    frames[2].transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(root / "extra" / "g1.png")
    (root / "list.txt").write_text("# frames by name\nextra/m1.jpg\nframes/f1.jpg\n\ngone.jpg\n")  # f1 again: counted once
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


ARGS = ["frames", "pack.zip", "pack.tar.gz", "list.txt", "extra/*.png", "corrupt.jpg", "absent.jpg", "--det-conf", "0.01"]


@pytest.fixture(scope="module")
def runs(inputs, tiny_artifact, tmp_path_factory):
    """The local engine and the Ray engine (a local cluster it starts
    itself) on the same inputs, side by side."""
    tmp = tmp_path_factory.mktemp("runs")
    model = ["--model", tiny_artifact]
    procs = {"local": start([*["predict", *ARGS], "--out", tmp / "local", *model, "--annotate"], inputs, tmp / "local"),
             "ray": start([*["predict", *ARGS], "--out", tmp / "ray", *model, "--annotate",
                           "--engine", "ray", "--workers", "2", "--batch-size", "1"], inputs, tmp / "ray")}
    return {name: (*finish(p, tmp / name), tmp / name) for name, p in procs.items()}


@pytest.mark.slow
def test_same_output_as_the_local_engine(runs):
    (rc_local, _, local), (rc_ray, err_ray, ray_out) = runs["local"], runs["ray"]
    assert rc_local == 2 and rc_ray == 2, err_ray
    for name in ("detections.csv", "predictions.coco.json", "quality.csv", "embeddings.safetensors"):
        assert (ray_out / name).read_bytes() == (local / name).read_bytes(), name
    coco = json.loads((ray_out / "predictions.coco.json").read_text())
    assert len(coco["images"]) == GOOD and len(coco["annotations"]) >= GOOD
    names = [im["file_name"] for im in coco["images"]]
    assert names == sorted(names), "frames are written sorted"
    annotated = sorted(p.name for p in (local / "annotated").iterdir())
    assert annotated == sorted(p.name for p in (ray_out / "annotated").iterdir())
    assert "f0_1.jpg" in annotated and len(annotated) == GOOD
    for name in annotated:
        assert (ray_out / "annotated" / name).read_bytes() == (local / "annotated" / name).read_bytes(), name
    assert sorted(p.name for p in ray_out.iterdir()) == ["annotated", "detections.csv", "embeddings.safetensors", "predictions.coco.json", "quality.csv"]


@pytest.mark.slow
def test_bad_inputs_one_line_each(runs):
    for engine in ("local", "ray"):
        rc, err, _ = runs[engine]
        assert rc == 2, (engine, err)
        assert "Traceback" not in err, err
        lines = plankton_lines(err)
        for bad in BAD:
            assert len([line for line in lines if f"{bad}:" in line]) == 1, (engine, bad, lines)
        assert len(lines) == len(BAD), (engine, lines)
    assert sorted(plankton_lines(runs["local"][1])) == sorted(plankton_lines(runs["ray"][1]))


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 2 CPUs owned by this process; the runs below join it (--ray-address)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _settings(cascade, det_conf: float) -> dict:
    from plankton.run.batch import options, settings

    return settings(cascade, options(cascade, Namespace(det_conf=det_conf, cls_conf=None, tile=None, max_pixels=None, annotate=False)))


@pytest.mark.slow
def test_resume_sends_no_journaled_frame(cluster, inputs, runs, tiny_artifact, tiny_cascade, tmp_path):
    """The journal has two frames whose files are gone: were they sent
    again, their workers would fail to read them."""
    (tmp_path / "f1.jpg").write_bytes((inputs / "frames" / "f1.jpg").read_bytes())
    (tmp_path / "list.txt").write_text("f1.jpg\ngone1.jpg\ngone2.jpg\n")
    out = tmp_path / "out"
    out.mkdir()
    fake = lambda name: {"image": name, "width": 640, "height": 360, "objects": [[[1.0, 2.0, 3.0, 4.0], 0.5, "journaled", 0.25, []]]}  # noqa: E731
    records = [{"settings": _settings(tiny_cascade, 0.01)}] + [{"path": str(tmp_path / n), "frame": fake(n)} for n in ("gone1.jpg", "gone2.jpg")]
    (out / ".progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rc, err = finish(start(["predict", "list.txt", "--out", out, "--model", tiny_artifact, "--det-conf", "0.01", "--resume",
                            "--engine", "ray", "--ray-address", cluster, "--workers", "1"], tmp_path, tmp_path / "log"), tmp_path / "log")
    assert rc == 0, err
    assert plankton_lines(err) == ["plankton: resuming: 2 frames already done"], err
    rows = list(csv.DictReader(io.StringIO((out / "detections.csv").read_text())))
    assert [(r["image"], r["x1"], r["y2"], r["species"], r["similarity"]) for r in rows[-2:]] == [
        (n, "1.0", "4.0", "journaled", "0.2500") for n in ("gone1.jpg", "gone2.jpg")]  # the journal's results, not recomputed
    local = csv.DictReader(io.StringIO((runs["local"][2] / "detections.csv").read_text()))
    assert rows[:-2] == [r for r in local if r["image"] == "f1.jpg"]
    assert not (out / ".progress.jsonl").exists()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _actors() -> list[int]:
    """This process's Ray actors that run the model (Ray names the process after the actor)."""
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::MapWorker(MapBatches(_Predictor"):
                pids.append(pid)
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_killed_worker_is_retried(cluster, inputs, runs, tiny_artifact, tmp_path):
    """SIGKILL one of the two model actors once the first frame is in the
    journal: Ray restarts it and retries its block; every frame comes out
    once, as the local engine made it, and the bad input is named once."""
    out = tmp_path / "out"
    proc = start(["predict", "frames", "corrupt.jpg", "--det-conf", "0.01", "--out", out, "--model", tiny_artifact,
                  "--engine", "ray", "--ray-address", cluster, "--workers", "2", "--batch-size", "1"], inputs, tmp_path / "log")
    journal, killed, deadline = out / ".progress.jsonl", None, time.monotonic() + TIMEOUT
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        done = len(journal.read_text().splitlines()) - 1 if journal.exists() else 0
        actors = _actors() if done >= 1 else []
        if actors:
            os.kill(actors[0], signal.SIGKILL)
            killed = done
        time.sleep(0.05)
    assert killed is not None, "the run ended before an actor could be killed"
    assert killed < 4, "the kill came after every frame was done"
    rc, err = finish(proc, tmp_path / "log")
    assert rc == 2, err  # the bad input, nothing else
    assert "Traceback" not in err and len([line for line in plankton_lines(err) if "corrupt.jpg:" in line]) == 1, err
    rows = (out / "detections.csv").read_text().splitlines()
    local = (runs["local"][2] / "detections.csv").read_text().splitlines()
    assert rows == local[:1] + [r for r in local[1:] if r.split(",", 1)[0] in ("f0.jpg", "f1.jpg", "f2.jpg")]
    coco = json.loads((out / "predictions.coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["f0.jpg", "f0.jpg", "f1.jpg", "f2.jpg"]  # each frame once
    assert not journal.exists()


def test_without_ray_one_line_says_what_to_install(tmp_path):
    """Ray hidden from the interpreter (as if not installed): one line, exit 2, before any work."""
    code = ("import sys; sys.modules['ray'] = None; from plankton.cli import main; "
            f"sys.exit(main(['predict', {str(tmp_path)!r}, '--out', {str(tmp_path / 'out')!r}, '--engine', 'ray']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "plankton: --engine ray needs Ray Data: pip install -r requirements-scale.txt"
    assert not (tmp_path / "out").exists()
