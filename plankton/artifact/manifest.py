"""The model folder's manifest: ``config.json`` and the size and sha256 of
every file beside it. No torch, no Ultralytics: checking a download or
describing a model stays cheap, and ``artifact`` (which builds the
networks) and ``onnx`` both build on this module instead of on each other.

Format versions: 1 (the first wave) and 2 (adds ``crop.size_input`` and
``min_side`` choices, per-class thresholds, ``embedder.size_features`` and
the INT8 section). A version-1 config reads as version 2 with the defaults
those additions had before they existed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from plankton.files import atomic_write_text, sha256

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONFIG = "config.json"
TRAINING = "training.json"  # the training record: beside config.json, which holds what inference reads
DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, PROTOTYPES = "detector.safetensors", "embedder.safetensors", "prototypes.safetensors"
REQUIRED = (DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, PROTOTYPES)


def _default_model_dir() -> Path:
    """The bundled model: ``models/default`` in a checkout (plain or
    ``pip install -e``); an installed wheel carries no 60 MB model, so there
    it is a per-user copy, $XDG_DATA_HOME/plankton/models/default (any model
    folder copied there), unless $PLANKTON_MODEL_DIR or
    $PLANKTON_MODEL_REPO (pulled from the Hub) names one."""
    checkout = Path(__file__).resolve().parents[2] / "models" / "default"
    user = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "plankton" / "models" / "default"
    return checkout if checkout.is_dir() or not user.is_dir() else user


DEFAULT_MODEL_DIR = _default_model_dir()


class ArtifactError(ValueError):
    """A model folder that cannot be used; the message names the problem."""


def model_dir(folder: str | os.PathLike | None = None) -> Path:
    """``folder``, else $PLANKTON_MODEL_DIR, else the bundled model."""
    return Path(folder or os.environ.get("PLANKTON_MODEL_DIR") or DEFAULT_MODEL_DIR)


def write_manifest(folder: str | Path, config: dict | None = None) -> dict:
    """Record size and sha256 of every file beside config.json, and write
    config.json atomically. Call after adding files such as metrics.json.
    A ``training`` section goes to ``training.json`` beside it (which
    ``read_config`` reads back into ``config["training"]``)."""
    folder = Path(folder)
    config = dict(config) if config is not None else read_config(folder, check_files=False)
    if "training" in config:  # an older artifact kept it inline; inference never reads it
        atomic_write_text(folder / TRAINING, json.dumps(config.pop("training"), indent=1) + "\n")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CONFIG and not p.name.startswith("."))
    config["files"] = {p.relative_to(folder).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return config


def verify_files(folder: str | Path, config: dict) -> None:
    """Every file listed in ``config["files"]`` is present with its size and
    sha256, and the required ones are listed; else ArtifactError."""
    folder = Path(folder)
    files = config.get("files", {})
    for required in REQUIRED:
        if required not in files:
            raise ArtifactError(f"{folder / CONFIG}: {required} is not listed in 'files'")
    for rel, meta in files.items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"{folder}: {rel} is missing")
        if path.stat().st_size != meta.get("bytes") or sha256(path) != meta.get("sha256"):
            raise ArtifactError(f"{folder}: {rel} does not match its checksum in {CONFIG} (corrupt or tampered)")


def read_config(folder: str | Path, check_files: bool = True) -> dict:
    """Parse and check config.json; with ``check_files``, also every listed
    file's presence, size and sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: model folder not found")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: no {CONFIG}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{folder / CONFIG}: not valid JSON ({e})") from None
    got = config.get("format_version") if isinstance(config, dict) else None
    if got not in READABLE_VERSIONS:
        raise ArtifactError(f"{folder / CONFIG}: unknown format version {got!r} (this plankton reads "
                            f"{', '.join(map(str, READABLE_VERSIONS))}; a newer model needs a newer plankton)")
    for key in ("detector", "embedder", "identifier", "prototypes"):
        if not isinstance(config.get(key), dict):
            raise ArtifactError(f"{folder / CONFIG}: missing section {key!r}")
    if check_files:
        verify_files(folder, config)
    if "training" not in config and (folder / TRAINING).is_file():
        try:
            config["training"] = json.loads((folder / TRAINING).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{folder / TRAINING}: not valid JSON ({e})") from None
    return config


__all__ = ["ArtifactError", "CONFIG", "TRAINING", "DEFAULT_MODEL_DIR", "DETECTOR_WEIGHTS", "EMBEDDER_WEIGHTS", "FORMAT_VERSION", "PROTOTYPES",
           "READABLE_VERSIONS", "REQUIRED", "model_dir", "read_config", "verify_files", "write_manifest"]
