"""Corrections become a new model version, without retraining the networks.

Boxes with people's labels (a COCO file: corrections made in the app, or
any annotations) are embedded by the model. A new species gets
prototypes; examples of a known species join that species' support
embeddings and its prototypes are built again; objects marked
``not plankton`` form a class the identifier answers ``unknown`` to. The
child model is a new folder: the parent's networks and files, new
prototypes, and a config that records the parent's checksum, the
corrections' checksum, the examples per species and a version one higher.

Before it is written, the model's stored validation set is scored with the
parent's and the child's prototypes: a correction set that costs the
existing species more than ``max_drop`` top-1 is refused unless forced.
"""
from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plankton.files import atomic_folder, sha256
from plankton.artifact.manifest import CONFIG, PROTOTYPES, ArtifactError, read_config, write_manifest
from plankton.model.prototypes import Prototypes
from plankton.results import NOT_PLANKTON
from plankton.artifact.validation import FILE as VALIDATION_FILE
from plankton.artifact.validation import ValidationSet

MAX_DROP = 0.01


class EnrolRefused(ArtifactError):
    """The corrections would cost the existing species too much accuracy."""


@dataclass
class EnrolReport:
    """What an enrolment did: examples per label, new species, negatives,
    and the stored validation set's top-1 on the parent's species before
    and after (None without a validation set)."""

    examples: dict[str, int]
    new_species: list[str]
    top1_before: float | None
    top1_after: float | None
    objects_checked: int
    version: int
    out: Path | None = None

    @property
    def top1_change(self) -> float | None:
        return None if self.top1_before is None else self.top1_after - self.top1_before


