"""A Darwin Core Archive of samples, for OBIS and GBIF: ``meta.xml``,
``eml.xml`` and three tab-separated tables.

* ``event.txt`` (core): one event per sample, with its date and time, place,
  depth range, station (``locality``), country (``countryCode``) and the
  volume imaged (``sampleSizeValue`` in millilitres).
* ``occurrence.txt``: one row per taxon present in a sample, named by the
  model's taxonomy (``plankton.artifact.taxonomy``): scientific name, rank,
  kingdom, WoRMS LSID when an AphiaID is known, ``individualCount``
  (objects the model named), ``basisOfRecord`` ``MachineObservation`` and
  the model and version that identified them. Classes that name one taxon
  (``Chlamydomonas sp`` and the genus answer ``Chlamydomonas (genus)``)
  are one occurrence; a name at two ranks is two, with two ids
  (``occurrence_id``). Objects left ``unknown`` cannot be named and are
  not occurrences; the event's remarks give their number.
* ``extendedmeasurementorfact.txt`` (OBIS eMoF): per occurrence, the count,
  the abundance in cells per millilitre with its 95% interval, and the
  median equivalent spherical diameter when the optical scale is known.
  The abundance is the count estimate (corrected for the model's
  detection and identification errors) when the concentration rows carry
  a finite one, else the raw count over the volume with an exact Poisson
  interval; ``measurementMethod`` says which. Measurement types use the
  NERC vocabulary terms EcoTaxa's own Darwin Core export uses (P01
  ``OCOUNT01``, ``SDBIOL01``; P06 ``UMIC``); units without a term we could
  cite are left as text.

Written with the csv module and a hand-written meta.xml: the format is
small, and a library would add a dependency for no check we lack.
"""
from __future__ import annotations

import datetime as dt
import io
import math
import re
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from plankton.sample.exports import ExportJob
from plankton.sample.measure import Sample, box_sizes_um, concentration_rows, poisson_interval
from plankton.results import UNKNOWN, FrameResult
from plankton.sample.meta import SampleMeta
from plankton.artifact.taxonomy import Taxon, Taxonomy

DWC, OBIS = "http://rs.tdwg.org/dwc/terms/", "http://rs.iobis.org/obis/terms/"
P01, P06 = "http://vocab.nerc.ac.uk/collection/P01/current/", "http://vocab.nerc.ac.uk/collection/P06/current/"
EVENT_TERMS = ["eventID", "parentEventID", "eventDate", "decimalLatitude", "decimalLongitude", "geodeticDatum", "minimumDepthInMeters", "maximumDepthInMeters",
               "locality", "countryCode", "sampleSizeValue", "sampleSizeUnit", "samplingProtocol", "eventRemarks"]
OCCURRENCE_TERMS = ["occurrenceID", "eventID", "scientificName", "taxonRank", "kingdom", "scientificNameID", "occurrenceStatus", "basisOfRecord",
                    "individualCount", "identifiedBy", "identificationRemarks"]
EMOF_TERMS = ["measurementID", "occurrenceID", "measurementType", "measurementTypeID", "measurementValue", "measurementUnit",
              "measurementUnitID", "measurementMethod", "measurementRemarks"]
OBIS_EMOF = {"measurementTypeID", "measurementValueID", "measurementUnitID"}  # the rest of the eMoF terms are Darwin Core's
FILES = {"event": "event.txt", "occurrence": "occurrence.txt", "emof": "extendedmeasurementorfact.txt"}
ROW_TYPES = {"event": DWC + "Event", "occurrence": DWC + "Occurrence", "emof": OBIS + "ExtendedMeasurementOrFact"}
ESTIMATE_KEYS = ("cells_per_ml_est", "cells_per_ml_est_low", "cells_per_ml_est_high")


@dataclass
class Event:
    """One sample: its id, its frames, its scale and volume, its place and
    time, and optionally its concentration rows (dicts as
    ``measure.concentration_rows`` gives, values as numbers or text, e.g.
    read back from concentration.csv; None: computed from the frames)."""

    sample_id: str
    frames: list[FrameResult]
    sample: Sample = field(default_factory=Sample)
    meta: SampleMeta = field(default_factory=SampleMeta)
    rows: list[dict] | None = None


@dataclass
class Occurrence:
    """A taxon present in an event: the labels it gathers, the objects the
    model named so, the abundance (cells/ml, None without a volume) with its
    95% interval, whether that is the count estimate, and the objects'
    box-based ESDs in µm (empty without a scale)."""

    taxon: Taxon
    labels: list[str]
    count: int
    corrected: int
    cells_per_ml: float | None = None
    low: float | None = None
    high: float | None = None
    estimate: bool = False
    raw_cells_per_ml: float | None = None
    esd_um: list[float] = field(default_factory=list)


