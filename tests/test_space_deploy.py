"""`python -m hub space`: deploy the demo Space, with the real huggingface_hub
client against the project's own Hub-compatible server (tests/hub_server.py),
then run what was uploaded. Nothing here reaches a non-loopback address."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hub_server import HubServer

pytestmark = pytest.mark.slow

TOKEN = "hf_TESTwriteTokenForSpaces0123456789abcd"  # the deploying account's (write)
READ_TOKEN = "hf_TESTreadOnlySpaceSecret9876543210zyx"  # the fine-grained read-only token the Space gets
MODEL, PRIVATE_MODEL = "plankton-lab/space-model", "plankton-lab/private-model"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def hub_settings(hf_constants):
    """The shared huggingface_hub settings of conftest, and the deploying account's token, for every test here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", TOKEN)
        yield


def _renamed(base: Path, dest: Path, name: str) -> Path:
    """A copy of an artifact under another name (so config.json, and only it, differs). At most 20
    detections a frame: the random detector's 300 would make the app's warm-up embed 300 crops."""
    from plankton.artifact.manifest import read_config, write_manifest

    folder = Path(shutil.copytree(base, dest))
    config = read_config(folder, check_files=False)
    config["name"] = name
    config["detector"]["max_det"] = 20
    write_manifest(folder, config)
    return folder


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN, read_tokens=(READ_TOKEN,)) as server:
        yield server


@pytest.fixture(scope="module")
def bundle(tiny_artifact, tmp_path_factory) -> Path:
    """A small stand-in for models/default (the real one is 42 MB)."""
    return _renamed(tiny_artifact, tmp_path_factory.mktemp("bundle") / "default", "bundled-test-model")


@pytest.fixture(scope="module")
def models(hub, tiny_artifact, tmp_path_factory) -> dict:
    """MODEL: v1.0 then v2.0 on main; PRIVATE_MODEL: v1.0. Returns the commit shas."""
    from hub.publish import push_artifact

    tmp = tmp_path_factory.mktemp("models")
    v1, v2 = _renamed(tiny_artifact, tmp / "v1", "hub-model-v1"), _renamed(tiny_artifact, tmp / "v2", "hub-model-v2")
    return {"v1": push_artifact(v1, MODEL, tag="v1.0", endpoint=hub.url)["commit_sha"],
            "v2": push_artifact(v2, MODEL, tag="v2.0", endpoint=hub.url)["commit_sha"],
            "private": push_artifact(v2, PRIVATE_MODEL, tag="v1.0", private=True, endpoint=hub.url)["commit_sha"]}


def _cli(hub, *args) -> tuple[int, str, str]:
    """`python -m hub space …` in this process; returns (status, stdout, stderr)."""
    from hub.push import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["space", *args, "--endpoint", hub.url])
    return code, out.getvalue(), err.getvalue()


def _tree(hub, space: str) -> dict[str, bytes]:
    repo = hub.spaces[space]
    return {p: hub.objects[e.key] for p, e in repo.commits[repo.branches["main"]].files.items()}


@pytest.fixture(scope="module")
def demo(hub, models, bundle) -> dict:
    """A first deploy of plankton-lab/demo, pinned to v1.0 (a tag)."""
    code, out, err = _cli(hub, "plankton-lab/demo", "--model-repo", MODEL, "--model-revision", "v1.0", "--model-dir", str(bundle))
    assert code == 0, err
    return {"out": out, "commit": hub.spaces["plankton-lab/demo"].branches["main"]}


# -- deploy --------------------------------------------------------------------
def test_dry_run_lists_files_size_and_variables_and_uploads_nothing(hub, models, bundle):
    from hub.space import space_files

    before = len(hub.requests)
    code, out, err = _cli(hub, "plankton-lab/dry", "--model-repo", MODEL, "--model-revision", "v2.0", "--model-dir", str(bundle), "--dry-run")
    assert code == 0, err
    files = space_files(model_dir=bundle)
    assert all(f"  {path}\n" in out for path in files)
    assert f"{len(files)} files, " in out and " MB in total" in out
    assert f"variable PLANKTON_MODEL_REPO={MODEL}\n" in out and f"variable PLANKTON_MODEL_REVISION={models['v2']}\n" in out
    assert "plankton-lab/dry" not in hub.spaces
    assert {m for m, _ in hub.requests[before:]} == {"GET"}  # only the model repo's revision was read
    code, out, err = _cli(hub, "plankton-lab/dry", "--model-repo", PRIVATE_MODEL, "--model-dir", str(bundle), "--dry-run")
    assert code == 0 and f"note: {PRIVATE_MODEL} is private and the Space has no HF_TOKEN secret: give --model-token-env" in out


