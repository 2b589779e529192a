"""Pull from a Hub with the real huggingface_hub client, against the
project's own Hub-compatible server on 127.0.0.1 (tests/hub_server.py):
revisions, the cache, faults and fallbacks. Nothing here reaches a
non-loopback address."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest


from hub_common import REPO_ID, TIMEOUT, TOKEN, closed_port, hashes, resolve
from hub_server import HubServer

pytestmark = pytest.mark.slow


def test_revisions_by_branch_tag_and_full_sha(hub, pushed, artifact_v1, artifact_v2, tmp_path):
    v1, v2 = pushed["v1"]["commit_sha"], pushed["v2"]["commit_sha"]
    for revision, sha, folder in (("main", v1, artifact_v1), ("v1.0", v1, artifact_v1), ("dev", v2, artifact_v2), ("v2.0", v2, artifact_v2), (v2, v2, artifact_v2)):
        resolved, _ = resolve(hub.url, revision, tmp_path / "cache")
        assert (resolved.source, resolved.commit) == ("hub" if revision != v2 else "cache", sha), revision
        assert f"@{sha[:7]}" in resolved.description
        assert hashes(resolved.path) == hashes(folder)
    assert "(dev)" in resolve(hub.url, "dev", tmp_path / "cache")[0].description
    from plankton.hub import HubModelError

    with pytest.raises(HubModelError, match="no-such-branch: revision not found on the Hub"):
        resolve(hub.url, "no-such-branch", tmp_path / "cache2", strict=True)


def test_pinned_sha_in_cache_needs_no_network(hub, pushed, tmp_path):
    sha = pushed["v1"]["commit_sha"]
    first, _ = resolve(hub.url, sha, tmp_path)
    n = len(hub.requests)
    again, _ = resolve(hub.url, sha, tmp_path)
    assert first.source == "hub" and again.source == "cache" and again.path == first.path
    assert len(hub.requests) == n


def test_refused_port_falls_back_to_cache_then_bundled(hub, pushed, tmp_path):
    cached, _ = resolve(hub.url, "v1.0", tmp_path / "cache")
    dead = f"http://127.0.0.1:{closed_port()}"
    resolved, elapsed = resolve(dead, "v1.0", tmp_path / "cache", timeout=TIMEOUT)
    assert resolved.source == "cache" and resolved.path == cached.path and elapsed < 3 * TIMEOUT
    assert resolved.description == f"cached copy of {REPO_ID}@{cached.commit[:7]} (v1.0), Hub unreachable"
    resolved, elapsed = resolve(dead, "v1.0", tmp_path / "empty", timeout=TIMEOUT)
    assert resolved.source == "bundled" and resolved.path == Path("/nonexistent/bundled-model") and elapsed < 3 * TIMEOUT
    assert "Hub unreachable" in resolved.description and "no usable cached copy" in resolved.description


@pytest.mark.parametrize("hang_on", ["", "/resolve/"], ids=["every-request", "file-download"])
def test_server_that_never_answers_falls_back_within_bounded_time(hub, pushed, tmp_path, hang_on):
    cached, _ = resolve(hub.url, "v1.0", tmp_path / "cache")
    with HubServer(token=TOKEN) as silent:
        silent.repos = hub.repos  # same content, so the hang is the only difference
        silent.objects = hub.objects
        silent.hang = hang_on
        # When only file downloads hang, the revision still resolves and the
        # cached files need no download: that is a genuine Hub answer.
        expect = (("cache", "cache"), ("empty", "bundled")) if hang_on == "" else (("cache", "hub"), ("empty", "bundled"))
        for cache, source in expect:
            resolved, elapsed = resolve(silent.url, "v1.0", tmp_path / cache, timeout=TIMEOUT)
            assert resolved.source == source and elapsed < 3 * TIMEOUT, (resolved, elapsed)
            if source != "hub":
                assert f"did not answer within {TIMEOUT:g} s" in resolved.description
            else:
                assert resolved.path == cached.path
        assert any(hang_on in path for _, path in silent.requests)  # requests were made, and left hanging


def test_offline_mode_uses_the_cache_without_requests(hub, pushed, tmp_path, monkeypatch):
    cached, _ = resolve(hub.url, "dev", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    resolved, _ = resolve(hub.url, "dev", tmp_path)
    assert resolved.source == "cache" and resolved.path == cached.path and "offline" in resolved.description
    assert len(hub.requests) == n


def test_tampered_download_is_refused_and_not_kept(hub, pushed, tmp_path, caplog):
    from plankton.hub import HubModelError

    hub.tamper = {"embedder.safetensors"}
    with caplog.at_level(logging.WARNING, logger="plankton.hub"):
        resolved, _ = resolve(hub.url, "v1.0", tmp_path)
    assert resolved.source == "bundled"
    assert "embedder.safetensors does not match its checksum in config.json (corrupt or tampered)" in resolved.description
    assert any("embedder.safetensors does not match" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)
    with pytest.raises(HubModelError, match="embedder.safetensors does not match its checksum"):
        resolve(hub.url, "v1.0", tmp_path, strict=True)
    hub.tamper.clear()  # the refused bytes were dropped from the cache: a later start gets a good copy
    resolved, _ = resolve(hub.url, "v1.0", tmp_path)
    assert resolved.source == "hub" and resolved.commit == pushed["v1"]["commit_sha"]


def test_tampered_cache_is_refused_and_fetched_again(hub, pushed, tmp_path):
    sha = pushed["v1"]["commit_sha"]
    first, _ = resolve(hub.url, sha, tmp_path)
    target = (first.path / "prototypes.safetensors").resolve()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    resolved, _ = resolve(hub.url, sha, tmp_path)
    assert resolved.source == "hub" and resolved.path == first.path
    assert any("cached copy" in p and "prototypes.safetensors does not match" in p for p in resolved.problems)
    from plankton.artifact.manifest import read_config

    read_config(resolved.path, check_files=True)  # the fresh copy is good


def test_repo_missing_a_file_gets_an_error_naming_it(hub, pushed, tmp_path):
    from huggingface_hub import HfApi

    from plankton.hub import HubModelError

    HfApi(endpoint=hub.url, token=TOKEN).create_branch(REPO_ID, branch="broken", revision=pushed["v1"]["commit_sha"])
    hub.delete_file(REPO_ID, "prototypes.safetensors", revision="broken")
    with pytest.raises(HubModelError) as e:
        resolve(hub.url, "broken", tmp_path, strict=True)
    assert "prototypes.safetensors is listed in config.json but missing from the repo" in str(e.value)
    assert "\n" not in str(e.value)
    resolved, _ = resolve(hub.url, "broken", tmp_path)
    assert resolved.source == "bundled" and "prototypes.safetensors is listed in config.json but missing" in resolved.description


def test_no_repo_means_the_bundled_model_and_env_configures_it(hub, pushed, tmp_path, monkeypatch):
    from plankton.artifact.manifest import DEFAULT_MODEL_DIR
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
    from hub.publish import push_artifact
    from plankton.artifact.manifest import read_config, write_manifest
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
