"""What every export of a sample takes (see docs/publishing.md): the
``ExportJob`` each writer reads, the sample metadata and taxonomy read and
checked before a run, and the taxonomy described for people. The formats
themselves are listed in ``plankton.sample.formats``."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from plankton._version import __version__
from plankton.results import FrameResult
from plankton.sample.measure import Sample
from plankton.sample.meta import SampleMeta, SampleMetaError
from plankton.sample.meta import read as read_meta
from plankton.artifact.taxonomy import FILE as TAXONOMY_FILE
from plankton.artifact.taxonomy import Taxonomy, TaxonomyError, for_model, read_csv


class PublishInputError(ValueError):
    """Bad sample metadata or taxonomy; ``problems``: one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(problems))


Crops = Callable[[], Iterable[tuple[FrameResult, list | Exception]]]


def _no_crops():
    return iter(())


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ExportJob:
    """Everything a writer may read, and nothing of the run engine or the
    app: the sample's id, its frames in order, ``crops`` (called once, by
    the writers that need pixels: (frame, its objects' crops in order, or
    the exception that kept the frame from being read) for each frame, so
    a run re-reads its files and the app cuts from its cache), the scale
    and volume, the place and time, the taxonomy naming the classes,
    ``model`` as people read it (name and version: Darwin Core's
    identifiedBy, EcoTaxa's ``process_model``), the software, the
    concentration rows (None: computed from the frames) and where one-line
    problems go."""

    sample_id: str
    frames: tuple[FrameResult, ...]
    crops: Crops = _no_crops
    sample: Sample = field(default_factory=Sample)
    meta: SampleMeta = field(default_factory=SampleMeta)
    taxonomy: Taxonomy = field(default_factory=Taxonomy)
    model: str = "plankton model version 1"
    software: str = f"plankton {__version__}"
    rows: list[dict] | None = None
    report: Callable[[str], None] = _quiet


def publish_inputs(meta_file: str | None, taxonomy_file: str | None, model_folder, class_names: list[str]) -> tuple[SampleMeta, Taxonomy]:
    """The sample's metadata (empty without a file) and the taxonomy: the
    file given, else the model's taxonomy.csv, else derived from the
    labels; every problem of either at once."""
    problems, meta, taxonomy = [], SampleMeta(), Taxonomy()
    try:
        meta = read_meta(meta_file) if meta_file else SampleMeta()
    except SampleMetaError as e:
        problems += e.problems
    try:
        taxonomy = read_csv(taxonomy_file).completed(list(class_names)) if taxonomy_file else for_model(model_folder, list(class_names))
    except TaxonomyError as e:
        problems += e.problems
    if problems:
        raise PublishInputError(problems)
    return meta, taxonomy


def model_label(config: dict) -> str:
    """The model as Darwin Core's identifiedBy names it: name and version."""
    return f"{config.get('name') or 'plankton model'} version {config.get('version', 1)}"


def concentration_rows_from_csv(text: str) -> list[dict]:
    """concentration.csv (as ``writers.sample_tables`` writes it, with the
    count estimates when the model has a count calibration) → its rows."""
    return list(csv.DictReader(io.StringIO(text)))


def taxonomy_summary(folder, names: list[str]) -> tuple[dict, list[str]]:
    """({source, classes: {label: {scientific_name, rank, aphia_id}}}, a few
    lines for ``info``) of a model folder's taxonomy."""
    stored = (Path(folder) / TAXONOMY_FILE).is_file()
    try:
        table = for_model(folder, names)
    except TaxonomyError as e:
        return {"source": TAXONOMY_FILE, "error": str(e)}, [f"taxonomy: {TAXONOMY_FILE} cannot be used: {e}"]
    rows = {n: table.taxon(n) for n in names}
    info = {"source": TAXONOMY_FILE if stored else "derived from the class labels",
            "classes": {n: {"scientific_name": t.scientific_name, "rank": t.rank, "aphia_id": t.aphia_id} if t else None for n, t in rows.items()}}
    ranks: dict[str, int] = {}
    for t in rows.values():
        if t:
            ranks[t.rank or "no rank"] = ranks.get(t.rank or "no rank", 0) + 1
    renamed = [f"{n} → {t.scientific_name} ({t.rank or 'no rank'})" for n, t in rows.items() if t and t.scientific_name != n]
    aphia = sum(1 for t in rows.values() if t and t.aphia_id)
    lines = [f"taxonomy ({info['source']}): " + ", ".join(f"{k} {v}" for k, v in sorted(ranks.items())) + f"; {aphia} with an AphiaID"
             + (f"; no taxon: {', '.join(n for n, t in rows.items() if t is None)}" if any(t is None for t in rows.values()) else "")]
    if renamed:
        lines.append("exported as: " + ", ".join(renamed[:4]) + (f" and {len(renamed) - 4} more" if len(renamed) > 4 else ""))
    return info, lines


__all__ = ["Crops", "ExportJob", "PublishInputError", "concentration_rows_from_csv", "model_label", "publish_inputs", "taxonomy_summary"]
