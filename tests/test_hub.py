"""Push to and pull from a Hub, with the real huggingface_hub client against
the project's own Hub-compatible server on 127.0.0.1 (tests/hub_server.py).
Nothing here reaches a non-loopback address."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hub_server import HubServer

pytestmark = pytest.mark.slow

TOKEN = "hf_TESTtokenNeverPrinted0123456789abcdef"
REPO_ID = "plankton-lab/test-model"
REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 1.0


# -- environment ---------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def hub_settings(hf_constants):
    """The shared huggingface_hub settings of conftest, for every test here."""
    yield


@pytest.fixture(autouse=True)
def hf_env(monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE", "PLANKTON_MODEL_REPO", "PLANKTON_MODEL_REVISION", "PLANKTON_HUB_TIMEOUT", "PLANKTON_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


# -- artifacts -----------------------------------------------------------------
def _decorate(folder: Path, *, version: str, metrics: bool = True, extras: bool = True) -> Path:
    """Add what an evaluated artifact carries: metrics.json, the embedding-plot
    data, a plot and a table, and training details; then rewrite the manifest."""
    from PIL import Image

    from plankton.manifest import read_config, write_manifest
    from plankton.validation import FILE, ValidationSet

    config = read_config(folder, check_files=False)
    names = config["prototypes"]["names"]
    config["name"] = f"test-model-{version}"
    config["license"] = "apache-2.0"
    config["training"] = {"dataset": "tests/data frames (committed sample)", "split": {"train_frames": 30, "val_frames": 10, "by": "frame"}, "seed": 0}
    if metrics:
        (folder / "metrics.json").write_text(json.dumps({  # the shape training/evaluate.py writes
            "split": {"validation_frames": 10, "validation_objects": 40, "annotations_sha256": "0" * 64},
            "detection": {"ap50": 0.61, "ap50_95": 0.33, "recall": 0.7, "threshold": 0.05},
            "identification": {"objects": 40, "species": 5, "top1": 0.83, "top5": 0.95, "f1_macro": 0.71, "threshold": 0.5,
                               "per_class": [{"species": names[0], "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10}],
                               "coverage": [{"threshold": 0.5, "coverage": 0.9, "accuracy": 0.8}]},
            "end_to_end": {"species_ap50": 0.44, "detector_floor": 0.01},
            "learning_curve": None,
            "evaluation": {"command": "python -m training.evaluate", "hardware": {"cpus": 2}, "wall_s": 12.5, "version": version},
        }))
    if extras:
        rng = np.random.default_rng(0)
        n, c = 11_000, len(names)  # > 10 MB of float16 embeddings: an LFS file whatever the weights' dtype
        emb = rng.normal(size=(n, 512)).astype(np.float32)
        ValidationSet(emb / np.linalg.norm(emb, axis=1, keepdims=True), [names[i % c] for i in range(n)], rng.random((n, c), dtype=np.float32),
                      names, rng.random((n, 2), dtype=np.float32), rng.random((c, 2), dtype=np.float32)).save(folder / FILE)
        Image.new("RGB", (8, 8), (0, 128, 255)).save(folder / "confusion.png")
        (folder / "per_class.csv").write_text("species,precision\n" + "".join(f"{n},0.5\n" for n in names))
    write_manifest(folder, config)
    return folder


@pytest.fixture(scope="module")
def artifact_v1(tiny_artifact, tmp_path_factory) -> Path:
    return _decorate(Path(shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("v1") / "model")), version="v1")


@pytest.fixture(scope="module")
def artifact_v2(tiny_artifact, tmp_path_factory) -> Path:
    return _decorate(Path(shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("v2") / "model")), version="v2", extras=False)


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub, artifact_v1, artifact_v2) -> dict:
    """v1 on main, tagged v1.0; v2 on branch dev, tagged v2.0."""
    from plankton.publish import push_artifact

    v1 = push_artifact(artifact_v1, REPO_ID, tag="v1.0", token=TOKEN, endpoint=hub.url)
    v2 = push_artifact(artifact_v2, REPO_ID, revision="dev", tag="v2.0", token=TOKEN, endpoint=hub.url)
    return {"v1": v1, "v2": v2}


@pytest.fixture(autouse=True)
def no_faults(request):
    yield
    if "hub" in request.fixturenames:
        server = request.getfixturevalue("hub")
        server.tamper.clear()
        server.hang = None


def _hashes(folder: Path) -> dict:
    from plankton.files import sha256

    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resolve(hub_url, revision, cache, **kw):
    from plankton.hub import resolve_model

    kw.setdefault("bundled", Path("/nonexistent/bundled-model"))
    start = time.monotonic()
    # a generous bound where the test is not about time: on a loaded 2-core machine one refused connection costs
    # huggingface_hub's retry back-off (2 s, then 4 s), which a 5 s bound turned into a fallback to the bundled model
    resolved = resolve_model(REPO_ID, revision, timeout=kw.pop("timeout", TIMEOUT * 20), cache_dir=cache, endpoint=hub_url, **kw)
    return resolved, time.monotonic() - start


# -- push ----------------------------------------------------------------------
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
    from plankton.publish import PushError, push_artifact

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
    from plankton.publish import PushError, push_artifact

    bad = Path(shutil.copytree(artifact_v1, tmp_path / "bad"))
    data = bytearray((bad / "prototypes.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "prototypes.safetensors").write_bytes(bytes(data))
    before = len(hub.requests)
    with pytest.raises(PushError, match="prototypes.safetensors does not match its checksum"):
        push_artifact(bad, "plankton-lab/never", endpoint=hub.url)
    (bad / "notes.pt").write_bytes(b"\x80pickle")
    from plankton.manifest import write_manifest

    write_manifest(bad)
    with pytest.raises(PushError, match="notes.pt"):
        push_artifact(bad, "plankton-lab/never", endpoint=hub.url)
    assert len(hub.requests) == before and "plankton-lab/never" not in hub.repos


def test_private_repo_needs_the_token_to_pull(hub, artifact_v2, tmp_path, monkeypatch):
    from plankton.publish import push_artifact

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

    from plankton.card import build_card
    from plankton.manifest import read_config

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
    from plankton.artifact import load_artifact

    sha = pushed["v1"]["commit_sha"]
    resolved, _ = _resolve(hub.url, sha, tmp_path)
    assert resolved.source == "hub" and resolved.commit == sha
    assert resolved.description == f"Hub {REPO_ID}@{sha[:7]}"
    assert _hashes(resolved.path) == _hashes(artifact_v1)  # README.md is not fetched: not an artifact file
    cascade = load_artifact(resolved.path)
    assert cascade.config["name"] == "test-model-v1"


def test_revisions_by_branch_tag_and_full_sha(hub, pushed, artifact_v1, artifact_v2, tmp_path):
    v1, v2 = pushed["v1"]["commit_sha"], pushed["v2"]["commit_sha"]
    for revision, sha, folder in (("main", v1, artifact_v1), ("v1.0", v1, artifact_v1), ("dev", v2, artifact_v2), ("v2.0", v2, artifact_v2), (v2, v2, artifact_v2)):
        resolved, _ = _resolve(hub.url, revision, tmp_path / "cache")
        assert (resolved.source, resolved.commit) == ("hub" if revision != v2 else "cache", sha), revision
        assert f"@{sha[:7]}" in resolved.description
        assert _hashes(resolved.path) == _hashes(folder)
    assert "(dev)" in _resolve(hub.url, "dev", tmp_path / "cache")[0].description
    from plankton.hub import HubModelError

    with pytest.raises(HubModelError, match="no-such-branch: revision not found on the Hub"):
        _resolve(hub.url, "no-such-branch", tmp_path / "cache2", strict=True)


def test_pinned_sha_in_cache_needs_no_network(hub, pushed, tmp_path):
    sha = pushed["v1"]["commit_sha"]
    first, _ = _resolve(hub.url, sha, tmp_path)
    n = len(hub.requests)
    again, _ = _resolve(hub.url, sha, tmp_path)
    assert first.source == "hub" and again.source == "cache" and again.path == first.path
    assert len(hub.requests) == n


def test_refused_port_falls_back_to_cache_then_bundled(hub, pushed, tmp_path):
    cached, _ = _resolve(hub.url, "v1.0", tmp_path / "cache")
    dead = f"http://127.0.0.1:{_closed_port()}"
    resolved, elapsed = _resolve(dead, "v1.0", tmp_path / "cache", timeout=TIMEOUT)
    assert resolved.source == "cache" and resolved.path == cached.path and elapsed < 3 * TIMEOUT
    assert resolved.description == f"cached copy of {REPO_ID}@{cached.commit[:7]} (v1.0), Hub unreachable"
    resolved, elapsed = _resolve(dead, "v1.0", tmp_path / "empty", timeout=TIMEOUT)
    assert resolved.source == "bundled" and resolved.path == Path("/nonexistent/bundled-model") and elapsed < 3 * TIMEOUT
    assert "Hub unreachable" in resolved.description and "no usable cached copy" in resolved.description


@pytest.mark.parametrize("hang_on", ["", "/resolve/"], ids=["every-request", "file-download"])
def test_server_that_never_answers_falls_back_within_bounded_time(hub, pushed, tmp_path, hang_on):
    cached, _ = _resolve(hub.url, "v1.0", tmp_path / "cache")
    with HubServer(token=TOKEN) as silent:
        silent.repos = hub.repos  # same content, so the hang is the only difference
        silent.objects = hub.objects
        silent.hang = hang_on
        # When only file downloads hang, the revision still resolves and the
        # cached files need no download: that is a genuine Hub answer.
        expect = (("cache", "cache"), ("empty", "bundled")) if hang_on == "" else (("cache", "hub"), ("empty", "bundled"))
        for cache, source in expect:
            resolved, elapsed = _resolve(silent.url, "v1.0", tmp_path / cache, timeout=TIMEOUT)
            assert resolved.source == source and elapsed < 3 * TIMEOUT, (resolved, elapsed)
            if source != "hub":
                assert f"did not answer within {TIMEOUT:g} s" in resolved.description
            else:
                assert resolved.path == cached.path
        assert any(hang_on in path for _, path in silent.requests)  # requests were made, and left hanging


def test_offline_mode_uses_the_cache_without_requests(hub, pushed, tmp_path, monkeypatch):
    cached, _ = _resolve(hub.url, "dev", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    resolved, _ = _resolve(hub.url, "dev", tmp_path)
    assert resolved.source == "cache" and resolved.path == cached.path and "offline" in resolved.description
    assert len(hub.requests) == n


def test_tampered_download_is_refused_and_not_kept(hub, pushed, tmp_path, caplog):
    from plankton.hub import HubModelError

    hub.tamper = {"embedder.safetensors"}
    with caplog.at_level(logging.WARNING, logger="plankton.hub"):
        resolved, _ = _resolve(hub.url, "v1.0", tmp_path)
    assert resolved.source == "bundled"
    assert "embedder.safetensors does not match its checksum in config.json (corrupt or tampered)" in resolved.description
    assert any("embedder.safetensors does not match" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)
    with pytest.raises(HubModelError, match="embedder.safetensors does not match its checksum"):
        _resolve(hub.url, "v1.0", tmp_path, strict=True)
    hub.tamper.clear()  # the refused bytes were dropped from the cache: a later start gets a good copy
    resolved, _ = _resolve(hub.url, "v1.0", tmp_path)
    assert resolved.source == "hub" and resolved.commit == pushed["v1"]["commit_sha"]


def test_tampered_cache_is_refused_and_fetched_again(hub, pushed, tmp_path):
    sha = pushed["v1"]["commit_sha"]
    first, _ = _resolve(hub.url, sha, tmp_path)
    target = (first.path / "prototypes.safetensors").resolve()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    resolved, _ = _resolve(hub.url, sha, tmp_path)
    assert resolved.source == "hub" and resolved.path == first.path
    assert any("cached copy" in p and "prototypes.safetensors does not match" in p for p in resolved.problems)
    from plankton.manifest import read_config

    read_config(resolved.path, check_files=True)  # the fresh copy is good


def test_repo_missing_a_file_gets_an_error_naming_it(hub, pushed, tmp_path):
    from huggingface_hub import HfApi

    from plankton.hub import HubModelError

    HfApi(endpoint=hub.url, token=TOKEN).create_branch(REPO_ID, branch="broken", revision=pushed["v1"]["commit_sha"])
    hub.delete_file(REPO_ID, "prototypes.safetensors", revision="broken")
    with pytest.raises(HubModelError) as e:
        _resolve(hub.url, "broken", tmp_path, strict=True)
    assert "prototypes.safetensors is listed in config.json but missing from the repo" in str(e.value)
    assert "\n" not in str(e.value)
    resolved, _ = _resolve(hub.url, "broken", tmp_path)
    assert resolved.source == "bundled" and "prototypes.safetensors is listed in config.json but missing" in resolved.description


def test_no_repo_means_the_bundled_model_and_env_configures_it(hub, pushed, tmp_path, monkeypatch):
    from plankton.manifest import DEFAULT_MODEL_DIR
    from plankton.hub import resolve_model, resolve_model_from_env

    plain = resolve_model()
    assert (plain.source, plain.path, plain.description) == ("bundled", DEFAULT_MODEL_DIR, "bundled default")
    monkeypatch.setenv("PLANKTON_MODEL_DIR", str(tmp_path))
    assert resolve_model_from_env().description == f"from PLANKTON_MODEL_DIR ({tmp_path})"  # as the app and the CLI word it
    monkeypatch.delenv("PLANKTON_MODEL_DIR")
    monkeypatch.setenv("PLANKTON_MODEL_REPO", REPO_ID)
    monkeypatch.setenv("PLANKTON_MODEL_REVISION", "v2.0")
    monkeypatch.setenv("PLANKTON_HUB_TIMEOUT", "5")
    resolved = resolve_model_from_env(cache_dir=tmp_path, endpoint=hub.url)
    assert resolved.source == "hub" and resolved.commit == pushed["v2"]["commit_sha"]
    # a flag beats the environment
    assert resolve_model_from_env(revision="v1.0", cache_dir=tmp_path, endpoint=hub.url).commit == pushed["v1"]["commit_sha"]


def test_load_resolved_falls_back_when_a_verified_copy_does_not_load(hub, artifact_v2, tmp_path, monkeypatch):
    from plankton.publish import push_artifact
    from plankton.manifest import read_config, write_manifest
    from plankton.hub import load_resolved

    broken = Path(shutil.copytree(artifact_v2, tmp_path / "broken"))
    config = read_config(broken)
    config["embedder"]["dim"] = 256  # checksums still match; the weights no longer fit the architecture
    write_manifest(broken, config)
    push_artifact(broken, "plankton-lab/incompatible", endpoint=hub.url)
    monkeypatch.setenv("PLANKTON_MODEL_DIR", str(artifact_v2))
    cascade, resolved = load_resolved("plankton-lab/incompatible", cache_dir=tmp_path / "cache", endpoint=hub.url, timeout=5)
    assert resolved.source == "bundled" and resolved.path == artifact_v2 and cascade.config["name"] == "test-model-v2"
    assert resolved.description.startswith(f"from PLANKTON_MODEL_DIR ({artifact_v2}) (Hub plankton-lab/incompatible@")
    assert "does not load" in resolved.description and "\n" not in resolved.description


# -- tokens --------------------------------------------------------------------
def test_token_is_never_printed_or_logged(hub, artifact_v2, tmp_path, capfd, caplog):
    from huggingface_hub.utils import logging as hf_logging

    from plankton.publish import push_artifact
    from plankton.hub import resolve_model

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_debug()
    try:
        with caplog.at_level(logging.DEBUG):
            result = push_artifact(artifact_v2, "plankton-lab/token-check", tag="v1", endpoint=hub.url)
            resolve_model("plankton-lab/token-check", "v1", timeout=5, cache_dir=tmp_path, endpoint=hub.url)
            from hub.push import main

            assert main(["push", str(artifact_v2), "--repo", "bad/x", "--endpoint", f"http://127.0.0.1:{_closed_port()}"]) == 1
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
    from conftest import FRAMES_COCO
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
    assert _hashes(folder) == {k: v for k, v in _hashes(model).items() if k in _hashes(folder)}
    assert {"metrics.json", "validation.safetensors", "config.json"} <= set(_hashes(folder))
    assert service.config["name"] == "random-test-model"