def _float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _num(v: float | None, digits: int = 6) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def occurrence_id(sample_id: str, taxon: Taxon) -> str:
    """The sample id, the name and the rank: a name at two ranks (the label
    ``Chlamydomonas``, no rank, and the genus answer) gives two ids, and an
    id never depends on what else the sample holds."""
    return "_".join([sample_id, _slug(taxon.scientific_name)] + ([taxon.rank] if taxon.rank else []))


def _unique(ids: list[str], taxa: list[Taxon]) -> list[str]:
    """Names that differ only where ``_slug`` replaced characters (``A/b``,
    ``A b``) would share an id: those get a digest of the exact name."""
    import hashlib

    seen = Counter(ids)
    return [i if seen[i] == 1 else f"{i}_{hashlib.sha1(f'{t.scientific_name}|{t.rank}'.encode()).hexdigest()[:8]}" for i, t in zip(ids, taxa)]


def occurrences(event: Event, taxonomy: Taxonomy) -> list[Occurrence]:
    """The event's taxa present, most objects first (then by name)."""
    objects = [o for f in event.frames for o in f.objects]
    counted = Counter(o.species for o in objects)
    rows = event.rows if event.rows is not None else (concentration_rows(event.frames, event.sample) if event.sample.volume_ul else [])
    by_label = {str(r["species"]): r for r in rows if str(r["species"]) not in (UNKNOWN, "total")}
    volume_ml = next((_float(r.get("volume_ml")) for r in rows), None)
    sizes = box_sizes_um(np.array([o.xyxy for o in objects], np.float64).reshape(-1, 4), event.sample.um_per_px)[:, 2]
    groups: dict[tuple, list[str]] = defaultdict(list)
    for label in list(by_label) + sorted(s for s in counted if s not in by_label):
        taxon = taxonomy.taxon(label)
        if label != UNKNOWN and taxon is not None and label not in groups[(taxon.scientific_name, taxon.rank)]:
            groups[(taxon.scientific_name, taxon.rank)].append(label)
    out = []
    for labels in groups.values():
        taxon = taxonomy.taxon(labels[0])
        n = sum(int(_float(by_label[lb]["count"]) or 0) if lb in by_label else counted.get(lb, 0) for lb in labels)
        if n == 0:
            continue
        occ = Occurrence(taxon, labels, n, sum(o.corrected for o in objects if o.species in labels),
                         esd_um=[float(s) for o, s in zip(objects, sizes) if o.species in labels and np.isfinite(s)])
        if volume_ml:
            low, high = poisson_interval(n)
            occ.raw_cells_per_ml, occ.low, occ.high = n / volume_ml, low / volume_ml, high / volume_ml
            occ.cells_per_ml = occ.raw_cells_per_ml
            est = [[_float(by_label.get(lb, {}).get(k)) for k in ESTIMATE_KEYS] for lb in labels]
            if all(v is not None for e in est for v in e):  # the estimate of every label, else the raw figure for all
                occ.cells_per_ml, occ.low, occ.high = (sum(e[i] for e in est) for i in range(3))
                occ.estimate = True
        out.append(occ)
    return sorted(out, key=lambda o: (-o.count, o.taxon.scientific_name))


def _tsv(rows: list[dict], terms: list[str], id_term: str) -> str:
    """The table with the id column first (``id_term``'s values), then the
    terms; tabs and line breaks inside values become spaces."""
    lines = ["\t".join(["id", *terms])]
    for r in rows:
        lines.append("\t".join(" ".join(str(r.get(t, "")).split()) for t in [id_term, *terms]))
    return "\n".join(lines) + "\n"


def _meta_xml() -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', '<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">']
    for kind, terms in (("event", EVENT_TERMS), ("occurrence", OCCURRENCE_TERMS), ("emof", EMOF_TERMS)):
        tag = "core" if kind == "event" else "extension"
        parts.append(f'  <{tag} encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1" '
                     f'rowType="{ROW_TYPES[kind]}">')
        parts.append(f"    <files><location>{FILES[kind]}</location></files>")
        parts.append('    <id index="0"/>' if kind == "event" else '    <coreid index="0"/>')
        for i, term in enumerate(terms, start=1):
            parts.append(f'    <field index="{i}" term="{OBIS if term in OBIS_EMOF else DWC}{term}"/>')
        parts.append(f"  </{tag}>")
    return "\n".join(parts + ["</archive>", ""])


