"""Publish a model artifact folder to the Hugging Face Hub as one commit,
with a generated model card. The app uses this module to publish a model
version saved from its corrections, and ``python -m hub push`` is its
command line. It lives in the app's package because ``pip install .``
installs that package and not ``hub/``: an installed app can publish.

    from plankton_app.publish import push_artifact
    push_artifact("work/model", "ORG/NAME", tag="v1.2")  # {"commit_sha": ..., "url": ...}

The commit holds config.json, every file its "files" map lists (weights,
prototypes.safetensors, validation.safetensors, metrics.json, plots…), any
other PNG/CSV/JSON/safetensors/ONNX file in the folder, and a generated
model card README.md. Files left in the repo by an earlier push that are
not part of this artifact are deleted in the same commit, so a revision
always holds exactly one artifact. The artifact is verified (read_config
with checksums) before anything is sent.

Authentication is huggingface_hub's: the ``token`` argument, else HF_TOKEN,
else the stored ``huggingface-cli login``. Tokens are never printed or logged.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from plankton.artifact.card import build_card
from plankton.artifact.gallery import summary
from plankton.hub import allowed
from plankton.artifact.manifest import CONFIG, ArtifactError, read_config

log = logging.getLogger("plankton_app.publish")
CARD = "README.md"
METRICS = "metrics.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PushError(ValueError):
    """An artifact or a request that cannot be pushed; the message says why."""


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in Path(rel).parts)


def collect_files(folder: str | Path, config: dict) -> list[str]:
    """Relative paths to upload (besides the card): config.json, every file
    config.json lists, and unlisted PNG/CSV/JSON/safetensors files."""
    folder = Path(folder)
    listed = dict(config.get("files") or {})
    bad = sorted(rel for rel in listed if not allowed(rel) or rel == CARD)
    if bad:
        raise PushError(
            f"{folder / CONFIG} lists {', '.join(bad)}: a Hub copy may only hold safetensors, ONNX, JSON, PNG and CSV files "
            f"(and {CARD} is generated); move {'it' if len(bad) == 1 else 'them'} out and rerun plankton.artifact.manifest.write_manifest"
        )
    extra, skipped = [], []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel == CONFIG or rel in listed or _hidden(rel):
            continue
        (extra if allowed(rel) and rel != CARD else skipped).append(rel)
    for rel in extra:
        log.warning("%s is not covered by the checksums in %s; it is pushed but cannot be verified on download (rerun write_manifest)", rel, CONFIG)
    for rel in skipped:
        log.warning("not pushing %s: only safetensors, ONNX, JSON, PNG and CSV files are published", rel)
    return [CONFIG] + sorted(listed) + extra


def _metrics(folder: Path) -> dict | None:
    path = folder / METRICS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PushError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {"value": data}


def prepare(folder: str | Path, repo_id: str | None = None, license: str | None = None) -> tuple[dict, list[str], str]:
    """Verify the artifact; return (config, files to upload, card text)."""
    folder = Path(folder)
    try:
        config = read_config(folder, check_files=True)
    except ArtifactError as e:
        raise PushError(f"refusing to push: {e}") from None
    files = collect_files(folder, config)
    card = str(build_card(config, _metrics(folder), repo_id=repo_id, license=license, gallery=summary(folder)))
    return config, files, card


def push_artifact(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    tag: str | None = None,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    license: str | None = None,
) -> dict:
    """Push the artifact in ``folder`` to ``repo_id`` ("ORG/NAME") as one
    commit on branch ``revision`` (default main; created from main when
    missing), creating the repo (``private`` if new) when needed, then tag the
    commit ``tag`` if given (an existing tag is an error: tags never move).
    Returns {"commit_sha", "url", "repo_id", "revision", "tag", "files"}."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if not REPO_ID.match(repo_id or ""):
        raise PushError(f"repo id {repo_id!r} is not of the form ORG/NAME")
    folder = Path(folder)
    config, files, card = prepare(folder, repo_id, license)
    branch = revision or "main"
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    refs = api.list_repo_refs(repo_id)
    if tag and tag in {t.name for t in refs.tags}:
        raise PushError(f"tag {tag!r} already exists in {repo_id}; published tags are never moved, choose a new version")
    if branch not in {b.name for b in refs.branches}:
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    keep = set(files) | {CARD, ".gitattributes"}
    stale = [p for p in api.list_repo_files(repo_id, revision=branch) if p not in keep]
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode("utf-8")))
    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
    name = config.get("name") or folder.name
    message = commit_message or f"Upload {name}" + (f" {tag}" if tag else "")
    description = f"plankton artifact {name}, created {config.get('created', '?')}; {len(files)} files + model card."
    info = api.create_commit(repo_id, operations=operations, commit_message=message, commit_description=description, revision=branch)
    sha = info.oid
    if tag:
        api.create_tag(repo_id, tag=tag, revision=sha, tag_message=message)
    log.info("pushed %d files to %s@%s as commit %s%s", len(files) + 1, repo_id, branch, sha[:7], f", tagged {tag}" if tag else "")
    return {"commit_sha": sha, "url": info.commit_url, "repo_id": repo_id, "revision": branch, "tag": tag, "files": files + [CARD]}


__all__ = ["CARD", "PushError", "collect_files", "prepare", "push_artifact"]


def error_line(e: BaseException) -> str:
    """An error from huggingface_hub or the network, on one line with its type."""
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(e).__name__}: " + (" ".join(lines[:3]) if lines else "")
