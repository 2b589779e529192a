"""What each class of a model is, as a taxon: a scientific name, a rank, an
optional WoRMS AphiaID and a kingdom. Class labels stay as they are in the app and
the CSVs; exports that land in shared databases (EcoTaxa, Darwin Core)
use the scientific names, because those databases match names against
their own taxonomy (WoRMS-like), where ``Chlorella sp`` is no name at all.

The table lives in the model folder as ``taxonomy.csv`` (columns
``class,scientific_name,rank,aphia_id,kingdom``; the last two optional). A
model without one, and any class the table does not list, gets the table
derived from the label:

* ``Chlorella sp`` / ``sp.`` / ``spp`` / ``spp.`` → ``Chlorella``, genus;
* ``Chlamydomonas (genus)`` (a genus-level answer) → ``Chlamydomonas``, genus;
* two words (``Bodo saltans``) → the same, species;
* ``unknown`` and ``not plankton`` → no taxon (a table may not give
  ``unknown`` one: it is the model's answer, not a class);
* anything else → the label itself with no rank (nothing is guessed).

AphiaIDs are never derived: they are filled only by whoever edits the CSV
from a source they can cite. A taxon's kingdom is the table's, else the
one ``plankton.artifact.kingdoms`` lists for its genus, else empty.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from plankton.artifact.kingdoms import KINGDOMS, default_kingdom
from plankton.results import NOT_PLANKTON, UNKNOWN

FILE = "taxonomy.csv"
COLUMNS = ("class", "scientific_name", "rank", "aphia_id", "kingdom")
RANKS = ("kingdom", "subkingdom", "phylum", "subphylum", "superclass", "class", "subclass", "superorder", "order", "suborder",
         "superfamily", "family", "subfamily", "tribe", "genus", "subgenus", "species", "subspecies", "variety", "form")
NO_TAXON = (UNKNOWN, NOT_PLANKTON)
WORMS_LSID = "urn:lsid:marinespecies.org:taxname:"
_SP = re.compile(r"^(?P<genus>\S+)\s+(sp|spp)\.?$", re.IGNORECASE)
_GENUS_ANSWER = re.compile(r"^(?P<genus>.+?)\s*\(genus\)$", re.IGNORECASE)
_APHIA_ID = re.compile(r"^0*[1-9][0-9]{0,11}$")  # ASCII digits only: "²" passes str.isdigit() but not int()


class TaxonomyError(ValueError):
    """A taxonomy table that cannot be used. ``problems``: one line per bad
    row; the message is the first of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


@dataclass(frozen=True)
class Taxon:
    """scientific_name without qualifiers (``Chlorella``), rank from
    ``RANKS`` or "" when not known, aphia_id or None, and kingdom (one of
    ``kingdoms.KINGDOMS``): when not given, the one listed for the genus,
    so every taxon of a name has the same kingdom wherever it was made."""

    scientific_name: str
    rank: str = ""
    aphia_id: int | None = None
    kingdom: str = ""

    def __post_init__(self):
        if not self.kingdom:
            object.__setattr__(self, "kingdom", default_kingdom(self.scientific_name))

    @property
    def lsid(self) -> str:
        """Darwin Core scientificNameID: the WoRMS LSID, "" without an AphiaID."""
        return f"{WORMS_LSID}{self.aphia_id}" if self.aphia_id else ""


def _words(label: str) -> str:
    return " ".join(str(label).split())


def _is_unknown(label: str) -> bool:
    """``unknown`` is the model's answer for what it cannot name: never a
    class with a taxon, in any case."""
    return _words(label).lower() == UNKNOWN


def derive(label: str) -> Taxon | None:
    """The taxon a class label names, by the rules in the module docstring."""
    label = _words(label)
    if not label or label.lower() in NO_TAXON:
        return None
    for pattern in (_GENUS_ANSWER, _SP):
        m = pattern.match(label)
        if m:
            return Taxon(_words(m["genus"]), "genus")
    return Taxon(label, "species" if len(label.split()) == 2 else "")


