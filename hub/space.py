"""Deploy the web app as a Hugging Face Space in one command.

    python -m hub space ORG/NAME [--model-repo ORG/MODEL] [--model-revision REV] [--private]
                                 [--model-token-env NAME] [--dry-run] [--endpoint URL]

    from hub.space import deploy_space, space_files
    deploy_space("ORG/plankton-demo", model_repo="ORG/NAME", model_revision="v1.3")

1. :func:`space_files` lists what the Space needs: app.py, plankton_app/,
   plankton/, requirements.txt (with the CPU torch index added), packages.txt,
   the bundled model as models/default/ (verified against its checksums) and a
   README.md whose front matter is :data:`FRONT_MATTER`.
2. The model revision (branch, tag or sha) is resolved to its full commit sha.
3. The Space (Gradio SDK) is created if missing. One commit brings it to
   exactly these files, and only when one of them differs from the Space's
   (by git blob id or LFS sha256). So a roll forward or back, the same
   command with another ``--model-revision``, changes the variable and
   uploads no code.
4. The secret HF_TOKEN (``--model-token-env``) is written. Then the
   variables PLANKTON_MODEL_REPO and PLANKTON_MODEL_REVISION are written,
   but only those whose value changes, since each write restarts the Space.
   This happens after the commit, or before it for a new Space, so that
   its first build starts with them.

Tokens are never printed or logged (see :func:`_requests_unlogged`).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from plankton.hub import ENV_REPO, ENV_REVISION
from plankton.artifact.manifest import ArtifactError, read_config
from hub.publish import REPO_ID, PushError, collect_files, error_line

ROOT = Path(__file__).resolve().parent.parent
CODE = ("app.py", "plankton_app", "plankton")  # the app, its package and the library; nothing else is code the Space runs
PACKAGES, REQUIREMENTS, README, MODEL_PATH = "packages.txt", "requirements.txt", "README.md", "models/default"
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
SECRET = "HF_TOKEN"
# The Space's configuration: the one source of the README front matter (Spaces.md shows it; tests/test_spaces.py checks that both agree).
FRONT_MATTER = {
    "title": "Plankton identifier",
    "emoji": "🔬",
    "colorFrom": "blue",
    "colorTo": "green",
    "sdk": "gradio",
    "sdk_version": "6.31.0",  # the Space installs this Gradio; must equal the gradio== pin in requirements.txt
    "python_version": "3.11",
    "app_file": "app.py",
    "suggested_hardware": "cpu-basic",
    "startup_duration_timeout": "1h",
    "pinned": False,
    "short_description": "Detect and identify plankton in microscope frames",
}
DESCRIPTION = f"""\
# Plankton identifier

Detect and identify plankton in brightfield microscope frames. Upload frames (or a zip): a YOLO detector finds
every object, and an embedding model names its species by its similarity to class prototypes, or calls it
*unknown*. The two sliders re-filter the results without running the models again. The other tabs show the model's
validation figures and an embedding map, and let you enrol a new species from a few examples.

The model served is the one that the Space variables `{ENV_REPO}` and `{ENV_REVISION}` pin (a full commit
sha). Without them, or when the Hub cannot be reached, the app serves the bundled model in `models/default/`.
The **Model** tab says which one is loaded. Scripts can call the app with `gradio_client`: `/identify`, `/refilter`,
`/enrol`, `/model_info` and `/per_class`.