def _eml(events: list[Event], model: str, software: str, title: str | None) -> str:
    ids = ", ".join(e.sample_id for e in events)
    title = title or f"Phytoplankton and protist counts from microscope images: sample{'s' if len(events) > 1 else ''} {ids}"
    abstract = (f"Objects in microscope frames of {len(events)} sample{'s' if len(events) > 1 else ''} ({ids}) were detected and identified "
                f"by {model} with {software}. Occurrences are the taxa the model named; objects it could not name (unknown) are not "
                "reported as occurrences. Abundances are per millilitre of sample imaged, with 95% intervals.")
    method = ("Detection by a YOLO object detector and identification by nearest class prototype of ArcFace embeddings; "
              "sizes are box-based estimates (ESD of the ellipse inscribed in the box). Abundance is either the raw count over the "
              "imaged volume (exact Poisson interval) or a count estimate corrected for the model's detection and identification "
              "errors, as each measurement's method says. Names follow the model's taxonomy table; AphiaIDs are given only "
              "where the table cites one.")
    para = lambda text: f"<para>{escape(text)}</para>"  # noqa: E731
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<eml:eml xmlns:eml="eml://ecoinformatics.org/eml-2.1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="eml://ecoinformatics.org/eml-2.1.1 http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd" '
        f'packageId={quoteattr(_slug(ids))} system="plankton" scope="system" xml:lang="en">',
        "<dataset>",
        f"  <title>{escape(title)}</title>",
        "  <creator><organizationName>To be completed by the data publisher</organizationName></creator>",
        f"  <pubDate>{dt.date.today().isoformat()}</pubDate>",
        "  <language>en</language>",
        f"  <abstract>{para(abstract)}</abstract>",
        f"  <intellectualRights>{para('To be chosen by the data publisher (OBIS prefers CC0 or CC-BY).')}</intellectualRights>",
        "  <contact><organizationName>To be completed by the data publisher</organizationName></contact>",
        f"  <methods><methodStep><description>{para(method)}</description></methodStep></methods>",
        "</dataset>",
        "</eml:eml>",
        "",
    ])


def _emof(event_id: str, occ_id: str, occ: Occurrence) -> list[dict]:
    rows = [{"measurementType": "Count (in assayed sample) of biological entity specified elsewhere", "measurementTypeID": P01 + "OCOUNT01/",
             "measurementValue": occ.count, "measurementUnit": "individuals",
             "measurementMethod": "objects the model identified as this taxon in the imaged volume"}]
    if occ.cells_per_ml is not None:
        how = ("count estimate corrected for the model's detection and identification errors (plankton quantification), "
               "over the imaged volume" if occ.estimate else "raw count of objects the model identified, over the imaged volume")
        interval = ("95% interval of the estimate (bootstrap of the calibration with Poisson noise)" if occ.estimate
                    else "exact Poisson 95% interval")
        if occ.estimate and len(occ.labels) > 1:
            interval += "; the limits of the classes it gathers are added, so it is wider than exact"
        abundance = "Abundance of biological entity specified elsewhere per unit volume of the water body"
        rows += [{"measurementType": abundance, "measurementTypeID": P01 + "SDBIOL01/", "measurementValue": _num(occ.cells_per_ml),
                  "measurementUnit": "cells/ml", "measurementMethod": how, "measurementRemarks": f"{interval}: {_num(occ.low)} to {_num(occ.high)}"},
                 {"measurementType": f"{abundance}, lower limit of the 95% interval", "measurementValue": _num(occ.low),
                  "measurementUnit": "cells/ml", "measurementMethod": interval},
                 {"measurementType": f"{abundance}, upper limit of the 95% interval", "measurementValue": _num(occ.high),
                  "measurementUnit": "cells/ml", "measurementMethod": interval}]
        if occ.estimate:
            rows.append({"measurementType": f"{abundance}, raw count", "measurementValue": _num(occ.raw_cells_per_ml), "measurementUnit": "cells/ml",
                         "measurementMethod": "raw count of objects the model identified, over the imaged volume (before correction)"})
    if occ.esd_um:
        rows.append({"measurementType": "Equivalent spherical diameter of biological entity specified elsewhere, median",
                     "measurementValue": _num(float(np.median(occ.esd_um)), 4), "measurementUnit": "µm", "measurementUnitID": P06 + "UMIC/",
                     "measurementMethod": "box-based estimate: diameter of the circle of the area of the ellipse inscribed in the box",
                     "measurementRemarks": f"median of {len(occ.esd_um)} objects; interquartile range "
                                           f"{_num(float(np.percentile(occ.esd_um, 25)), 4)} to {_num(float(np.percentile(occ.esd_um, 75)), 4)} µm"})
    return [r | {"eventID": event_id, "occurrenceID": occ_id, "measurementID": f"{occ_id}_{i}"} for i, r in enumerate(rows, start=1)]


