"""Push to a Hub with the real huggingface_hub client, against the
project's own Hub-compatible server on 127.0.0.1 (tests/hub_server.py):
one commit per artifact, the card, tokens never printed, training's push.
Nothing here reaches a non-loopback address."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


from hub_common import REPO, REPO_ID, TOKEN, closed_port, hashes, resolve

pytestmark = pytest.mark.slow


def test_push_is_one_commit_with_every_file_and_lfs_for_large_files(hub, pushed, artifact_v1):
    from plankton.files import sha256

    repo = hub.repos[REPO_ID]
    sha = pushed["v1"]["commit_sha"]
    commit = repo.commits[sha]
    assert repo.tags["v1.0"] == sha
    assert commit.parent is not None and repo.commits[commit.parent].parent is None  # initial commit, then one push
    expected = {"config.json", "training.json", "taxonomy.csv", "detector.safetensors", "embedder.safetensors", "prototypes.safetensors",
                "validation.safetensors", "metrics.json", "confusion.png", "per_class.csv", "README.md", ".gitattributes"}
    assert set(commit.files) == expected
    assert pushed["v1"]["url"].endswith(f"/{REPO_ID}/commit/{sha}")
    # files over 10 MB went through LFS (batch + basic upload), with their sha256
    big = [p for p in artifact_v1.iterdir() if p.stat().st_size > 10 * 1024 * 1024]
    assert "validation.safetensors" in {p.name for p in big}
    for p in big:
        assert commit.files[p.name].lfs == sha256(p) and sha256(p) in hub.lfs_uploads
    assert commit.files["config.json"].lfs is None  # small files are regular git blobs
    # v2 went to branch dev, its own commit, and v1's extra files are not in it
    v2 = repo.commits[pushed["v2"]["commit_sha"]]
    assert repo.branches["dev"] == repo.tags["v2.0"] == pushed["v2"]["commit_sha"] != sha
    assert "confusion.png" not in v2.files and "metrics.json" in v2.files


def test_push_replaces_stale_files_and_refuses_existing_tag(hub, artifact_v1, artifact_v2, tmp_path):
    from hub.publish import PushError, push_artifact

    repo_id = "plankton-lab/stale"
    push_artifact(artifact_v1, repo_id, endpoint=hub.url)
    second = push_artifact(artifact_v2, repo_id, tag="v1", endpoint=hub.url)
    files = hub.repos[repo_id].commits[second["commit_sha"]].files
    assert "confusion.png" not in files and "validation.safetensors" not in files and "README.md" in files
    n = len(hub.repos[repo_id].commits)
    with pytest.raises(PushError, match="tag 'v1' already exists"):
        push_artifact(artifact_v1, repo_id, tag="v1", endpoint=hub.url)
    assert len(hub.repos[repo_id].commits) == n  # nothing was committed


def test_push_refuses_a_corrupt_artifact_before_any_request(hub, artifact_v1, tmp_path):
    from hub.publish import PushError, push_artifact

    bad = Path(shutil.copytree(artifact_v1, tmp_path / "bad"))
    data = bytearray((bad / "prototypes.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "prototypes.safetensors").write_bytes(bytes(data))
    before = len(hub.requests)
    with pytest.raises(PushError, match="prototypes.safetensors does not match its checksum"):
        push_artifact(bad, "plankton-lab/never", endpoint=hub.url)
    (bad / "notes.pt").write_bytes(b"\x80pickle")
    from plankton.artifact.manifest import write_manifest

    write_manifest(bad)
    with pytest.raises(PushError, match="notes.pt"):
        push_artifact(bad, "plankton-lab/never", endpoint=hub.url)
    assert len(hub.requests) == before and "plankton-lab/never" not in hub.repos


def test_private_repo_needs_the_token_to_pull(hub, artifact_v2, tmp_path, monkeypatch):
    from hub.publish import push_artifact

    result = push_artifact(artifact_v2, "plankton-lab/private", private=True, endpoint=hub.url)
    assert hub.repos["plankton-lab/private"].private
    from plankton.hub import resolve_model

    monkeypatch.delenv("HF_TOKEN")
    anon = resolve_model("plankton-lab/private", "main", timeout=5, cache_dir=tmp_path / "c1", endpoint=hub.url, bundled=tmp_path / "b")
    assert anon.source == "bundled" and "not found" in anon.description
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ok = resolve_model("plankton-lab/private", "main", timeout=5, cache_dir=tmp_path / "c2", endpoint=hub.url)
    assert ok.source == "hub" and ok.commit == result["commit_sha"]


# -- the card ------------------------------------------------------------------
def test_card_has_valid_hub_metadata_and_a_human_summary(hub, pushed, artifact_v1, tmp_path):
    from huggingface_hub import ModelCard, hf_hub_download

    from plankton.artifact.card import build_card
    from plankton.artifact.manifest import read_config

    path = hf_hub_download(REPO_ID, "README.md", revision="v1.0", cache_dir=tmp_path, endpoint=hub.url)
    card = ModelCard.load(path)  # huggingface_hub's own loader and parser, model-index included
    text = card.content
    meta = card.data.to_dict()
    assert meta["library_name"] == "plankton" and meta["pipeline_tag"] == "object-detection" and meta["license"] == "apache-2.0"
    assert "plankton" in meta["tags"]
    results = {(r.task_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("object-detection", "ap50")] == 0.61 and results[("object-detection", "species_ap50")] == 0.44
    assert results[("image-classification", "top1")] == 0.83 and results[("image-classification", "f1_macro")] == 0.71
    assert not {"threshold", "objects", "species", "detector_floor", "validation_frames", "wall_s", "cpus"} & {m for _, m in results}
    config = read_config(artifact_v1)
    body = text.split("\n---\n", 1)[1]
    for name in config["prototypes"]["names"]:
        assert name in body
    assert "0.61" in body and "0.83" in body and "val_frames: 10" in body and "## Limits" in body and "unknown" in body
    assert f"| {config['prototypes']['names'][0]} | 0.9 | 0.8 | 0.85 | 10 |" in body  # the per-species table
    # without metrics.json the card says so, and its YAML is still valid
    bare = build_card(config | {"training": None}, None, repo_id=REPO_ID)
    assert "model-index" not in bare.data.to_dict() and not bare.data.eval_results
    assert "Not measured" in bare.content and "Not recorded" in bare.content
    assert ModelCard(str(bare)).data.library_name == "plankton"


# -- pull ----------------------------------------------------------------------
def test_round_trip_identical_files_and_loadable(hub, pushed, artifact_v1, tmp_path):
    from plankton.pipeline.load import load_artifact

    sha = pushed["v1"]["commit_sha"]
    resolved, _ = resolve(hub.url, sha, tmp_path)
    assert resolved.source == "hub" and resolved.commit == sha
    assert resolved.description == f"Hub {REPO_ID}@{sha[:7]}"
    assert hashes(resolved.path) == hashes(artifact_v1)  # README.md is not fetched: not an artifact file
    cascade = load_artifact(resolved.path)
    assert cascade.config["name"] == "test-model-v1"


def test_token_is_never_printed_or_logged(hub, artifact_v2, tmp_path, capfd, caplog):
    from huggingface_hub.utils import logging as hf_logging

    from hub.publish import push_artifact
    from plankton.hub import resolve_model

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_debug()
    try:
        with caplog.at_level(logging.DEBUG):
            result = push_artifact(artifact_v2, "plankton-lab/token-check", tag="v1", endpoint=hub.url)
            resolve_model("plankton-lab/token-check", "v1", timeout=5, cache_dir=tmp_path, endpoint=hub.url)
            from hub.push import main

            assert main(["push", str(artifact_v2), "--repo", "bad/x", "--endpoint", f"http://127.0.0.1:{closed_port()}"]) == 1
            assert main(["push", str(artifact_v2), "--repo", "plankton-lab/token-check", "--tag", "v1", "--endpoint", hub.url]) == 1
    finally:
        hf_logging.set_verbosity(level)
    out, err = capfd.readouterr()
    assert "hub: push failed: ConnectError" in err and "hub: tag 'v1' already exists" in err
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert result["commit_sha"] and f"Bearer {TOKEN}" in hub.authorizations  # the token was used...
    assert TOKEN not in out and TOKEN not in err and TOKEN not in logged  # ...and never shown
    assert TOKEN[3:20] not in out + err + logged


def test_cli_push_prints_the_commit_never_the_token(hub, artifact_v2, tmp_path):
    """The real command line, in its own process (a failing push is checked in-process above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hub", "push", str(artifact_v2), "--repo", "plankton-lab/cli", "--revision", "exp", "--tag", "v0.1", "--endpoint", hub.url]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    sha = p.stdout.strip()
    assert hub.repos["plankton-lab/cli"].tags["v0.1"] == hub.repos["plankton-lab/cli"].branches["exp"] == sha
    assert TOKEN not in p.stdout + p.stderr


def test_training_script_helpers(hub, artifact_v2):
    import argparse

    from hub.push import add_push_arguments, push_from_args

    parser = add_push_arguments(argparse.ArgumentParser())
    assert push_from_args(artifact_v2, parser.parse_args([])) is None
    args = parser.parse_args(["--push-to-hub", "plankton-lab/from-training", "--hub-tag", "v3", "--hub-private"])
    from huggingface_hub import constants  # push_from_args uses the default endpoint (HF_ENDPOINT): patch it

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "ENDPOINT", hub.url)
        result = push_from_args(artifact_v2, args)
    repo = hub.repos["plankton-lab/from-training"]
    assert repo.private and repo.tags["v3"] == result["commit_sha"]


