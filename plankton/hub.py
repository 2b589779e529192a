"""Fetch a model artifact from the Hugging Face Hub, never hanging start-up.

    resolved = resolve_model("ORG/NAME", "v1.2", timeout=10)
    cascade = load_artifact(resolved.path)
    print(resolved.description)   # "Hub ORG/NAME@3f2a1c9 (v1.2)"

The revision (branch, tag or full commit sha) comes from the Hub, with all
remote calls bounded by ``timeout`` together; else the cached copy of it
(a cached full sha needs no network at all); else the bundled model. Every
copy is checked against the sha256 checksums in its config.json first, and
a copy that fails is refused in one line naming the file. Only safetensors,
JSON, PNG, CSV, ONNX and OpenVINO files are fetched: nothing downloaded is
ever unpickled.

Environment: ``PLANKTON_MODEL_REPO``, ``PLANKTON_MODEL_REVISION``,
``PLANKTON_HUB_TIMEOUT`` (seconds) via :func:`resolve_model_from_env`;
``HF_TOKEN`` or the stored login, ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``
and ``HF_HUB_OFFLINE`` as huggingface_hub reads them. No token is ever logged.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from plankton.files import atomic_write_text, sha256
from plankton.artifact.manifest import CONFIG, DEFAULT_MODEL_DIR, REQUIRED, ArtifactError, read_config
from plankton.runtime import runtime_files

log = logging.getLogger("plankton.hub")

ENV_REPO, ENV_REVISION, ENV_TIMEOUT = "PLANKTON_MODEL_REPO", "PLANKTON_MODEL_REVISION", "PLANKTON_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 10.0
# The only files a model repo may hand us: none of them is unpickled. Besides
# the artifact's own, each runtime's files (plankton.runtime.TABLE): ONNX is
# protobuf and OpenVINO IR is XML plus raw weights (.bin), not pickle, so safe
# to fetch like the rest, and checked against their checksums too.
ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.png", "*.csv", *runtime_files()]
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class HubModelError(ArtifactError):
    """A model repo (or its cached copy) that cannot be used; one line naming the problem."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the model comes from. ``source``: "hub" | "cache" | "bundled".
    ``description``: one line for logs and the app, e.g. "Hub ORG/NAME@3f2a1c9".
    ``commit``: the full commit sha of a Hub or cached copy. ``problems``:
    why earlier sources were passed over (each one line). ``verified``:
    every file was just checked against its checksum (Hub and cached
    copies), so loading need not hash them again."""

    path: Path
    source: str
    description: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    problems: tuple[str, ...] = field(default=())
    verified: bool = False


def allowed(name: str) -> bool:
    """Whether a repo file may be fetched (``ALLOW_PATTERNS``)."""
    return any(fnmatch.fnmatch(name, p) for p in ALLOW_PATTERNS)


def _label(repo_id: str, commit: str | None, revision: str) -> str:
    label = f"{repo_id}@{(commit or '?')[:7]}"
    return label if commit is None or revision == commit else f"{label} ({revision})"


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:  # huggingface_hub reads the variable once, at import
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


class _Deadline(Exception):
    """The Hub did not answer in time."""


def _with_deadline(fn, seconds: float):
    """Run ``fn()`` in a daemon thread; raise _Deadline if it has not finished
    after ``seconds``. huggingface_hub can wait without limit on a server that
    accepts a connection but never answers; the abandoned thread cannot keep
    the process alive (it is a daemon) and will end with its connection."""
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="plankton-hub-fetch").start()
    if not done.wait(max(seconds, 0.0)):
        raise _Deadline()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _fetch(call, timeout: float):
    """``call()`` under one deadline. A connection dropped or refused midway
    (a busy server, a flaky network) is tried once more in what is left."""
    import httpx2

    start = time.monotonic()
    try:
        return _with_deadline(call, timeout)
    except (httpx2.ConnectError, httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError) as e:
        left = timeout - (time.monotonic() - start)
        if left < 0.5:
            raise
        log.info("Hub connection lost (%s); trying once more", type(e).__name__)
        return _with_deadline(call, left)


def _reason(e: BaseException, timeout: float) -> str:
    """One line on why the Hub could not give us the revision."""
    try:
        import httpx2
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return f"{type(e).__name__}: {e}".splitlines()[0]
    if isinstance(e, _Deadline):
        return f"Hub did not answer within {timeout:g} s"
    if isinstance(e, OfflineModeIsEnabled):
        return "offline mode (HF_HUB_OFFLINE=1)"
    if isinstance(e, RevisionNotFoundError):
        return "revision not found on the Hub"
    if isinstance(e, GatedRepoError):
        return "gated repository (no access with this token)"
    if isinstance(e, RepositoryNotFoundError):
        return "repository not found on the Hub (or private, and no valid HF_TOKEN)"
    if isinstance(e, (httpx2.ConnectError, LocalEntryNotFoundError)):
        return "Hub unreachable"
    if isinstance(e, httpx2.TimeoutException):
        return f"Hub did not answer within {timeout:g} s"
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        return f"Hub error (HTTP {status})" if status else "Hub error"
    if isinstance(e, (httpx2.TransportError, OSError)):
        return f"Hub unreachable ({type(e).__name__})"
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def verify_snapshot(folder: str | Path, label: str, where: str = "the repo") -> dict:
    """Check a downloaded or cached repo copy against the checksums its
    config.json records. Raises HubModelError with one line naming the file;
    ``where`` names the copy in the message about a missing file."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise HubModelError(f"{label}: the repo has no {CONFIG} (is it a plankton model repo?)")
    try:
        config = read_config(folder, check_files=False)
    except ArtifactError as e:
        raise HubModelError(f"{label}: {str(e).replace(str(folder), '').lstrip(': /')}") from None
    files = config.get("files") or {}
    for required in REQUIRED:
        if required not in files:
            raise HubModelError(f"{label}: {CONFIG} does not list {required}")
    for rel, meta in files.items():
        if not allowed(rel):
            raise HubModelError(f"{label}: {CONFIG} lists {rel}, which is not a safetensors/JSON/PNG/CSV/ONNX/OpenVINO file and is never downloaded")
        path = folder / rel
        if not path.is_file():
            raise HubModelError(f"{label}: {rel} is listed in {CONFIG} but missing from {where}")
        if path.stat().st_size != meta.get("bytes") or sha256(path) != meta.get("sha256"):
            raise HubModelError(f"{label}: {rel} does not match its checksum in {CONFIG} (corrupt or tampered); refusing this copy")
    return config