Deployed with `python -m hub space` from the plankton repository.
"""


def front_matter() -> str:
    """The README's YAML block, ``---`` lines included."""
    return "---\n" + yaml.safe_dump(FRONT_MATTER, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def space_requirements(text: str) -> str:
    """requirements.txt as the Space gets it: the CPU torch index first (the Space has no GPU, and PyPI's
    default torch wheel brings about 3 GB of CUDA libraries). Refuses a Gradio pin other than sdk_version."""
    pins = re.findall(r"^gradio==(\S+)", text, flags=re.M)
    if pins != [FRONT_MATTER["sdk_version"]]:
        raise PushError(f"{REQUIREMENTS} pins gradio {pins or 'nowhere'} but the Space's sdk_version is {FRONT_MATTER['sdk_version']}: "
                        "make them equal (hub/space.py FRONT_MATTER)")
    if CPU_INDEX in text.splitlines():
        return text
    return f"# Added by `python -m hub space`: CPU-only torch on the Space (Spaces.md)\n{CPU_INDEX}\n{text}"


def _skipped(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") or p == "__pycache__" for p in parts) or rel.endswith((".pyc", ".pyo"))


def _source_files(root: Path) -> list[str]:
    """The code files under CODE: what git tracks or would track (so nothing it ignores), else, outside a
    git checkout, every file. Caches and hidden files are skipped either way."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CODE],
                             capture_output=True, check=True, timeout=60).stdout.decode()
        rels = out.split("\0")
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an unpacked archive)
        rels = [p.relative_to(root).as_posix() for top in CODE for p in ([root / top] if (root / top).is_file() else (root / top).rglob("*"))]
    return sorted({r for r in rels if r and not _skipped(r) and (root / r).is_file()})  # --cached lists deleted files too


def space_files(root: str | Path = ROOT, model_dir: str | Path | None = None) -> dict[str, Path | bytes]:
    """Every file of the Space, by its path in the Space: a local file, or generated bytes (README.md,
    requirements.txt). ``model_dir`` (default ``root``/models/default) is bundled as models/default/:
    config.json and the files it lists, after a checksum check."""
    root = Path(root)
    model_dir = Path(model_dir) if model_dir is not None else root / MODEL_PATH
    files: dict[str, Path | bytes] = {rel: root / rel for rel in _source_files(root)}
    for need in ("app.py", "plankton/__init__.py", "plankton_app/__init__.py"):
        if need not in files:
            raise PushError(f"{root / need} is missing (or ignored by git): is {root} a plankton checkout?")
    for name in (PACKAGES, REQUIREMENTS):
        if not (root / name).is_file():
            raise PushError(f"{root / name} is missing: the Space needs it")
    files[PACKAGES] = root / PACKAGES
    files[REQUIREMENTS] = space_requirements((root / REQUIREMENTS).read_text(encoding="utf-8")).encode()
    try:
        config = read_config(model_dir, check_files=True)
    except ArtifactError as e:
        raise PushError(f"refusing to bundle the model: {e}") from None
    files.update({f"{MODEL_PATH}/{rel}": model_dir / rel for rel in collect_files(model_dir, config)})
    files[README] = (front_matter() + "\n" + DESCRIPTION).encode()
    return dict(sorted(files.items()))


def _bytes(src: Path | bytes) -> bytes:
    return src if isinstance(src, bytes) else src.read_bytes()


def _size(src: Path | bytes) -> int:
    return len(src) if isinstance(src, bytes) else src.stat().st_size


def _same(data: bytes, remote) -> bool:
    """Whether a Space file (a RepoFile) holds ``data``: by LFS sha256, else by git blob id."""
    if remote.lfs is not None:
        return remote.lfs.sha256 == hashlib.sha256(data).hexdigest()
    return remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@contextlib.contextmanager
def _requests_unlogged():
    """huggingface_hub's HF_DEBUG mode logs every request as a curl command with its body. The body of
    add_space_secret is {"key", "value"}, and its redaction list does not cover "value" (2.4). So it is
    switched off for that one call (_http.py reads constants.HF_DEBUG at each request)."""
    from huggingface_hub import constants

    old, constants.HF_DEBUG = constants.HF_DEBUG, False
    try:
        yield
    finally:
        constants.HF_DEBUG = old


def resolve_revision(api, model_repo: str, revision: str | None, token: str | None = None) -> tuple[str, bool]:
    """Resolve ``revision`` (branch, tag or sha; default main) of a model repo: (its full commit sha, private?)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = api.model_info(model_repo, revision=revision or "main", token=token)
        return info.sha, bool(info.private)
    except RevisionNotFoundError:
        raise PushError(f"model repo {model_repo} has no revision {revision or 'main'!r}") from None
    except RepositoryNotFoundError:
        raise PushError(f"model repo {model_repo} not found (or private: give --model-token-env, or log in with access)") from None


def deploy_space(space_id: str, *, model_repo: str | None = None, model_revision: str | None = None, private: bool = False,
                 dry_run: bool = False, model_token: str | None = None, model_dir: str | Path | None = None,
                 root: str | Path = ROOT, token: str | None = None, endpoint: str | None = None) -> dict:
    """Deploy (see the module doc). ``model_token``: a read-only token for a private model repo, stored as
    the Space secret HF_TOKEN. ``model_dir``: the model to bundle (default models/default). ``token``:
    the deploying account's (default HF_TOKEN or the stored login). Returns what was done, for the CLI."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    for name, rid in (("Space", space_id), ("model repo", model_repo)):
        if rid is not None and not REPO_ID.match(rid):
            raise PushError(f"{name} id {rid!r} is not of the form ORG/NAME")
    if model_token is not None and not model_token.strip():
        raise PushError("the model token is empty")
    files = space_files(root, model_dir)  # local checks first: nothing is sent for a broken checkout
    api = HfApi(endpoint=endpoint, token=token)
    result = {"space_id": space_id, "url": f"{api.endpoint}/spaces/{space_id}", "dry_run": dry_run, "notes": [],
              "files": {p: _size(s) for p, s in files.items()}, "variables": {}, "variables_set": [], "secret": model_token is not None}
    if model_repo is None and (model_revision or model_token):
        try:  # a roll forward or back may name only the revision: keep the Space's model repo
            model_repo = api.get_space_variables(space_id)[ENV_REPO].value
        except (RepositoryNotFoundError, KeyError):
            raise PushError(f"give --model-repo: the Space {space_id} has no {ENV_REPO} variable to keep") from None
    model_private = False
    if model_repo:
        sha, model_private = resolve_revision(api, model_repo, model_revision, model_token)
        result["variables"] = {ENV_REPO: model_repo, ENV_REVISION: sha}
        result["model"] = f"{model_repo}@{model_revision or 'main'}"
    no_token = f"{model_repo} is private and the Space has no {SECRET} secret: give --model-token-env, or the Space serves the bundled model"
    if dry_run:
        result["notes"] += [no_token] if model_private and model_token is None else []
        return result

    try:
        info = api.space_info(space_id)
        result["created"] = False
        if private and not info.private:
            result["notes"].append("--private applies only to a new Space: this one stays public (change it in its Settings)")
    except RepositoryNotFoundError:
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        info, result["created"] = api.space_info(space_id), True
    if result["created"]:  # no code there yet: settings first, so the first build starts with them
        _write_settings(api, space_id, result, model_token, model_private, no_token)
    head = info.sha
    remote = {f.path: f for f in api.list_repo_tree(space_id, repo_type="space", revision=head, recursive=True) if isinstance(f, RepoFile)}
    adds = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=s if isinstance(s, bytes) else str(s))
            for p, s in files.items() if p not in remote or not _same(_bytes(s), remote[p])]
    stale = sorted(p for p in remote if p not in files and p != ".gitattributes")
    result |= {"changed": [a.path_in_repo for a in adds], "deleted": stale, "committed": bool(adds or stale), "commit_sha": head}
    if adds or stale:
        commit = api.create_commit(space_id, repo_type="space", operations=adds + [CommitOperationDelete(path_in_repo=p) for p in stale],
                                   commit_message=f"Deploy the plankton demo: {len(adds)} file(s) changed, {len(stale)} deleted",
                                   parent_commit=head)  # fails rather than overwrite a commit made meanwhile
        result["commit_sha"] = commit.oid
    if not result["created"]:  # code first: a new model may need the new code
        _write_settings(api, space_id, result, model_token, model_private, no_token)
    return result


def _write_settings(api, space_id: str, result: dict, model_token: str | None, model_private: bool, no_token: str) -> None:
    """The secret, when given, then the variables whose value changes (each write restarts the Space)."""
    if model_token is not None:
        with _requests_unlogged():
            api.add_space_secret(space_id, SECRET, model_token, description="read-only token for the model repo")
    elif model_private and SECRET not in api.get_space_secrets(space_id):
        result["notes"].append(no_token)
    current = {k: v.value for k, v in api.get_space_variables(space_id).items()} if result["variables"] else {}
    for key, value in result["variables"].items():
        if current.get(key) != value:
            api.add_space_variable(space_id, key, value)
            result["variables_set"].append(key)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB" if n >= 1000 else f"{n} B"


def report(result: dict, token_env: str | None = None) -> list[str]:
    """The lines the command prints (never a token: the result holds none)."""
    lines = []
    if result["dry_run"]:
        lines.append(f"dry run: nothing is uploaded to {result['url']}")
        lines += [f"{_megabytes(size):>10}  {path}" for path, size in result["files"].items()]
        lines.append(f"{len(result['files'])} files, {_megabytes(sum(result['files'].values()))} in total")
    if "model" in result:
        lines.append(f"model {result['model']} is commit {result['variables'][ENV_REVISION]}")
    for key, value in result["variables"].items():
        state = "" if result["dry_run"] else " (set)" if key in result["variables_set"] else " (unchanged)"
        lines.append(f"variable {key}={value}{state}")
    if not result["variables"]:
        lines.append("variables: no --model-repo or --model-revision given; the Space's are left as they are")
    if result["secret"]:
        lines.append(f"secret {SECRET}: {'would be set' if result['dry_run'] else 'set'} from ${token_env or 'the given token'} (not shown)")
    if not result["dry_run"]:
        lines.append(f"Space {result['url']}" + (" (created)" if result["created"] else ""))
        changes = f"{len(result['changed'])} file(s) uploaded, {len(result['deleted'])} deleted" if result["committed"] else "code unchanged, no new commit"
        lines.append(f"commit {result['commit_sha']} ({changes})")
    return lines + [f"note: {n}" for n in result["notes"]]


# -- command line -------------------------------------------------------------
def add_parser(sub) -> None:
    """Register ``space`` on hub's sub-command parser."""
    p = sub.add_parser("space", help="deploy the web app as a Gradio Space (one commit; sets the model variables)",
                       description="Create or update the demo Space, pin its model, in one command (see Spaces.md).")
    p.add_argument("space", metavar="ORG/NAME", help="the Space (created if missing)")
    p.add_argument("--model-repo", metavar="ORG/MODEL", default=None, help=f"model repo the Space serves ({ENV_REPO}; default: keep the Space's)")
    p.add_argument("--model-revision", metavar="REV", default=None, help=f"branch, tag or sha; pinned as its full commit sha ({ENV_REVISION}; default main)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--dry-run", action="store_true", help="list the files, their size and the variables; upload nothing")
    p.add_argument("--model-token-env", metavar="NAME", default=None, help=f"environment variable holding a read-only token for a private model repo, stored as the Space secret {SECRET}")
    p.add_argument("--model-dir", default=None, help="model folder to bundle as models/default (default: models/default)")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # not one line per HTTP request in the command's output
    token = None
    try:
        if args.model_token_env is not None:
            token = os.environ.get(args.model_token_env, "").strip()
            if not token:
                raise PushError(f"${args.model_token_env} is empty or not set: it should hold a read-only token for the model repo")
        result = deploy_space(args.space, model_repo=args.model_repo, model_revision=args.model_revision, private=args.private,
                              dry_run=args.dry_run, model_token=token, model_dir=args.model_dir, endpoint=args.endpoint)
    except Exception as e:  # PushError, huggingface_hub's HTTP and validation errors: one line, never the token
        text = str(e) if isinstance(e, PushError) else f"deploy failed: {error_line(e)}"
        print(f"hub: {text.replace(token, '***') if token else text}", file=sys.stderr)
        return 1
    print("\n".join(report(result, args.model_token_env)))
    return 0