# -- a training script's push, then the app's start-up pull ---------------------
def test_training_script_push_then_app_start_pull(hub, tiny_artifact, tmp_path, monkeypatch):
    """training.evaluate --push-to-hub publishes the evaluated artifact; the
    app's start-up resolution (PLANKTON_MODEL_REPO/REVISION) pulls the same
    bytes and loads them."""
    from repo_paths import FRAMES_COCO
    from plankton_app.service import Service
    from training import evaluate, prepare

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    data = tmp_path / "data"
    prepare.main(["--coco", str(FRAMES_COCO), "--out", str(data), "--val-fraction", "0.34"])
    model = Path(shutil.copytree(tiny_artifact, tmp_path / "model"))
    evaluate.main(["--model", str(model), "--data", str(data), "--no-umap", "--det-floor", "0.05", "--e2e-floor", "0.2",
                   "--push-to-hub", "plankton-lab/trained", "--hub-revision", "trained", "--hub-tag", "v0.1"])
    monkeypatch.setenv("PLANKTON_MODEL_REPO", "plankton-lab/trained")
    monkeypatch.setenv("PLANKTON_MODEL_REVISION", "v0.1")
    service = Service.load()  # app.py's start-up resolution
    folder = service.folder
    assert service.description.startswith("Hub plankton-lab/trained@")
    assert hashes(folder) == {k: v for k, v in hashes(model).items() if k in hashes(folder)}
    assert {"metrics.json", "validation.safetensors", "config.json"} <= set(hashes(folder))
    assert service.config["name"] == "random-test-model"