def test_deploy_creates_the_space_with_exactly_the_listed_files_and_both_variables(hub, models, bundle, demo):
    from hub.space import space_files

    space = hub.spaces["plankton-lab/demo"]
    assert space.sdk == "gradio" and not space.private
    assert len(space.commits) == 2  # the Hub's initial commit, then one commit with every file
    expected = {p: (s if isinstance(s, bytes) else s.read_bytes()) for p, s in space_files(model_dir=bundle).items()}
    assert _tree(hub, "plankton-lab/demo") == expected | {".gitattributes": _tree(hub, "plankton-lab/demo")[".gitattributes"]}
    assert "models/default/config.json" in expected and not [p for p in expected if p.startswith(("tests/", "training/", "work/", "hub/")) or "__pycache__" in p]
    assert {k: v["value"] for k, v in space.variables.items()} == {"PLANKTON_MODEL_REPO": MODEL, "PLANKTON_MODEL_REVISION": models["v1"]}
    out = demo["out"]
    assert f"model {MODEL}@v1.0 is commit {models['v1']}\n" in out  # the tag, resolved to the full sha, is printed
    assert f"Space {hub.url}/spaces/plankton-lab/demo (created)\n" in out and f"commit {demo['commit']} (" in out


def test_redeploy_with_another_revision_changes_only_the_variable(hub, models, bundle, demo):
    space = hub.spaces["plankton-lab/demo"]
    commits, before = dict(space.commits), len(hub.requests)
    code, out, err = _cli(hub, "plankton-lab/demo", "--model-repo", MODEL, "--model-revision", "v2.0", "--model-dir", str(bundle))
    assert code == 0, err
    assert space.commits == commits and space.branches["main"] == demo["commit"]  # no new commit
    assert not [p for m, p in hub.requests[before:] if m != "GET" and "/variables" not in p]  # nothing uploaded
    assert space.variables["PLANKTON_MODEL_REVISION"]["value"] == models["v2"] and space.variables["PLANKTON_MODEL_REPO"]["value"] == MODEL
    assert "code unchanged, no new commit" in out and f"PLANKTON_MODEL_REVISION={models['v2']} (set)" in out and f"PLANKTON_MODEL_REPO={MODEL} (unchanged)" in out
    # back, naming only the revision: the Space's model repo is kept
    code, out, err = _cli(hub, "plankton-lab/demo", "--model-revision", models["v1"][:40], "--model-dir", str(bundle))
    assert code == 0, err
    assert space.variables["PLANKTON_MODEL_REVISION"]["value"] == models["v1"] and space.commits == commits


def test_changed_code_is_one_commit_of_the_changed_files_and_stale_ones_go(hub, models, bundle, demo, tmp_path):
    from huggingface_hub import HfApi

    from hub.space import space_files

    HfApi(endpoint=hub.url).upload_file(path_or_fileobj=b"notes", path_in_repo="notes.txt", repo_id="plankton-lab/demo", repo_type="space")
    other = _renamed(bundle, tmp_path / "default", "another-bundled-model")  # only config.json differs
    before = len(hub.requests)
    code, out, err = _cli(hub, "plankton-lab/demo", "--model-dir", str(other))
    assert code == 0, err
    assert "1 file(s) uploaded, 1 deleted" in out and "the Space's are left as they are" in out
    new = [p for m, p in hub.requests[before:] if m == "POST" and "/commit/" in p]
    assert len(new) == 1
    tree = _tree(hub, "plankton-lab/demo")
    assert set(tree) - {".gitattributes"} == set(space_files(model_dir=other)) and b"another-bundled-model" in tree["models/default/config.json"]
    code, out, err = _cli(hub, "plankton-lab/demo", "--model-dir", str(bundle))  # and back
    assert code == 0 and "1 file(s) uploaded, 0 deleted" in out


