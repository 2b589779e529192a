"""A model artifact is a folder: safetensors weights for both stages,
``prototypes.safetensors`` and ``config.json`` (architectures, input sizes,
normalisation, class names, thresholds, versions and file checksums).
Loading never unpickles anything."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from . import __version__
from .cascade import Cascade
from .detector import Detector, DetectorConfig, build_detection_model
from .embedder import EmbeddingNet
from .identifier import Identifier, IdentifierConfig
from .prototypes import Prototypes

FORMAT_VERSION = 1
CONFIG = "config.json"
DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, PROTOTYPES = "detector.safetensors", "embedder.safetensors", "prototypes.safetensors"
REQUIRED = (DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, PROTOTYPES)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


class ArtifactError(ValueError):
    """A model folder that cannot be used; the message names the problem."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    from ._ultralytics import __version__ as ultralytics_version

    return {"plankton": __version__, "torch": torch.__version__, "ultralytics": ultralytics_version}


def write_manifest(folder: str | Path, config: dict | None = None) -> dict:
    """Record size and sha256 of every file beside config.json, and write
    config.json atomically. Call after adding files such as metrics.json."""
    folder = Path(folder)
    config = config if config is not None else read_config(folder, check_files=False)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CONFIG and not p.name.startswith("."))
    config["files"] = {p.relative_to(folder).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return config


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _state(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> dict:
    return {k: v.detach().to(dtype).cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_artifact(
    folder: str | Path,
    *,
    detector: torch.nn.Module,
    detector_cfg: DetectorConfig,
    embedder: EmbeddingNet,
    identifier_cfg: IdentifierConfig,
    prototypes: Prototypes,
    categories: list[dict] | None = None,
    name: str = "plankton",
    extra: dict | None = None,
    weights_dtype: str = "float32",
) -> Path:
    """Write a complete artifact folder (replacing ``folder`` only once the
    new one is complete). ``detector`` must be the unfused DetectionModel.
    ``categories``: COCO categories ({"id", "name"}) for COCO output ids.
    ``weights_dtype="float16"`` halves the files (as Ultralytics' own
    checkpoints do); loading casts back to the model's float32."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        dtype = getattr(torch, weights_dtype)
        save_file(_state(detector, dtype), str(tmp / DETECTOR_WEIGHTS))
        save_file(_state(embedder, dtype), str(tmp / EMBEDDER_WEIGHTS))
        prototypes.save(tmp / PROTOTYPES)
        arch = detector_cfg.architecture
        det = detector_cfg.to_dict() | {"yaml": getattr(detector, "yaml", None) or arch, "weights": DETECTOR_WEIGHTS}
        config = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "detector": det,
            "embedder": {"backbone": embedder.backbone_name, "dim": embedder.dim, "weights": EMBEDDER_WEIGHTS},
            "identifier": identifier_cfg.to_dict(),
            "prototypes": {"file": PROTOTYPES, "names": list(prototypes.names), "subcenters": int(prototypes.subcenters.shape[1]), "mode": prototypes.mode},
            "categories": categories or [{"id": i + 1, "name": n} for i, n in enumerate(prototypes.names)],
        } | (extra or {})
        for p in tmp.iterdir():
            os.chmod(p, 0o644)  # safetensors writes 0600: other users (a web app's account) must read the weights
        write_manifest(tmp, config)
        os.chmod(tmp, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


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
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        got = config.get("format_version") if isinstance(config, dict) else None
        raise ArtifactError(f"{folder / CONFIG}: unknown format version {got!r} (this plankton reads {FORMAT_VERSION})")
    for key in ("detector", "embedder", "identifier", "prototypes"):
        if not isinstance(config.get(key), dict):
            raise ArtifactError(f"{folder / CONFIG}: missing section {key!r}")
    if check_files:
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
    return config


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load safetensors into ``module``; any key or shape mismatch → one line."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{path}: unreadable safetensors file ({e})") from None
    expected = module.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not match the configured architecture ({len(missing)} missing tensors, e.g. {sorted(missing)[:1]}; {len(unexpected)} unexpected, e.g. {sorted(unexpected)[:1]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ArtifactError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the config's architecture expects {tuple(expected[k].shape)}")
    module.load_state_dict(state)


def load_artifact(folder: str | Path | None = None, device: str = "cpu", verify: bool = True, runtime: str = "torch") -> Cascade:
    """Build a ready Cascade from an artifact folder (default: the bundled
    model). The config, weights and prototypes must agree, else ArtifactError.
    ``runtime``: "torch" (default); "onnx": the folder's detector.onnx and
    embedder.onnx in ONNX Runtime (CPU); "auto": onnx when those files are
    present and current and onnxruntime imports, else torch.
    ``cascade.runtime`` says which one runs."""
    folder = Path(folder or os.environ.get("PLANKTON_MODEL_DIR") or DEFAULT_MODEL_DIR)
    config = read_config(folder, check_files=verify)
    onnx_models = None
    if runtime != "torch":
        from .onnx import load_onnx_models

        onnx_models = load_onnx_models(folder, config, runtime, device)  # None: use torch
    try:
        d = dict(config["detector"])
        yaml = d.pop("yaml", None) or d["architecture"]
        d.pop("weights", None)
        d["names"] = tuple(d.get("names", ("plankton",)))
        det_cfg = DetectorConfig(**d)
        id_cfg = IdentifierConfig.from_dict(config["identifier"])
        emb_cfg = config["embedder"]
        if onnx_models is None:
            embedder = EmbeddingNet(emb_cfg["backbone"], int(emb_cfg["dim"]))
            det_model = build_detection_model(yaml, nc=len(det_cfg.names))
        else:
            det_model, embedder = onnx_models
    except (TypeError, KeyError, ValueError) as e:
        raise ArtifactError(f"{folder / CONFIG}: invalid configuration ({e})") from None
    if onnx_models is None:
        _load_weights(det_model, folder / DETECTOR_WEIGHTS)
        _load_weights(embedder, folder / EMBEDDER_WEIGHTS)
    try:
        protos = Prototypes.load(folder / PROTOTYPES)
    except Exception as e:
        raise ArtifactError(f"{folder / PROTOTYPES}: {e}") from None
    if protos.names != list(config["prototypes"].get("names", protos.names)):
        raise ArtifactError(f"{folder}: prototype class names differ from {CONFIG}")
    if protos.dim != embedder.dim:
        raise ArtifactError(f"{folder / PROTOTYPES}: {protos.dim}-d prototypes for a {embedder.dim}-d embedder")
    cascade = Cascade(Detector(det_model, det_cfg, device), Identifier(embedder, protos, id_cfg, device))
    cascade.config, cascade.path = config, folder
    cascade.runtime = "torch" if onnx_models is None else "onnx"
    return cascade


__all__ = ["ArtifactError", "load_artifact", "save_artifact", "read_config", "write_manifest", "DEFAULT_MODEL_DIR"]
