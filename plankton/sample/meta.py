"""Where and when a sample was taken, given once per sample: station,
latitude and longitude (decimal degrees, WGS84), date (YYYY-MM-DD) and
time (HH:MM:SS, UTC), and the depth range in metres. Every field is
optional; what is given is checked, each bad field on one line naming it.

On the command line it is a JSON object (``predict --sample-meta FILE``)::

    {"station": "L4", "latitude": 50.25, "longitude": -4.217,
     "date": "2024-05-14", "time": "09:30:00", "depth_min": 0, "depth_max": 10}

or a CSV of ``key,value`` rows with the same keys (a ``key,value`` header
line is optional).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

KEYS = ("station", "latitude", "longitude", "date", "time", "depth_min", "depth_max")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?Z?$")


class SampleMetaError(ValueError):
    """Bad sample metadata. ``problems``: one line per bad field, each
    starting ``sample metadata:`` and naming the field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class SampleMeta:
    """A sample's place and time. Build it with ``parse`` (checked); None or
    "" is a field not given. ``time`` is UTC."""

    station: str = ""
    latitude: float | None = None
    longitude: float | None = None
    date: str = ""
    time: str = ""
    depth_min: float | None = None
    depth_max: float | None = None

    def __post_init__(self):
        problems = _problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise SampleMetaError(problems)

    @property
    def event_date(self) -> str:
        """ISO 8601 date, or date and time in UTC (``2024-05-14T09:30:00Z``)."""
        return f"{self.date}T{self.time}Z" if self.date and self.time else self.date

    def is_empty(self) -> bool:
        return self == SampleMeta()

    def as_dict(self) -> dict:
        return asdict(self)


def _number(value, key: str, problems: list[str]) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        problems.append(f"sample metadata: {key} {value!r} is not a number")
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        problems.append(f"sample metadata: {key} {value!r} is not a number")
        return None
    if not math.isfinite(v):
        problems.append(f"sample metadata: {key} {value!r} is not a finite number")
        return None
    return v


def _problems(values: dict) -> list[str]:
    problems: list[str] = []
    nums = {k: _number(values.get(k), k, problems) for k in ("latitude", "longitude", "depth_min", "depth_max")}
    for key, low, high in (("latitude", -90, 90), ("longitude", -180, 180)):
        v = nums[key]
        if v is not None and not low <= v <= high:
            problems.append(f"sample metadata: {key} {values[key]!r} is outside {low}..{high}")
    lat, lon = values.get("latitude"), values.get("longitude")
    if (lat is None or lat == "") != (lon is None or lon == ""):
        missing = "longitude" if lon is None or lon == "" else "latitude"
        problems.append(f"sample metadata: {missing} is missing (latitude and longitude go together)")
    for key in ("depth_min", "depth_max"):
        if nums[key] is not None and nums[key] < 0:
            problems.append(f"sample metadata: {key} {values[key]!r} is negative (depths are metres below the surface)")
    if None not in (nums["depth_min"], nums["depth_max"]) and nums["depth_min"] > nums["depth_max"]:
        problems.append(f"sample metadata: depth_min {values['depth_min']!r} is deeper than depth_max {values['depth_max']!r}")
    date, time = values.get("date") or "", values.get("time") or ""
    if date:
        try:
            if not isinstance(date, str) or not _DATE.match(date):
                raise ValueError
            dt.date.fromisoformat(date)
        except ValueError:
            problems.append(f"sample metadata: date {date!r} is not a date as YYYY-MM-DD")
    if time:
        try:
            if not isinstance(time, str) or not _TIME.match(time):
                raise ValueError
            dt.time.fromisoformat(time.rstrip("Z"))
        except ValueError:
            problems.append(f"sample metadata: time {time!r} is not a UTC time as HH:MM:SS")
    if time and not date:
        problems.append("sample metadata: time needs a date")
    station = values.get("station")
    if station is not None and not isinstance(station, (str, int, float)):
        problems.append(f"sample metadata: station {station!r} is not text")
    return problems


def parse(values: dict) -> SampleMeta:
    """{key: value} (JSON numbers or text) → SampleMeta; SampleMetaError
    with one line per bad field, unknown keys included."""
    if not isinstance(values, dict):
        raise SampleMetaError([f"sample metadata: expected an object of {', '.join(KEYS)}, not {type(values).__name__}"])
    problems = [f"sample metadata: unknown key {k!r} (known: {', '.join(KEYS)})" for k in values if k not in KEYS]
    problems += _problems(values)
    if problems:
        raise SampleMetaError(problems)
    nums = {k: _number(values.get(k), k, []) for k in ("latitude", "longitude", "depth_min", "depth_max")}
    time = str(values.get("time") or "").rstrip("Z")
    return SampleMeta(station=" ".join(str(values.get("station") or "").split()), date=str(values.get("date") or ""),
                      time=time + ":00" if len(time) == 5 else time, **nums)


def parse_text(text: str, source: str = "sample metadata") -> SampleMeta:
    """JSON object, else ``key,value`` CSV rows → SampleMeta."""
    text = text.lstrip("\ufeff")
    if text.lstrip()[:1] in ("{", "["):  # JSON; a list is refused by parse with its own message
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise SampleMetaError([f"sample metadata: {source} is not valid JSON ({e})"]) from None
        return parse(values)
    values: dict = {}
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if line == 1 and [c.strip().lower() for c in row] == ["key", "value"]:
            continue
        if len(row) != 2:
            raise SampleMetaError([f"sample metadata: {source} line {line} has {len(row)} fields, not key,value"])
        key = row[0].strip()
        if key in values:
            raise SampleMetaError([f"sample metadata: {key} is given twice in {source}"])
        values[key] = row[1].strip()
    return parse(values)


def read(path: str | Path) -> SampleMeta:
    """A JSON or key,value CSV file → SampleMeta."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SampleMetaError([f"sample metadata: cannot read {path} ({getattr(e, 'strerror', None) or e})"]) from None
    return parse_text(text, str(path))


__all__ = ["KEYS", "SampleMeta", "SampleMetaError", "parse", "parse_text", "read"]