def test_bad_revision_or_repo_fails_in_one_line_before_any_write(hub, models, bundle):
    before = len(hub.requests)
    code, _, err = _cli(hub, "plankton-lab/nope", "--model-repo", MODEL, "--model-revision", "v9.9", "--model-dir", str(bundle))
    assert code == 1 and err == f"hub: model repo {MODEL} has no revision 'v9.9'\n"
    code, _, err = _cli(hub, "plankton-lab/nope", "--model-repo", "plankton-lab/absent", "--model-dir", str(bundle))
    assert code == 1 and err.startswith("hub: model repo plankton-lab/absent not found") and err.count("\n") == 1
    assert "plankton-lab/nope" not in hub.spaces and {m for m, _ in hub.requests[before:]} == {"GET"}


# -- a private model: the token becomes the Space's secret ----------------------
@pytest.fixture(scope="module")
def private_demo(hub, models, bundle, tmp_path_factory) -> subprocess.CompletedProcess:
    """The real command line, in its own process, with huggingface_hub's most verbose logging (HF_DEBUG
    logs every request, body included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_TOKEN": TOKEN, "SPACE_READ_TOKEN": READ_TOKEN, "HF_DEBUG": "1", "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path_factory.mktemp("cli_home")), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hub", "space", "plankton-lab/private-demo", "--private", "--model-repo", PRIVATE_MODEL,
           "--model-token-env", "SPACE_READ_TOKEN", "--model-dir", str(bundle), "--endpoint", hub.url]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_token_is_stored_as_a_secret_and_never_shown(hub, models, private_demo):
    from huggingface_hub import HfApi

    p = private_demo
    assert p.returncode == 0, p.stderr[-2000:]
    space = hub.spaces["plankton-lab/private-demo"]
    assert space.private and space.secrets["HF_TOKEN"]["value"] == READ_TOKEN
    assert space.variables["PLANKTON_MODEL_REVISION"]["value"] == models["private"]
    assert f"Bearer {READ_TOKEN}" in hub.authorizations  # the read token resolved the revision...
    assert re.search(rf"curl -X POST .*{models['private']}.* {hub.url}/api/spaces/plankton-lab/private-demo/variables", p.stderr)  # ...bodies are logged...
    for token in (READ_TOKEN, TOKEN):  # ...and no token is shown, stored in a file, or readable back
        assert token not in p.stdout + p.stderr and token[3:20] not in p.stdout + p.stderr
        assert not [path for path, data in _tree(hub, "plankton-lab/private-demo").items() if token.encode() in data]
    secrets = HfApi(endpoint=hub.url, token=TOKEN).get_space_secrets("plankton-lab/private-demo")
    assert set(secrets) == {"HF_TOKEN"} and "secret HF_TOKEN: set from $SPACE_READ_TOKEN (not shown)" in p.stdout


# -- what was uploaded runs ------------------------------------------------------
def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def test_the_deployed_space_runs_the_pinned_model(hub, models, private_demo, tmp_path):
    """Download the Space, start its app.py as the Space would (its variables and secret in the
    environment), and ask it through gradio_client."""
    from app_utils import free_port
    from gradio_client import Client, handle_file
    from huggingface_hub import HfApi, snapshot_download

    assert private_demo.returncode == 0
    space_id = "plankton-lab/private-demo"
    folder = Path(snapshot_download(space_id, repo_type="space", endpoint=hub.url, token=TOKEN, local_dir=tmp_path / "space"))
    variables = {k: v.value for k, v in HfApi(endpoint=hub.url, token=TOKEN).get_space_variables(space_id).items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "PLANKTON_", "PYTHON"))}
    env |= variables | {"HF_TOKEN": hub.spaces[space_id].secrets["HF_TOKEN"]["value"], "HF_ENDPOINT": hub.url,
                        "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_DISABLE_XET": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                        "PLANKTON_HUB_TIMEOUT": "30", "OMP_NUM_THREADS": "2"}
    port, log = free_port(), tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}/", log)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        info = client.predict(api_name="/model_info")
        assert info["source"].startswith(f"Hub {PRIVATE_MODEL}@{models['private'][:7]}"), info["source"]
        assert info["name"] == "hub-model-v2" and not info["problems"]  # the model repo's, not the bundled one
        frame = min((folder / "plankton_app/examples/frames").glob("*.jpg"))
        result = client.predict([handle_file(str(frame))], info["thresholds"]["det_floor"], 0.0, api_name="/identify")
        assert result["frames"][0]["image"] == frame.name and result["n_objects"] == len(result["frames"][0]["objects"])
        assert sum(result["counts"].values()) == result["n_objects"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert READ_TOKEN not in text and f"model: Hub {PRIVATE_MODEL}@" in text
    assert json.dumps(info).count(READ_TOKEN) == 0