def _evict(folder: Path, cache_dir: str | None) -> None:
    """Drop the files of a refused cached copy that fail their checksum, so a
    later start downloads them again instead of refusing the same bytes."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        for rel, meta in (config.get("files") or {}).items():
            p = folder / rel
            if p.is_file() and (p.stat().st_size != meta.get("bytes") or sha256(p) != meta.get("sha256")):
                blob = p.resolve()
                p.unlink()
                if blob != p and blob.is_file() and "blobs" in blob.parts:
                    blob.unlink()
    except (OSError, ValueError):
        pass


def _snapshot(repo_id: str, revision: str, cache_dir, *, local_only: bool, token, endpoint, timeout: float) -> tuple[str, str]:
    """(snapshot folder, commit sha) of ``revision``; remote unless local_only."""
    from huggingface_hub import HfApi, snapshot_download

    commit = revision if FULL_SHA.match(revision) else None
    if not local_only and commit is None:
        # Resolve the branch or tag ourselves, with a timeout on the call:
        # snapshot_download's own look-up has none.
        commit = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, timeout=timeout).sha
        if not commit or not FULL_SHA.match(commit):
            raise HubModelError(f"{repo_id}@{revision}: the Hub returned no commit id")
    path = snapshot_download(
        repo_id,
        revision=commit or revision,
        cache_dir=cache_dir,
        allow_patterns=ALLOW_PATTERNS,
        local_files_only=local_only,
        etag_timeout=timeout,
        token=token,
        endpoint=endpoint,
    )
    if commit is None:  # local copy found through refs/<revision>
        commit = Path(path).name
    if commit != revision and not local_only:
        # remember branch/tag -> commit for later offline starts
        _write_ref(path, revision, commit)
    return path, commit


def _write_ref(snapshot: str, revision: str, commit: str) -> None:
    ref = Path(snapshot).parent.parent / "refs" / revision
    try:
        if not ref.is_file() or ref.read_text() != commit:
            ref.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(ref, commit)
    except OSError:
        pass


def resolve_model(
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cache_dir: str | Path | None = None,
    bundled: str | Path = DEFAULT_MODEL_DIR,
    token: str | bool | None = None,
    endpoint: str | None = None,
    strict: bool = False,
    bundled_name: str | None = None,
) -> ResolvedModel:
    """Find the model folder to load: Hub, else cache, else bundled.

    ``repo_id`` "ORG/NAME" (None or "" → the bundled model). ``revision``: a
    branch, tag or full commit sha (default "main"; pin a full sha in
    production). ``timeout``: bound, in seconds, on all network calls
    together. ``token``/``endpoint``: as huggingface_hub takes them (default:
    HF_TOKEN or the stored login, HF_ENDPOINT). ``strict``: raise
    HubModelError instead of falling back to the bundled model.
    ``bundled_name``: how descriptions name ``bundled`` (default "bundled
    default", or "local model PATH" for another folder).
    Never raises otherwise, never waits much longer than ``timeout``."""
    bundled = Path(bundled)
    name = bundled_name or ("bundled default" if bundled == DEFAULT_MODEL_DIR else f"local model {bundled}")
    if not repo_id:
        return ResolvedModel(bundled, "bundled", name)
    revision = revision or "main"
    cache_dir = str(cache_dir) if cache_dir is not None else None
    problems: list[str] = []
    refused: set[str] = set()

    def local():
        try:
            path, commit = _snapshot(repo_id, revision, cache_dir, local_only=True, token=token, endpoint=endpoint, timeout=timeout)
        except Exception:  # not cached, or cached incompletely
            return None
        if path in refused:
            return None
        try:
            verify_snapshot(path, f"cached copy of {_label(repo_id, commit, revision)}", "this copy")
        except HubModelError as e:
            problems.append(str(e))
            log.warning("%s", e)
            refused.add(path)
            _evict(Path(path), cache_dir)
            return None
        return path, commit

    # 1. A commit never changes: a complete, verified cached copy needs no network.
    if FULL_SHA.match(revision) and (hit := local()):
        path, commit = hit
        return ResolvedModel(Path(path), "cache", f"cached copy of {_label(repo_id, commit, revision)}", repo_id, revision, commit, tuple(problems), True)

    # 2. The Hub, bounded.
    if _offline():
        problems.append("offline mode (HF_HUB_OFFLINE=1)")
    else:
        start = time.monotonic()
        try:
            path, commit = _fetch(lambda: _snapshot(repo_id, revision, cache_dir, local_only=False, token=token, endpoint=endpoint, timeout=timeout), timeout)
        except HubModelError as e:
            problems.append(str(e))
        except Exception as e:  # network, HTTP or deadline: explained in one line
            reason = _reason(e, timeout)
            problems.append(reason)
            log.info("model %s@%s: %s after %.1f s; trying the local cache", repo_id, revision, reason, time.monotonic() - start)
        else:
            try:
                verify_snapshot(path, f"Hub {_label(repo_id, commit, revision)}")
            except HubModelError as e:
                problems.append(str(e))
                log.warning("%s", e)
                refused.add(path)
                _evict(Path(path), cache_dir)
            else:
                return ResolvedModel(Path(path), "hub", f"Hub {_label(repo_id, commit, revision)}", repo_id, revision, commit, tuple(problems), True)

    # 3. The cached copy of that revision.
    if hit := local():
        path, commit = hit
        why = problems[0] if problems else "Hub unavailable"
        return ResolvedModel(Path(path), "cache", f"cached copy of {_label(repo_id, commit, revision)}, {why}", repo_id, revision, commit, tuple(problems), True)

    # 4. The bundled model.
    why = "; ".join(dict.fromkeys(problems)) or "Hub unavailable"
    if strict:
        raise HubModelError(f"{repo_id}@{revision}: {why}; no usable cached copy")
    log.info("model %s@%s unavailable (%s; no usable cached copy): using the %s", repo_id, revision, why, name)
    return ResolvedModel(bundled, "bundled", f"{name} ({repo_id}@{revision}: {why}; no usable cached copy)", repo_id, revision, None, tuple(problems))


def _env_kwargs(kwargs: dict) -> dict:
    """resolve_model keyword arguments completed from the environment."""
    kwargs = dict(kwargs)
    if "timeout" not in kwargs and os.environ.get(ENV_TIMEOUT, "").strip():
        try:
            kwargs["timeout"] = float(os.environ[ENV_TIMEOUT])
        except ValueError:
            log.warning("ignoring %s=%r: not a number of seconds", ENV_TIMEOUT, os.environ[ENV_TIMEOUT])
    if "endpoint" not in kwargs and os.environ.get("HF_ENDPOINT", "").strip():
        # Read now, not at huggingface_hub's import: a mirror set later still counts.
        kwargs["endpoint"] = os.environ["HF_ENDPOINT"].strip().rstrip("/")
    env_dir = os.environ.get("PLANKTON_MODEL_DIR", "").strip()
    if "bundled" not in kwargs and env_dir:
        kwargs["bundled"] = Path(env_dir)
        kwargs.setdefault("bundled_name", f"from PLANKTON_MODEL_DIR ({env_dir})")
    return kwargs


def resolve_model_from_env(repo_id: str | None = None, revision: str | None = None, **kwargs) -> ResolvedModel:
    """:func:`resolve_model` with flags first, then the environment:
    PLANKTON_MODEL_REPO, PLANKTON_MODEL_REVISION, PLANKTON_HUB_TIMEOUT, and
    PLANKTON_MODEL_DIR as the fallback model (default: the bundled one)."""
    repo_id = repo_id or os.environ.get(ENV_REPO, "").strip() or None
    revision = revision or os.environ.get(ENV_REVISION, "").strip() or None
    return resolve_model(repo_id, revision, **_env_kwargs(kwargs))


def fallback_model(**kwargs) -> ResolvedModel:
    """The model used when no repo is configured or none can be used:
    $PLANKTON_MODEL_DIR, else the bundled default (``bundled=``/``bundled_name=`` override)."""
    return resolve_model(None, **{k: v for k, v in _env_kwargs(kwargs).items() if k in ("bundled", "bundled_name")})


def load_resolved(repo_id: str | None = None, revision: str | None = None, *, device: str = "cpu", runtime: str = "auto", **kwargs):
    """Resolve (flags, then environment) and load: returns (cascade,
    ResolvedModel). A Hub or cached copy that verifies but does not load
    (e.g. made by an incompatible plankton version) is dropped for the
    fallback model, with the reason in the description."""
    from plankton.pipeline.load import load_artifact

    resolved = resolve_model_from_env(repo_id, revision, **kwargs)
    try:
        return load_artifact(resolved.path, device=device, verify=not resolved.verified, runtime=runtime), resolved
    except ArtifactError as e:
        if resolved.source == "bundled" or kwargs.get("strict"):
            raise
        msg = str(e).replace(str(resolved.path), resolved.description).splitlines()[0]
        log.warning("%s; using the fallback model", msg)
        fb = fallback_model(**kwargs)
        fallback = ResolvedModel(fb.path, "bundled", f"{fb.description} ({resolved.description} does not load: {msg})", resolved.repo_id, resolved.revision, None, resolved.problems + (msg,))
        return load_artifact(fb.path, device=device, runtime=runtime), fallback


__all__ = ["ResolvedModel", "HubModelError", "resolve_model", "resolve_model_from_env", "fallback_model", "load_resolved",
           "verify_snapshot", "ALLOW_PATTERNS", "ENV_REPO", "ENV_REVISION", "ENV_TIMEOUT"]
