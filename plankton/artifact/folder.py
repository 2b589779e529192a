"""A model artifact is a folder: safetensors weights for both stages,
``prototypes.safetensors`` and ``config.json`` (architectures, input sizes,
normalisation, class names, thresholds, versions and file checksums).
Loading never unpickles anything."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from plankton import __version__
from plankton.model.cascade import Cascade
from plankton.model.detector import Detector, DetectorConfig, build_detection_model
from plankton.model.embedder import EmbeddingNet
from plankton.files import atomic_folder
from plankton.model.identifier import Identifier, IdentifierConfig
from plankton.artifact.manifest import (CONFIG, DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, FORMAT_VERSION, PROTOTYPES, ArtifactError, model_dir, read_config,
                       write_manifest)
from plankton.model.prototypes import Prototypes

EVALUATION_PROTOTYPES = "prototypes_train.safetensors"


def _versions() -> dict:
    from plankton.model._ultralytics import __version__ as ultralytics_version

    return {"plankton": __version__, "torch": torch.__version__, "ultralytics": ultralytics_version}


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
    evaluation_prototypes: Prototypes | None = None,
    taxonomy=None,
) -> Path:
    """Write a complete artifact folder (replacing ``folder`` only once the
    new one is complete). ``detector`` must be the unfused DetectionModel.
    ``categories``: COCO categories ({"id", "name"}) for COCO output ids.
    ``weights_dtype="float16"`` halves the files (as Ultralytics' own
    checkpoints do); loading casts back to the model's float32.
    ``evaluation_prototypes``: when ``prototypes`` were built from the
    validation frames too, the training-frames-only ones, which evaluation
    scores instead (``prototypes.evaluation_file``). ``taxonomy``: the
    classes' scientific names (``plankton.artifact.taxonomy.Taxonomy``), written as
    taxonomy.csv; default: derived from the class names."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_folder(folder) as tmp:  # safetensors writes 0600; the folder's files end up readable by a web app's account
        dtype = getattr(torch, weights_dtype)
        save_file(_state(detector, dtype), str(tmp / DETECTOR_WEIGHTS))
        save_file(_state(embedder, dtype), str(tmp / EMBEDDER_WEIGHTS))
        prototypes.save(tmp / PROTOTYPES)
        protos_section = {"file": PROTOTYPES, "names": list(prototypes.names), "subcenters": int(prototypes.subcenters.shape[1]), "mode": prototypes.mode}
        if evaluation_prototypes is not None:
            evaluation_prototypes.save(tmp / EVALUATION_PROTOTYPES)
            protos_section["evaluation_file"] = EVALUATION_PROTOTYPES
        arch = detector_cfg.architecture
        det = detector_cfg.to_dict() | {"yaml": getattr(detector, "yaml", None) or arch, "weights": DETECTOR_WEIGHTS}
        config = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "detector": det,
            "embedder": {"backbone": embedder.backbone_name, "dim": embedder.dim, "size_features": embedder.size_features, "weights": EMBEDDER_WEIGHTS},
            "identifier": identifier_cfg.to_dict(),
            "prototypes": protos_section,
            "categories": categories or [{"id": i + 1, "name": n} for i, n in enumerate(prototypes.names)],
        } | (extra or {})
        from plankton.artifact.taxonomy import FILE as TAXONOMY_FILE
        from plankton.artifact.taxonomy import Taxonomy

        (tmp / TAXONOMY_FILE).write_text((taxonomy or Taxonomy()).completed(list(prototypes.names)).to_csv(), encoding="utf-8")
        write_manifest(tmp, config)
    return folder


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
        from plankton.runtime.registry import load_onnx_models

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
    from plankton.sample.quantify import CountEvidence

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


__all__ = ["ArtifactError", "build_cascade", "load_artifact", "save_artifact"]
