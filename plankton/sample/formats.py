"""The export formats, in one table that ``predict --export``, the app's
Sample downloads and docs/publishing.md all read (tests/test_formats.py
holds the docs to it).

A format is a writer module and one row here. The module has two entry
points, both taking an ``ExportJob`` (``plankton.sample.exports``):
``write(job, path)``, the run's output ``OUT/<output>``, with its one-line
problems sent to ``job.report``, and ``data(job)``, the app's download
as bytes. Neither knows the run engine or the app: what they need of
either (frames, crops, rows) comes in the job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from plankton.sample import dwca, ecotaxa
from plankton.sample.exports import ExportJob


@dataclass(frozen=True)
class ExportFormat:
    """One format: ``name`` as ``--export`` spells it, ``title`` for
    people, ``output`` in a run's folder (a trailing ``/``: a folder),
    ``download`` the app's file name, ``needs_meta``: withheld in the app
    while the sample metadata is wrong, ``help`` one line for ``--help``,
    and the writer's two entry points."""

    name: str
    title: str
    output: str
    download: str
    needs_meta: bool
    help: str
    write: Callable[[ExportJob, Path], Path]
    data: Callable[[ExportJob], bytes]

    def write_into(self, out: str | Path, job: ExportJob) -> Path:
        """Write it where a run writes it: ``out/<output>``."""
        return self.write(job, Path(out) / self.output)


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("ecotaxa", "EcoTaxa import folder", "ecotaxa/", "ecotaxa.zip", True,
                 "an EcoTaxa import folder: TSV and one crop per object", ecotaxa.write, ecotaxa.data),
    ExportFormat("dwca", "Darwin Core Archive", "dwca.zip", "dwca.zip", True,
                 "a Darwin Core Archive for OBIS and GBIF", dwca.write, dwca.data),
)


def names() -> tuple[str, ...]:
    """The ``--export`` names, read from the table when asked."""
    return tuple(f.name for f in FORMATS)


def cli_help() -> str:
    """``predict --export``'s help, one clause per format."""
    return "also write " + " and/or ".join(f"OUT/{f.output} ({f.help})" for f in FORMATS) + "; docs/publishing.md"


__all__ = ["ExportFormat", "FORMATS", "cli_help", "names"]
