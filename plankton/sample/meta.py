"""Where and when a sample was taken, given once per sample: station,
latitude and longitude (decimal degrees, WGS84), date (YYYY-MM-DD) and
time (HH:MM:SS, UTC), the depth range in metres, and the country whose
waters it was taken in (ISO 3166-1 alpha-2, e.g. FR). Every field is
optional; what is given is checked, each bad field on one line naming it.

On the command line it is a JSON object (``predict --sample-meta FILE``)::

    {"station": "L4", "latitude": 50.25, "longitude": -4.217,
     "date": "2024-05-14", "time": "09:30:00", "depth_min": 0, "depth_max": 10,
     "country_code": "GB"}

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

KEYS = ("station", "latitude", "longitude", "date", "time", "depth_min", "depth_max", "country_code")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?Z?$")
# ISO 3166-1 alpha-2, the 249 officially assigned codes (as tzdata's iso3166.tab lists them).
COUNTRY_CODES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL
CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU
GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC
MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT
PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA
UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split())


class SampleMetaError(ValueError):
    """Bad sample metadata. ``problems``: one line per bad field, each
    starting ``sample metadata:`` and naming the field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class SampleMeta:
    """A sample's place and time. Build it with ``parse`` (checked); None or
    "" is a field not given. ``time`` is UTC; ``country_code`` is ISO
    3166-1 alpha-2 (Darwin Core's countryCode)."""

    station: str = ""
    latitude: float | None = None
    longitude: float | None = None
    date: str = ""
    time: str = ""
    depth_min: float | None = None
    depth_max: float | None = None
    country_code: str = ""

    def __post_init__(self):
        problems = _problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise SampleMetaError(problems)
        object.__setattr__(self, "country_code", self.country_code.strip().upper())  # Darwin Core's spelling, however it was typed

    @property
    def event_date(self) -> str:
        """ISO 8601 date, or date and time in UTC (``2024-05-14T09:30:00Z``)."""
        return f"{self.date}T{self.time}Z" if self.date and self.time else self.date

    def is_empty(self) -> bool:
        return self == SampleMeta()

    def as_dict(self) -> dict:
        return asdict(self)


