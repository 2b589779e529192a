"""A batch run that is killed midway resumes without redoing or
duplicating frames; a full disk while writing loses nothing."""
from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from repo_paths import EXAMPLES, REPO

pytestmark = pytest.mark.slow

N_FRAMES = 10


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frames")
    frames = sorted((EXAMPLES / "frames").glob("*.jpg"))
    for i in range(N_FRAMES):
        Image.open(frames[i % len(frames)]).convert("RGB").rotate(90 * (i // len(frames))).resize((640, 360)).save(out / f"f{i:02d}.jpg")
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cmd(folder, out, model, *extra):
    return [sys.executable, "-m", "plankton", "predict", str(folder), "--out", str(out), "--model", str(model), "--det-conf", "0.01", "--quiet", *extra]


def test_killed_run_resumes_without_duplicates(folder, tiny_artifact, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    clean = tmp_path / "clean"
    subprocess.run(_cmd(folder, clean, tiny_artifact), cwd=REPO, env=env, check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(folder, out, tiny_artifact), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal, deadline = out / ".progress.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:  # settings + 3 frames
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "detections.csv").exists(), "a killed run must not leave a results file that looks complete"
    done = len(journal.read_text().splitlines()) - 1
    assert 3 <= done < N_FRAMES

    again = subprocess.run(_cmd(folder, out, tiny_artifact, "--resume"), cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr and int(again.stderr.split("resuming: ")[1].split()[0]) >= done - 1  # a torn last line may be lost
    assert not journal.exists()
    resumed, expected = _rows(out / "detections.csv"), _rows(clean / "detections.csv")
    assert Counter(r["image"] for r in resumed) == Counter(r["image"] for r in expected)
    key = lambda r: (r["image"], r["x1"], r["y1"], r["det_score"])  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, expected))


def test_full_disk_while_writing_loses_nothing(folder, tiny_artifact, tmp_path, monkeypatch, capsys):
    import plankton.run.writers
    from plankton.cli import main

    real = plankton.run.writers.atomic_write_text

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    out = tmp_path / "out"
    monkeypatch.setattr(plankton.run.writers, "atomic_write_text", full_disk)
    assert main(_cmd(folder, out, tiny_artifact)[3:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [".progress.jsonl"], "no partial results, no temporary files"

    monkeypatch.setattr(plankton.run.writers, "atomic_write_text", real)
    assert main(_cmd(folder, out, tiny_artifact, "--resume")[3:]) == 0
    assert f"resuming: {N_FRAMES} frames already done" in capsys.readouterr().err
    assert Counter(r["image"] for r in _rows(out / "detections.csv")) and not (out / ".progress.jsonl").exists()


def test_resume_with_other_settings_starts_over(folder, tiny_artifact, tmp_path, capsys):
    from plankton.cli import main

    out = tmp_path / "out"
    (out).mkdir()
    (out / ".progress.jsonl").write_text('{"settings": {"det_conf": 0.9}}\n{"path": "x", "frame": {}}\n')
    assert main(_cmd(folder, out, tiny_artifact, "--resume")[3:]) == 0
    assert "starting over" in capsys.readouterr().err
    assert len({r["image"] for r in _rows(out / "detections.csv")}) >= 1