def archive_files(events: list[Event], taxonomy: Taxonomy, model: str, software: str = "plankton", title: str | None = None) -> dict[str, bytes]:
    """{file name: bytes} of the archive. ``model``: the model's name and
    version as people should read it (identifiedBy), e.g.
    ``plankton-studycase version 3``."""
    ids = [e.sample_id for e in events]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two samples share an id: {sorted(i for i in set(ids) if ids.count(i) > 1)[0]!r}")
    ev_rows, occ_rows, emof_rows = [], [], []
    for e in events:
        m = e.meta
        unnamed = sum(taxonomy.taxon(o.species) is None for f in e.frames for o in f.objects)  # unknown, or a class the table names no taxon
        volume_ml = e.sample.volume_ul * len(e.frames) / 1000 if e.sample.volume_ul else None
        ev_rows.append({"eventID": e.sample_id, "eventDate": m.event_date, "decimalLatitude": _num(m.latitude, 9),
                        "decimalLongitude": _num(m.longitude, 9), "geodeticDatum": "WGS84" if m.latitude is not None else "",
                        "minimumDepthInMeters": _num(m.depth_min), "maximumDepthInMeters": _num(m.depth_max), "locality": m.station,
                        "countryCode": m.country_code,
                        "sampleSizeValue": _num(volume_ml), "sampleSizeUnit": "millilitre" if volume_ml else "",
                        "samplingProtocol": f"microscope imaging, {len(e.frames)} frame{'s' if len(e.frames) != 1 else ''}; "
                                            f"objects detected and identified by {model}",
                        "eventRemarks": f"{unnamed} of {sum(len(f.objects) for f in e.frames)} objects could not be named (unknown to the "
                                        "model) and are not reported as occurrences"})
        occs = occurrences(e, taxonomy)
        for occ, occ_id in zip(occs, _unique([occurrence_id(e.sample_id, o.taxon) for o in occs], [o.taxon for o in occs])):
            labels = ", ".join(repr(lb) for lb in occ.labels)
            if occ.corrected == occ.count:  # a name a person gave, perhaps one the model does not have
                remarks = f"named {labels} by a person reviewing the objects of {model} ({software}); all {occ.count} checked"
            else:
                checked = f"; {occ.corrected} of {occ.count} objects checked by a person" if occ.corrected else "; not checked by a person"
                remarks = f"machine identification by {model} ({software}) as {labels}{checked}"
            occ_rows.append({"occurrenceID": occ_id, "eventID": e.sample_id, "scientificName": occ.taxon.scientific_name,
                             "taxonRank": occ.taxon.rank, "kingdom": occ.taxon.kingdom, "scientificNameID": occ.taxon.lsid, "occurrenceStatus": "present",
                             "basisOfRecord": "MachineObservation", "individualCount": occ.count, "identifiedBy": f"{model} ({software})",
                             "identificationRemarks": remarks})
            emof_rows += _emof(e.sample_id, occ_id, occ)
    return {"meta.xml": _meta_xml().encode(), "eml.xml": _eml(events, model, software, title).encode(),
            FILES["event"]: _tsv(ev_rows, EVENT_TERMS, "eventID").encode(),
            FILES["occurrence"]: _tsv(occ_rows, OCCURRENCE_TERMS, "eventID").encode(),
            FILES["emof"]: _tsv(emof_rows, EMOF_TERMS, "eventID").encode()}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """The archive as a zip, its files at the top level (as readers expect)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def write_archive(path: str | Path, files: dict[str, bytes]) -> Path:
    """Write the zip atomically to ``path``."""
    from plankton.files import atomic_write_bytes

    atomic_write_bytes(path, zip_bytes(files))
    return Path(path)


def publishing_gaps(event: Event) -> list[str]:
    """What OBIS requires of an event that the sample metadata lacks, one
    line each (the archive is still written)."""
    m = event.meta
    out = []
    if not m.date:
        out.append(f"{event.sample_id}: no date (eventDate), which OBIS requires; give it in --sample-meta")
    if m.latitude is None:
        out.append(f"{event.sample_id}: no latitude and longitude, which OBIS requires; give them in --sample-meta")
    if not m.country_code:
        out.append(f"{event.sample_id}: no country_code (countryCode), which OBIS requires; give it in --sample-meta")
    return out


def event_of(job: ExportJob) -> Event:
    return Event(job.sample_id, list(job.frames), job.sample, job.meta or SampleMeta(), job.rows)


def write(job: ExportJob, path: str | Path) -> Path:
    """The archive at ``path``, after one line for each field OBIS requires
    that the sample metadata lacks (the archive is written all the same)."""
    event = event_of(job)
    for gap in publishing_gaps(event):
        job.report(f"Darwin Core: {gap}")
    return write_archive(path, archive_files([event], job.taxonomy, job.model, job.software))


def data(job: ExportJob) -> bytes:
    """The archive's bytes, nothing reported (the app's download)."""
    return zip_bytes(archive_files([event_of(job)], job.taxonomy, job.model, job.software))


__all__ = ["Event", "Occurrence", "archive_files", "data", "event_of", "write", "occurrence_id", "occurrences", "publishing_gaps", "write_archive", "zip_bytes"]
