"""The export formats are one table (``plankton.sample.formats``): the CLI's
``--export``, the app's Sample downloads and docs/publishing.md follow it,
and each writer takes an ``ExportJob`` alone, writing the same export to a
run's folder and to the app's bytes."""
from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest

from plankton.results import UNKNOWN, Candidate, FrameResult, ObjectResult
from plankton.sample.exports import ExportJob
from plankton.sample.formats import FORMATS, names
from plankton.sample.measure import Sample
from plankton.sample.meta import SampleMeta
from repo_paths import REPO


def obj(xyxy, species, sim=0.9):
    return ObjectResult(tuple(float(v) for v in xyxy), 0.8, species, sim, (Candidate(species, sim), Candidate("b sp", sim - 0.1)))


FRAMES = (FrameResult("one.jpg", 200, 100, [obj((10, 10, 30, 20), "a sp"), obj((50, 50, 90, 90), "a sp"), obj((0, 0, 8, 8), UNKNOWN, 0.3)]),
          FrameResult("two.jpg", 200, 100, [obj((5, 5, 15, 35), "b sp")]))


def crops_of(frames, unreadable=()):
    def crops():  # the same pixels at each call, as a re-read of the same files gives
        rng = np.random.default_rng(0)
        for f in frames:
            yield f, OSError(f"{f.image}: cannot be read") if f.image in unreadable else [rng.integers(0, 255, (12, 9, 3), np.uint8) for _ in f.objects]

    return crops


def docs_rows() -> dict[str, list[str]]:
    """The formats table of docs/publishing.md: ``--export`` name → its cells."""
    rows = {}
    for line in (REPO / "docs" / "publishing.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    return rows


def test_the_table_is_well_formed():
    assert names() == ("ecotaxa", "dwca")
    for key in ("name", "output", "download", "title"):
        values = [getattr(f, key) for f in FORMATS]
        assert len(set(values)) == len(values), f"two formats share a {key}"
    assert all(callable(f.write) and callable(f.data) and f.help and "\n" not in f.help for f in FORMATS)


def test_every_format_is_described_in_the_docs():
    rows = docs_rows()
    assert set(rows) == set(names()), "docs/publishing.md's formats table and plankton.sample.formats list other formats"
    for f in FORMATS:
        name, output, download, what = rows[f.name]
        assert (output, download) == (f"`{f.output}`", f"`{f.download}`") and what.startswith(f.title), f.name


def test_predict_help_offers_every_format(capsys):
    from plankton.cli import build_parser

    parser = build_parser()
    predict = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    (export,) = [a for a in predict._actions if "--export" in a.option_strings]
    assert tuple(export.choices) == names()
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in FORMATS:
        assert f.name in text and f"OUT/{f.output}" in text and " ".join(f.help.split()) in text
    assert parser.parse_args(["predict", "x", "--out", "o", "--export", *names()]).export == list(names())


def test_the_app_downloads_follow_the_table():
    from plankton_app.tabs.sample import FILES, LABELS, PUBLISHED

    assert FILES[-len(FORMATS):] == [f.download for f in FORMATS]
    assert PUBLISHED == tuple(f.download for f in FORMATS if f.needs_meta)
    assert all(LABELS[f.download] == f.title for f in FORMATS)


@pytest.mark.parametrize("fmt", FORMATS, ids=names())
def test_a_run_folder_and_the_app_bytes_hold_the_same_export(tmp_path, fmt):
    reports = []
    job = ExportJob("st 7", FRAMES, crops_of(FRAMES), Sample(0.5, 2.0), SampleMeta("L4", 50.25, -4.2, "2024-05-14"), model="m version 2",
                    report=reports.append)
    written = fmt.write_into(tmp_path, job)
    assert written.exists()
    out = tmp_path / fmt.output
    with zipfile.ZipFile(io.BytesIO(fmt.data(job))) as zf:
        got = {n: zf.read(n) for n in zf.namelist()}
    if out.is_dir():
        assert got == {p.name: p.read_bytes() for p in out.iterdir()}
    else:
        with zipfile.ZipFile(out) as zf:
            assert got == {n: zf.read(n) for n in zf.namelist()}
    # what the metadata lacks is said once, in one line per field (the app's bytes say nothing)
    assert reports == (["Darwin Core: st 7: no country_code (countryCode), which OBIS requires; give it in --sample-meta"] if fmt.name == "dwca" else [])


def test_a_frame_that_cannot_be_read_is_reported_and_left_out(tmp_path):
    from plankton.sample.ecotaxa import check_folder

    reports = []
    ecotaxa = next(f for f in FORMATS if f.name == "ecotaxa")
    ecotaxa.write_into(tmp_path, ExportJob("s", FRAMES, crops_of(FRAMES, {"one.jpg"}), model="m version 2", report=reports.append))
    assert reports == ["EcoTaxa export: one.jpg: cannot be read"]
    assert check_folder(tmp_path / "ecotaxa") == [] and sorted(p.name for p in (tmp_path / "ecotaxa").glob("*.png")) == ["s_two_0000.png"]
    header, _, row = (line.split("\t") for line in (tmp_path / "ecotaxa" / "ecotaxa_s.tsv").read_text(encoding="utf-8-sig").splitlines())
    assert dict(zip(header, row))["process_model"] == "m version 2"  # the model as Darwin Core names it too


def test_a_new_format_is_one_writer_and_one_row(tmp_path, monkeypatch, tiny_artifact):
    """The promise the table makes, held: a writer and a row added in the
    test alone, and ``predict --export`` offers and writes it, and the
    app's Sample downloads carry it, with no other change."""
    from app_utils import app_artifact
    from plankton.cli import build_parser, main
    from plankton.sample import formats
    from plankton_app.service import Service
    from repo_paths import EXAMPLES

    def write(job, path):
        path.write_text(data(job).decode(), encoding="utf-8")
        return path

    def data(job):
        return f"{job.sample_id}: {sum(len(f.objects) for f in job.frames)} objects in {len(job.frames)} frames".encode()

    toy = formats.ExportFormat("toy", "Toy list", "toy.txt", "toy.txt", False, "one line per sample", write, data)
    monkeypatch.setattr(formats, "FORMATS", formats.FORMATS + (toy,))
    predict = next(a for a in build_parser()._actions if a.dest == "command").choices["predict"]
    assert "toy" in next(a for a in predict._actions if "--export" in a.option_strings).choices
    frame = sorted((EXAMPLES / "frames").iterdir())[0]
    out = tmp_path / "run"
    assert main(["predict", str(frame), "--out", str(out), "--model", str(tiny_artifact), "--export", "toy", "--sample-id", "s1", "--quiet"]) == 0
    assert re.fullmatch(r"s1: \d+ objects in 1 frames", (out / "toy.txt").read_text(encoding="utf-8"))
    service = Service.load(app_artifact(tiny_artifact))
    session = service.analyse([str(frame)])
    files = service.sample_files(session, service.refilter(session), sample_id="s2")
    assert files["toy.txt"].decode().startswith("s2: ")