def _given(value) -> bool:
    """None and "" (an empty CSV cell, a blank app field) are a field not
    given; anything else, 0 and false included, is given and checked."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _show(value) -> str:
    """A value as a message shows it: JSON's spelling for JSON's scalars,
    a short quote of text, only the kind of a list or object (which may be
    nested past what repr can print)."""
    if isinstance(value, dict):
        return "(an object)"
    if isinstance(value, list):
        return "(a list)"
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value) if not isinstance(value, int) or isinstance(value, bool) or abs(value) < 10 ** 30 else "(a very long number)"
    text = repr(str(value))
    return text if len(text) <= 60 else text[:56] + "…" + text[-1]


def _number(value, key: str, problems: list[str]) -> float | None:
    if not _given(value):
        return None
    if isinstance(value, bool):
        problems.append(f"sample metadata: {key} {_show(value)} is not a number")
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer too large for a float
        problems.append(f"sample metadata: {key} {_show(value)} is not a number")
        return None
    if not math.isfinite(v):
        problems.append(f"sample metadata: {key} {_show(value)} is not a finite number")
        return None
    return v


def _problems(values: dict) -> list[str]:
    problems: list[str] = []
    nums = {k: _number(values.get(k), k, problems) for k in ("latitude", "longitude", "depth_min", "depth_max")}
    for key, low, high in (("latitude", -90, 90), ("longitude", -180, 180)):
        v = nums[key]
        if v is not None and not low <= v <= high:
            problems.append(f"sample metadata: {key} {_show(values[key])} is outside {low}..{high}")
    if _given(values.get("latitude")) != _given(values.get("longitude")):
        missing = "latitude" if _given(values.get("longitude")) else "longitude"
        problems.append(f"sample metadata: {missing} is missing (latitude and longitude go together)")
    for key in ("depth_min", "depth_max"):
        if nums[key] is not None and nums[key] < 0:
            problems.append(f"sample metadata: {key} {_show(values[key])} is negative (depths are metres below the surface)")
    if None not in (nums["depth_min"], nums["depth_max"]) and nums["depth_min"] > nums["depth_max"]:
        problems.append(f"sample metadata: depth_min {_show(values['depth_min'])} is deeper than depth_max {_show(values['depth_max'])}")
    date, time = values.get("date"), values.get("time")
    if _given(date):
        if not isinstance(date, str) or not _DATE.match(date):
            problems.append(f"sample metadata: date {_show(date)} is not a date as YYYY-MM-DD")
        else:
            try:
                dt.date.fromisoformat(date)
            except ValueError:  # the right shape, but no such day (2026-02-30)
                problems.append(f"sample metadata: date {_show(date)} is not a real day")
    if _given(time):
        try:
            if not isinstance(time, str) or not _TIME.match(time):
                raise ValueError
            dt.time.fromisoformat(time.rstrip("Z"))
        except ValueError:
            problems.append(f"sample metadata: time {_show(time)} is not a UTC time as HH:MM:SS")
    if _given(time) and not _given(date):
        problems.append("sample metadata: time needs a date")
    station = values.get("station")
    if _given(station) and (isinstance(station, bool) or not isinstance(station, (str, int, float))
                            or (isinstance(station, float) and not math.isfinite(station))):
        problems.append(f"sample metadata: station {_show(station)} is not text")
    code = values.get("country_code")
    if _given(code) and (not isinstance(code, str) or code.strip().upper() not in COUNTRY_CODES):
        problems.append(f"sample metadata: country_code {_show(code)} is not an ISO 3166-1 alpha-2 country code (e.g. FR, GB, US)")
    return problems


def parse(values: dict) -> SampleMeta:
    """{key: value} (JSON numbers or text) → SampleMeta; SampleMetaError
    with one line per bad field, unknown keys included."""
    if not isinstance(values, dict):
        raise SampleMetaError([f"sample metadata: expected an object of {', '.join(KEYS)}, not {type(values).__name__}"])
    problems = [f"sample metadata: unknown key {_show(k)} (known: {', '.join(KEYS)})" for k in values if k not in KEYS]
    problems += _problems(values)
    if problems:
        raise SampleMetaError(problems)
    nums = {k: _number(values.get(k), k, []) for k in ("latitude", "longitude", "depth_min", "depth_max")}
    text = {k: str(values[k]).strip() if _given(values.get(k)) else "" for k in ("station", "date", "time", "country_code")}
    time = text["time"].rstrip("Z")
    return SampleMeta(station=" ".join(text["station"].split()), date=text["date"], time=time + ":00" if len(time) == 5 else time,
                      country_code=text["country_code"], **nums)


def _json_kind(value) -> str:
    return {type(None): "null", bool: "true or false", int: "a number", float: "a number", str: "text", list: "a list"}.get(type(value), "a value")


def parse_text(text: str, source: str = "sample metadata") -> SampleMeta:
    """JSON object, else ``key,value`` CSV rows → SampleMeta."""
    text = text.lstrip("\ufeff")
    expected = f"expected an object of {', '.join(KEYS)}"
    try:
        values = json.loads(text)
    except RecursionError:
        raise SampleMetaError([f"sample metadata: {source} is JSON nested too deeply to read; {expected}"]) from None
    except ValueError as e:  # JSONDecodeError, or an integer past Python's digit limit
        if text.lstrip()[:1] in ("{", "["):
            raise SampleMetaError([f"sample metadata: {source} is not valid JSON ({str(e).splitlines()[0][:120]})"]) from None
        return parse(_key_values(text, source))
    if not isinstance(values, dict):
        raise SampleMetaError([f"sample metadata: {source} is JSON but not an object (it holds {_json_kind(values)}); {expected}"])
    return parse(values)


def _key_values(text: str, source: str) -> dict:
    """``key,value`` CSV rows (a ``key,value`` header line optional) → dict."""
    values: dict = {}
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:  # a field past the csv module's size limit, say
        raise SampleMetaError([f"sample metadata: {source} is neither JSON nor a readable key,value CSV ({e})"]) from None
    for line, row in enumerate(rows, start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if line == 1 and [c.strip().lower() for c in row] == ["key", "value"]:
            continue
        if len(row) != 2:
            raise SampleMetaError([f"sample metadata: {source} line {line} has {len(row)} fields, not key,value"])
        key = row[0].strip()
        if key in values:
            raise SampleMetaError([f"sample metadata: {_show(key)} is given twice in {source}"])
        values[key] = row[1].strip()
    return values


def read(path: str | Path) -> SampleMeta:
    """A JSON or key,value CSV file → SampleMeta."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SampleMetaError([f"sample metadata: cannot read {path} ({getattr(e, 'strerror', None) or e})"]) from None
    return parse_text(text, str(path))


__all__ = ["COUNTRY_CODES", "KEYS", "SampleMeta", "SampleMetaError", "parse", "parse_text", "read"]
