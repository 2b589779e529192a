"""The one entry point from a model folder to a ready Cascade (as
Ultralytics' ``AutoBackend`` is one place): the folder read and checked
(``artifact``), its networks in the runtime asked for (``runtime``), its
prototypes and its count evidence (``counting``). Nothing below this layer
builds a Cascade; loading never unpickles anything."""
from __future__ import annotations

from pathlib import Path

import torch

from plankton.artifact.manifest import CONFIG, DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, PROTOTYPES, ArtifactError, model_dir, read_config
from plankton.counting.calibration import CountEvidence
from plankton.model.detector import Detector, DetectorConfig, build_detection_model
from plankton.model.embedder import EmbeddingNet
from plankton.model.identifier import Identifier, IdentifierConfig
from plankton.model.prototypes import Prototypes
from plankton.pipeline.cascade import Cascade
from plankton.runtime.registry import load_onnx_models


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


def build_cascade(config: dict, folder: str | Path, runtime: str = "torch", device: str = "cpu", streams: int = 1) -> Cascade:
    """The one way a Cascade is built from a config: detector and identifier
    configs from its sections (the backbone registry supplies the
    normalisation), networks from the folder's safetensors, or from its
    ONNX files when ``runtime`` asks for them and they are usable, and the
    prototypes. Any inconsistency → ArtifactError naming it."""
    folder = Path(folder)
    onnx_models = None
    if runtime != "torch":
        onnx_models = load_onnx_models(folder, config, runtime, device, streams=streams)  # None: use torch
    try:
        d = dict(config["detector"])
        yaml = d.pop("yaml", None) or d["architecture"]
        d.pop("weights", None)
        d["names"] = tuple(d.get("names", ("plankton",)))
        det_cfg = DetectorConfig(**d)
        emb_cfg = config["embedder"]
        id_cfg = IdentifierConfig.from_dict(config["identifier"], emb_cfg["backbone"])
        size_features = int(emb_cfg.get("size_features", 0))
        if bool(size_features) != id_cfg.crop.size_input:
            raise ValueError(f"embedder.size_features is {size_features} but identifier.crop.size_input is {id_cfg.crop.size_input}")
        if onnx_models is None:
            embedder = EmbeddingNet(emb_cfg["backbone"], int(emb_cfg["dim"]), size_features=size_features)
            det_model = build_detection_model(yaml, nc=len(det_cfg.names))
        else:
            det_model, embedder, runtime = onnx_models
    except (TypeError, KeyError, ValueError) as e:
        raise ArtifactError(f"{folder / CONFIG}: invalid configuration ({e})") from None
    if onnx_models is None:
        runtime = "torch"
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
    unknown = sorted(set(id_cfg.class_thresholds) - set(protos.names))
    if unknown:
        raise ArtifactError(f"{folder / CONFIG}: class thresholds for species without a prototype: {', '.join(unknown[:3])}")
    return Cascade(Detector(det_model, det_cfg, device), Identifier(embedder, id_cfg, protos, device), config=config, path=folder, runtime=runtime,
                   counts=_count_evidence(config, folder, protos.names))


def _count_evidence(config: dict, folder: Path, names: list[str]):
    """The count calibration named in config.json's ``counting`` section, or
    None for a model made before there was one (it counts raw boxes)."""
    file = (config.get("counting") or {}).get("file")
    if not file:
        return None
    try:
        evidence = CountEvidence.load(folder / file)
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{folder / file}: {str(e).splitlines()[0]}") from None
    return evidence.for_names(list(names))


def load_artifact(folder: str | Path | None = None, device: str = "cpu", verify: bool = True, runtime: str = "torch", streams: int = 1) -> Cascade:
    """Build a ready Cascade from an artifact folder (default:
    $PLANKTON_MODEL_DIR, else the bundled model). The config, weights and
    prototypes must agree, else ArtifactError. ``verify``: check every
    file's checksum (skip only for a folder just verified, e.g. a Hub
    download). ``runtime``: "torch" (default); "onnx": the folder's ONNX
    files in ONNX Runtime (CPU); "auto": the fastest usable ONNX files,
    else torch. ``cascade.runtime`` says which one runs. ``streams``: how
    many frames the OpenVINO INT8 networks may run at once
    (``cascade.frames_in_flight``; other runtimes run one)."""
    folder = model_dir(folder)
    return build_cascade(read_config(folder, check_files=verify), folder, runtime, device, streams)


__all__ = ["ArtifactError", "build_cascade", "load_artifact"]
