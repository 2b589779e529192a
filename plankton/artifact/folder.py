"""A model artifact is a folder: safetensors weights for both stages,
``prototypes.safetensors`` and ``config.json`` (architectures, input sizes,
normalisation, class names, thresholds, versions and file checksums).
Loading never unpickles anything."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from plankton._version import __version__
from plankton.model.detector import DetectorConfig
from plankton.model.embedder import EmbeddingNet
from plankton.files import atomic_folder
from plankton.model.identifier import IdentifierConfig
from plankton.artifact.manifest import DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, FORMAT_VERSION, PROTOTYPES, write_manifest
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


__all__ = ["save_artifact"]