def embed_corrections(cascade, coco_path: str | Path, images: str | Path | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """{label: N×D embeddings} of the boxes of a COCO file, each frame's boxes
    in one batch. Unreadable frames or entries raise (one line each)."""
    from tqdm import tqdm

    from plankton.coco import load_coco
    from plankton.images import read_image

    ds = load_coco(coco_path, images)
    names = {c.id: c.name for c in ds.categories.values()}
    out: dict[str, list] = defaultdict(list)
    for i in tqdm(sorted(ds.images), desc="corrected frames", unit="frame", disable=not progress or len(ds.images) < 2):
        boxes = ds.boxes_of(i)
        if not boxes:
            continue
        emb = cascade.identifier.embed_boxes(read_image(ds.path_of(i)), ds.xyxy_of(i))
        for b, e in zip(boxes, emb):
            out[" ".join(names[b.category_id].split())].append(e)
    return {k: np.stack(v) for k, v in out.items()}


def validation_top1(validation: ValidationSet, prototypes: Prototypes, species: list[str]) -> tuple[float | None, int]:
    """Nearest-prototype top-1 of the stored validation objects whose true
    species is in ``species``, and how many there are."""
    true = np.asarray(validation.true_names, dtype=object)
    keep = np.isin(true, species)
    if not keep.any():
        return None, 0
    sim = prototypes.similarity(validation.embeddings[keep])
    return float(np.mean(np.asarray(prototypes.names, dtype=object)[sim.argmax(1)] == true[keep])), int(keep.sum())


def enrol(model: str | Path, examples: dict[str, np.ndarray], out: str | Path, *, force: bool = False, max_drop: float = MAX_DROP,
          source: dict | None = None, taxonomy=None) -> EnrolReport:
    """Write the child of ``model`` with ``examples`` ({label: N×D
    embeddings, from the model's own identifier}) to ``out``. ``source``
    describes where the examples came from (recorded in config.json).
    ``taxonomy`` (``plankton.artifact.taxonomy.Taxonomy``) replaces the parent's
    taxonomy.csv; either way the child's lists every class, new species
    with rows derived from their labels. EnrolRefused when top-1 on the
    existing species drops by more than ``max_drop`` and not ``force``."""
    model, out = Path(model), Path(out)
    config = read_config(model)
    examples = {" ".join(k.split()): np.asarray(v, np.float32) for k, v in examples.items() if len(v)}
    if not examples:
        raise ValueError("no corrected examples to enrol")
    parent = Prototypes.load(model / PROTOTYPES)
    child = parent.add(examples)
    evaluation = config["prototypes"].get("evaluation_file")
    # The validation objects are scored with the prototypes they were not built from, as training.evaluate does.
    scored = Prototypes.load(model / evaluation) if evaluation else parent
    scored_child = scored.add(examples) if evaluation else child
    before = after = None
    n = 0
    if (model / VALIDATION_FILE).is_file():
        validation = ValidationSet.load(model / VALIDATION_FILE)
        species = [s for s in scored.names if s != NOT_PLANKTON]
        before, n = validation_top1(validation, scored, species)
        after, _ = validation_top1(validation, scored_child, species)
    report = EnrolReport({k: len(v) for k, v in examples.items()}, [k for k in examples if k not in parent.names and k != NOT_PLANKTON],
                         before, after, n, int(config.get("version", 1)) + 1)
    if report.top1_change is not None and report.top1_change < -max_drop and not force:
        raise EnrolRefused(f"these corrections lower top-1 on the stored validation objects of the existing species from {before:.3f} to "
                           f"{after:.3f} (more than {max_drop}); check them, or pass --force to enrol them anyway")
    _write_child(model, out, config, child, scored_child if evaluation else None, report, source or {}, taxonomy)
    report.out = out
    return report


def _write_child(model: Path, out: Path, config: dict, prototypes: Prototypes, evaluation: Prototypes | None, report: EnrolReport, source: dict,
                 taxonomy=None) -> None:
    from plankton.artifact.taxonomy import FILE as TAXONOMY_FILE
    from plankton.artifact.taxonomy import for_model

    with atomic_folder(out) as tmp:
        for name in config.get("files", {}):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model / name, tmp / name)
        table = taxonomy.completed(list(prototypes.names)) if taxonomy is not None else for_model(model, list(prototypes.names))
        (tmp / TAXONOMY_FILE).write_text(table.to_csv(), encoding="utf-8")
        prototypes.save(tmp / PROTOTYPES)
        if evaluation is not None:
            evaluation.save(tmp / config["prototypes"]["evaluation_file"])
        if (tmp / VALIDATION_FILE).is_file():  # similarities against the new classes, for the app's tables
            v = ValidationSet.load(tmp / VALIDATION_FILE)
            scored = evaluation or prototypes
            new = [n for n in scored.names if n not in v.class_names]
            v.prototype_layout = np.vstack([v.prototype_layout, v.place(scored.means[[scored.names.index(n) for n in new]])]) if new else v.prototype_layout
            v.similarity, v.class_names = scored.similarity(v.embeddings), list(scored.names)
            v.save(tmp / VALIDATION_FILE)
        cats = [dict(c) for c in config.get("categories", [])]
        for name in prototypes.names:
            if name not in {c["name"] for c in cats} and name != NOT_PLANKTON:
                cats.append({"id": max((c["id"] for c in cats), default=0) + 1, "name": name})
        config = config | {
            "version": report.version,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "categories": cats,
            "parent": {"name": config.get("name"), "version": report.version - 1, "config_sha256": sha256(model / CONFIG)},
            "enrolled": {"source": source, "examples_per_label": report.examples, "new_species": report.new_species,
                         "validation_top1_before": report.top1_before, "validation_top1_after": report.top1_after,
                         "validation_objects": report.objects_checked,
                         "note": "metrics.json and the plots are the parent's evaluation; the networks are unchanged"},
        }
        config["prototypes"] = config["prototypes"] | {"names": list(prototypes.names)}
        write_manifest(tmp, config)


__all__ = ["EnrolRefused", "EnrolReport", "embed_corrections", "enrol", "validation_top1"]