class Taxonomy:
    """{class label: Taxon or None}; ``taxon(label)`` falls back to
    ``derive`` for labels it does not list."""

    def __init__(self, rows: dict[str, Taxon | None] | None = None):
        self.rows: dict[str, Taxon | None] = {_words(k): v for k, v in (rows or {}).items() if not _is_unknown(k)}

    @classmethod
    def derived(cls, names: list[str]) -> "Taxonomy":
        return cls({n: derive(n) for n in names})

    def taxon(self, label: str) -> Taxon | None:
        label = _words(label)
        if _is_unknown(label):  # whatever a table says: unknown objects are counted as unnamed
            return None
        if label in self.rows:
            return self.rows[label]
        m = _GENUS_ANSWER.match(label)
        if m:  # a genus answer of a genus whose species the table names: the table's spelling and AphiaID, if it has a genus row
            genus = _words(m["genus"])
            known = [t for t in self.rows.values() if t and t.rank == "genus" and t.scientific_name.lower() == genus.lower()]
            if known:
                return known[0]
        return derive(label)

    def name(self, label: str) -> str:
        """The scientific name of ``label``; "" when it names no taxon."""
        t = self.taxon(label)
        return t.scientific_name if t else ""

    def completed(self, names: list[str]) -> "Taxonomy":
        """This table with a derived row for each of ``names`` it lacks (a
        new species enrolled), in the order of ``names`` then the rest."""
        rows = {n: self.taxon(n) for n in names}
        return Taxonomy(rows | {k: v for k, v in self.rows.items() if k not in rows})

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for label, t in self.rows.items():
            w.writerow([label, t.scientific_name, t.rank, t.aphia_id or "", t.kingdom] if t else [label, "", "", "", ""])
        return buf.getvalue()

    def __eq__(self, other) -> bool:
        return isinstance(other, Taxonomy) and self.rows == other.rows

    def __repr__(self) -> str:
        return f"Taxonomy({len(self.rows)} classes)"


def parse_csv(text: str, source: str = FILE) -> Taxonomy:
    """CSV text with the header ``class,scientific_name,rank,aphia_id,kingdom``
    (``aphia_id`` and ``kingdom`` may be left out) → Taxonomy. An empty
    scientific_name means the class names no taxon. TaxonomyError lists
    every bad row."""
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    except csv.Error as e:  # a field past the csv module's size limit, say
        raise TaxonomyError([f"{source}: not a readable CSV ({e})"]) from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if header[:3] != list(COLUMNS[:3]) or any(h not in COLUMNS for h in header) or len(set(header)) != len(header):
        raise TaxonomyError([f"{source}: the first line must be {','.join(COLUMNS)}, not {','.join(header) or 'empty'}"])
    problems, table, seen = [], {}, set()
    for line, values in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"{source} line {line}: {len(values)} fields for {len(header)} columns")
            continue
        r = {h: _words(v) for h, v in zip(header, values)}
        label, name, rank, aphia, kingdom = r["class"], r["scientific_name"], r["rank"].lower(), r.get("aphia_id", ""), r.get("kingdom", "")
        before = len(problems)
        if not label:
            problems.append(f"{source} line {line}: no class")
        elif label in seen:
            problems.append(f"{source} line {line}: class {label!r} is listed twice")
        elif _is_unknown(label):
            problems.append(f"{source} line {line}: class {label!r} is the model's answer for objects it cannot name, not a class: "
                            "leave it out (its objects are counted as unnamed)")
        if rank and rank not in RANKS:
            problems.append(f"{source} line {line}: rank {r['rank']!r} is not one of {', '.join(RANKS)}")
        if aphia and not _APHIA_ID.match(aphia):
            problems.append(f"{source} line {line}: aphia_id {aphia!r} is not a positive whole number")
        if kingdom and kingdom.capitalize() not in KINGDOMS:
            problems.append(f"{source} line {line}: kingdom {kingdom!r} is not one of {', '.join(KINGDOMS)}")
        if not name and (rank or aphia or kingdom):
            problems.append(f"{source} line {line}: a rank, aphia_id or kingdom needs a scientific_name")
        if name and re.search(r"\s(sp|spp)\.?$", name, re.IGNORECASE):
            problems.append(f"{source} line {line}: scientific_name {name!r} ends in 'sp': give the genus alone, with rank genus")
        seen.add(label)
        if len(problems) == before:
            table[label] = Taxon(name, rank, int(aphia) if aphia else None, kingdom.capitalize()) if name else None
    if problems:
        raise TaxonomyError(problems)
    return Taxonomy(table)


def read_csv(path: str | Path) -> Taxonomy:
    """A taxonomy CSV file → Taxonomy; TaxonomyError naming the file when it
    cannot be read or has bad rows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TaxonomyError([f"{path}: cannot read the taxonomy ({getattr(e, 'strerror', None) or e})"]) from None
    return parse_csv(text, str(path))


def for_model(folder: str | Path, names: list[str]) -> Taxonomy:
    """The model folder's ``taxonomy.csv``, completed with derived rows for
    any of ``names`` (its classes) it lacks; the derived table without one."""
    path = Path(folder) / FILE
    return (read_csv(path) if path.is_file() else Taxonomy()).completed(list(names))


def store(folder: str | Path, taxonomy: Taxonomy) -> None:
    """Write ``taxonomy.csv`` into a model folder and record it (size and
    sha256) in its config.json, so that checksum checks cover it."""
    from plankton.files import atomic_write_text
    from plankton.artifact.manifest import write_manifest

    atomic_write_text(Path(folder) / FILE, taxonomy.to_csv())
    write_manifest(folder)


__all__ = ["FILE", "RANKS", "Taxon", "Taxonomy", "TaxonomyError", "derive", "for_model", "parse_csv", "read_csv", "store"]
