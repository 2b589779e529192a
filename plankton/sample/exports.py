"""What ``predict --export`` and ``info`` need to publish a sample (see
docs/publishing.md): the sample metadata and taxonomy read and checked
before a run, the EcoTaxa folder and the Darwin Core Archive written after
it, and the taxonomy described for people."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from plankton.results import FrameResult
from plankton.sample.meta import SampleMeta, SampleMetaError
from plankton.sample.meta import read as read_meta
from plankton.artifact.taxonomy import FILE as TAXONOMY_FILE
from plankton.artifact.taxonomy import Taxonomy, TaxonomyError, for_model, read_csv


class PublishInputError(ValueError):
    """Bad sample metadata or taxonomy; ``problems``: one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(problems))


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


def export(kinds: list[str], out: Path, sample_id: str, paths: list[str], frames: dict[str, FrameResult], sample, meta: SampleMeta,
           taxonomy: Taxonomy, config: dict, max_pixels: int | None, report: Callable[[str], None], quiet: bool = False) -> None:
    """``OUT/ecotaxa/`` and/or ``OUT/dwca.zip`` for a finished run; the
    concentration rows of the archive are read back from the run's
    concentration.csv, so both show the same figures."""
    from plankton._version import __version__

    ordered = [frames[k] for k in sorted(frames, key=lambda k: (frames[k].image, k))]
    if "ecotaxa" in kinds:
        from plankton.run.batch import export_ecotaxa
        from plankton.sample.ecotaxa import ExportInfo

        info = ExportInfo(sample_id, sample.um_per_px, sample.volume_ul, f"plankton {__version__}", str(config.get("name") or ""),
                          meta=meta, taxonomy=taxonomy, frames=len(ordered))
        export_ecotaxa(out / "ecotaxa", paths, frames, info, max_pixels, report, quiet)
    if "dwca" in kinds:
        from plankton.sample.dwca import Event, archive_files, publishing_gaps, write_archive

        conc = out / "concentration.csv"
        rows = concentration_rows_from_csv(conc.read_text(encoding="utf-8")) if sample.volume_ul and conc.is_file() else None
        event = Event(sample_id, ordered, sample, meta, rows)
        for gap in publishing_gaps(event):
            report(f"Darwin Core: {gap}")
        write_archive(out / "dwca.zip", archive_files([event], taxonomy, model_label(config), f"plankton {__version__}"))


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


__all__ = ["PublishInputError", "concentration_rows_from_csv", "export", "model_label", "publish_inputs", "taxonomy_summary"]
