"""Publishing a sample: the EcoTaxa import folder with the sample's place
and time, plain taxon names and ids that carry the sample id, and the
Darwin Core Archive read back with python-dwca-reader. The frames are the
committed example frames with their annotated boxes as the objects, so
every expected figure comes from the ground truth, not from the model."""
from __future__ import annotations

import csv
import importlib.util
import io
import math
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter

import pytest
from dwca.read import DwCAReader

from plankton.sample.dwca import Event, archive_files, occurrences, write_archive
from plankton.sample.ecotaxa import EcotaxaExport, ExportInfo, check_folder
from plankton.images import read_image
from plankton.sample.measure import Sample
from plankton.results import UNKNOWN, Candidate, FrameResult, ObjectResult
from plankton.sample.meta import SampleMeta
from plankton.artifact.taxonomy import Taxon, Taxonomy, derive

DWC, OBIS = "http://rs.tdwg.org/dwc/terms/", "http://rs.iobis.org/obis/terms/"
META = SampleMeta("L4", 50.25, -4.217, "2024-05-14", "09:30:00", 0.0, 10.0, "GB")


@pytest.fixture(scope="module")
def truth(frames_coco):
    """[(image array, FrameResult with the annotated boxes as objects)] of
    the committed frames, in id order."""
    out = []
    for image_id in sorted(frames_coco.images):
        im = frames_coco.images[image_id]
        objects = []
        for b in frames_coco.boxes_of(image_id):
            name = frames_coco.categories[b.category_id].name
            objects.append(ObjectResult(b.xyxy, 0.9, name, 0.8, (Candidate(name, 0.8), Candidate("Chlorella sp", 0.5))))
        out.append((read_image(frames_coco.path_of(image_id)), FrameResult(im.file_name, im.width, im.height, objects)))
    return out


def _export(folder, truth, sample_id, meta=META):
    e = EcotaxaExport(folder, ExportInfo(sample_id, 0.5, 2.0, "plankton test", "model-x", meta=meta, frames=len(truth)))
    for image, frame in truth:
        e.add_image(image, frame)
    tsv = e.close()
    text = tsv.read_bytes().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    return rows[0], rows[1], [dict(zip(rows[0], r)) for r in rows[2:]]


def test_ecotaxa_rows_carry_place_time_and_plain_names(tmp_path, truth):
    header, types, rows = _export(tmp_path / "a", truth, "st7")
    assert check_folder(tmp_path / "a") == []
    labels = [o.species for _, f in truth for o in f.objects]
    assert len(rows) == len(labels) == 38
    assert {(r["object_lat"], r["object_lon"], r["object_date"], r["object_time"], r["object_depth_min"], r["object_depth_max"])
            for r in rows} == {("50.25", "-4.217", "20240514", "093000", "0", "10")}
    assert {types[header.index(c)] for c in ("object_lat", "object_lon", "object_depth_min", "sample_tot_vol", "acq_pixel_size")} == {"[f]"}
    # names EcoTaxa's taxonomy has: the genus alone, the species as is; the model's label kept beside it
    assert [r["object_label"] for r in rows] == labels
    assert [r["object_annotation_category"] for r in rows] == [derive(lb).scientific_name for lb in labels]
    assert not any(r["object_annotation_category"].endswith((" sp", " sp.", " spp")) for r in rows)
    assert Counter(r["object_annotation_category"] for r in rows)["Chlorella"] == 10
    assert {r["object_annotation_category"] for r in rows} >= {"Bodo saltans", "Chlamydomonas reinhardtii", "Chlamydomonas"}
    # the fields EcoTaxa's default formulae read: litres imaged (3 frames × 2 µl), no subsampling, mm per pixel, area in px²
    r = rows[0]
    assert (float(r["sample_tot_vol"]), r["acq_sub_part"], float(r["acq_pixel_size"]), r["sample_station"]) == (6e-6, "1", 0.0005, "L4")
    w, h = float(r["object_bbox_width"]), float(r["object_bbox_height"])
    assert float(r["object_area"]) == pytest.approx(math.pi / 4 * w * h, rel=1e-3)
    assert float(r["object_esd_um"]) == pytest.approx(math.sqrt(4 * float(r["object_area"]) / math.pi) * 0.5, rel=2e-3)
    assert {r["object_annotation_status"] for r in rows} == {"predicted"}


def test_ids_carry_the_sample_id_and_two_samples_do_not_collide(tmp_path, truth):
    _, _, a = _export(tmp_path / "a", truth, "cruise 1 st 7")
    _, _, b = _export(tmp_path / "b", truth, "cruise 1 st 8")  # the same frame names: a camera that restarted its numbering
    assert check_folder(tmp_path / "b") == []
    assert all(r["object_id"].startswith("cruise_1_st_7_") and r["img_file_name"] == r["object_id"] + ".png" for r in a)
    assert {r["object_id"] for r in a}.isdisjoint(r["object_id"] for r in b)
    assert {r["img_file_name"] for r in a}.isdisjoint(r["img_file_name"] for r in b)
    assert {r["sample_id"] for r in a} == {"cruise 1 st 7"} and len({r["object_id"] for r in a}) == len(a)


def test_the_format_check_catches_a_bad_place_or_time(tmp_path, truth):
    header, types, rows = _export(tmp_path / "a", truth[:1], "st7")
    tsv = next((tmp_path / "a").glob("ecotaxa_*.tsv"))
    rows[0] |= {"object_lat": "123", "object_date": "14/05/2024"}
    tsv.write_text("\n".join("\t".join(r) for r in [header, types] + [[row[c] for c in header] for row in rows]) + "\n", encoding="utf-8-sig")
    problems = check_folder(tmp_path / "a")
    assert [p.split(": ", 1)[1] for p in problems] == ["object_lat = '123' is outside -90..90",
                                                       "object_date = '14/05/2024' is not YYYYMMDD or YYYY-MM-DD"]


def _read(path):
    """{event id: (core row data, [occurrence data], [eMoF data])}."""
    out = {}
    with DwCAReader(str(path)) as d:
        assert d.descriptor.core.type == DWC + "Event"
        assert [e.type for e in d.descriptor.extensions] == [DWC + "Occurrence", OBIS + "ExtendedMeasurementOrFact"]
        assert {DWC + t for t in ("eventID", "eventDate", "decimalLatitude", "decimalLongitude", "minimumDepthInMeters", "maximumDepthInMeters",
                                  "locality", "countryCode", "sampleSizeValue", "sampleSizeUnit")} <= set(d.descriptor.core.terms)
        occ_terms, emof_terms = (set(e.terms) for e in d.descriptor.extensions)
        assert {DWC + t for t in ("occurrenceID", "scientificName", "taxonRank", "kingdom", "scientificNameID", "occurrenceStatus", "basisOfRecord",
                                  "individualCount", "identifiedBy", "identificationRemarks")} <= occ_terms
        assert {DWC + "measurementType", DWC + "measurementValue", DWC + "measurementUnit", OBIS + "measurementTypeID"} <= emof_terms
        for row in d:
            ext = lambda kind: [e.data for e in row.extensions if e.rowtype == kind]  # noqa: E731
            out[row.id] = (row.data, ext(DWC + "Occurrence"), ext(OBIS + "ExtendedMeasurementOrFact"))
    return out


def test_darwin_core_archive_reads_back(tmp_path, truth):
    frames = [f for _, f in truth]
    table = Taxonomy.derived([]).completed(["Bodo saltans"])
    table.rows["Bodo saltans"] = Taxon("Bodo saltans", "species", 999999004)  # an id only to see it written; none is shipped
    events = [Event("st7", frames[:2], Sample(0.5, 2.0), META),
              Event("st8", frames[2:], Sample(0.5, 2.0), SampleMeta(latitude=-33.5, longitude=151.25, date="2024-06-01"))]
    path = write_archive(tmp_path / "dwca.zip", archive_files(events, table, "model-x version 3", "plankton test"))
    got = _read(path)
    assert sorted(got) == ["st7", "st8"]  # one event per sample
    core, occ, emof = got["st7"]
    assert (core[DWC + "eventDate"], core[DWC + "decimalLatitude"], core[DWC + "decimalLongitude"]) == ("2024-05-14T09:30:00Z", "50.25", "-4.217")
    assert (core[DWC + "minimumDepthInMeters"], core[DWC + "maximumDepthInMeters"], core[DWC + "locality"]) == ("0", "10", "L4")
    assert (core[DWC + "countryCode"], got["st8"][0][DWC + "countryCode"]) == ("GB", "")
    assert (float(core[DWC + "sampleSizeValue"]), core[DWC + "sampleSizeUnit"]) == (0.004, "millilitre")  # 2 frames × 2 µl
    assert got["st8"][0][DWC + "eventDate"] == "2024-06-01" and got["st8"][0][DWC + "locality"] == ""
    for eid, (core, occ, emof) in got.items():
        sub = frames[:2] if eid == "st7" else frames[2:]
        expected = Counter(derive(o.species).scientific_name for f in sub for o in f.objects)
        assert {o[DWC + "scientificName"]: int(o[DWC + "individualCount"]) for o in occ} == expected  # one occurrence per taxon present
        assert len(occ) == len(expected) and len({o[DWC + "occurrenceID"] for o in occ}) == len(occ)
        for o in occ:
            assert (o[DWC + "occurrenceStatus"], o[DWC + "basisOfRecord"], o[DWC + "eventID"]) == ("present", "MachineObservation", eid)
            assert "model-x version 3" in o[DWC + "identifiedBy"] and "model-x version 3" in o[DWC + "identificationRemarks"]
            assert o[DWC + "taxonRank"] == derive(o[DWC + "scientificName"] + (" sp" if " " not in o[DWC + "scientificName"] else "")).rank
            abundance = [m for m in emof if m[DWC + "occurrenceID"] == o[DWC + "occurrenceID"] and m[OBIS + "measurementTypeID"].endswith("/SDBIOL01/")]
            volume_ml = len(sub) * 2 / 1000
            assert float(abundance[0][DWC + "measurementValue"]) == pytest.approx(int(o[DWC + "individualCount"]) / volume_ml, rel=1e-5)
            assert abundance[0][DWC + "measurementUnit"] == "cells/ml" and "raw count" in abundance[0][DWC + "measurementMethod"]
    occ7 = {o[DWC + "scientificName"]: o for o in got["st7"][1]}
    bodo = [o for _, occ, _ in got.values() for o in occ if o[DWC + "scientificName"] == "Bodo saltans"]
    assert [o[DWC + "scientificNameID"] for o in bodo] == ["urn:lsid:marinespecies.org:taxname:999999004"]
    assert occ7["Chlorella"][DWC + "scientificNameID"] == "" and occ7["Chlorella"][DWC + "taxonRank"] == "genus"
    kingdoms = {o[DWC + "scientificName"]: o[DWC + "kingdom"] for _, occ, _ in got.values() for o in occ}
    assert {n: kingdoms[n] for n in ("Chlorella", "Bodo saltans", "Microcystis", "Prymnesium", "Gymnodinium")} \
        == {"Chlorella": "Plantae", "Bodo saltans": "Protozoa", "Microcystis": "Bacteria", "Prymnesium": "Chromista", "Gymnodinium": "Chromista"}
    esd = [m for m in got["st7"][2] if m[DWC + "occurrenceID"] == occ7["Chlorella"][DWC + "occurrenceID"] and "diameter" in m[DWC + "measurementType"]]
    assert len(esd) == 1 and esd[0][DWC + "measurementUnit"] == "µm" and float(esd[0][DWC + "measurementValue"]) > 0
    with zipfile.ZipFile(path) as zf:
        eml = ET.fromstring(zf.read("eml.xml"))
    assert eml.find("dataset/title").text.endswith("samples st7, st8")


def test_abundance_uses_the_count_estimate_when_finite(truth):
    frames = [f for _, f in truth]
    rows = [{"species": "Chlorella sp", "count": "10", "volume_ml": "0.006", "cells_per_ml_est": "2000", "cells_per_ml_est_low": "1500",
             "cells_per_ml_est_high": "2600"},
            {"species": "Oscillatoria sp", "count": "7", "volume_ml": "0.006", "cells_per_ml_est": "nan", "cells_per_ml_est_low": "nan",
             "cells_per_ml_est_high": "nan"},
            {"species": "unknown", "count": "0", "volume_ml": "0.006"}, {"species": "total", "count": "38", "volume_ml": "0.006"}]
    occ = {o.taxon.scientific_name: o for o in occurrences(Event("s", frames, Sample(None, 2.0), rows=rows), Taxonomy())}
    assert (occ["Chlorella"].estimate, occ["Chlorella"].cells_per_ml, occ["Chlorella"].low, occ["Chlorella"].high) == (True, 2000, 1500, 2600)
    assert occ["Chlorella"].raw_cells_per_ml == pytest.approx(10 / 0.006)
    assert occ["Oscillatoria"].estimate is False and occ["Oscillatoria"].cells_per_ml == pytest.approx(7 / 0.006)
    assert occ["Oscillatoria"].esd_um == []  # no scale, no sizes


def test_labels_of_one_taxon_are_one_occurrence_and_unknowns_none():
    box = (0.0, 0.0, 10.0, 10.0)
    objs = [ObjectResult(box, 0.9, s, 0.8) for s in ["Chlamydomonas sp", "Chlamydomonas (genus)", "Chlamydomonas (genus)", UNKNOWN, UNKNOWN]]
    event = Event("s1", [FrameResult("f.png", 20, 20, objs)], Sample(1.0, 1.0))
    (occ,) = occurrences(event, Taxonomy())
    assert (occ.taxon, occ.count, sorted(occ.labels)) == (Taxon("Chlamydomonas", "genus"), 3, ["Chlamydomonas (genus)", "Chlamydomonas sp"])
    assert occ.cells_per_ml == pytest.approx(3000) and occ.esd_um == [10.0, 10.0, 10.0]
    files = archive_files([event], Taxonomy(), "m version 1")
    event_row = files["event.txt"].decode().splitlines()[1].split("\t")
    assert event_row[-1] == "2 of 5 objects could not be named (unknown to the model) and are not reported as occurrences"
    with pytest.raises(ValueError, match="two samples share an id: 's1'"):
        archive_files([event, event], Taxonomy(), "m version 1")
    # a table that names unknown objects anyway: they are still counted as not named
    files = archive_files([event], Taxonomy({"unknown": Taxon("Unknownia", "genus")}), "m version 1")
    assert files["event.txt"].decode().splitlines()[1].endswith("2 of 5 objects could not be named (unknown to the model) and are not "
                                                                "reported as occurrences")
    assert "Unknownia" not in files["occurrence.txt"].decode()


def test_one_name_at_two_ranks_gives_two_occurrence_ids():
    box = (0.0, 0.0, 10.0, 10.0)
    objs = [ObjectResult(box, 0.9, s, 0.8) for s in ["Chlamydomonas", "Chlamydomonas (genus)", "Chlamydomonas (genus)"]]
    event = Event("s1", [FrameResult("f.png", 20, 20, objs)], Sample(1.0, 1.0))
    assert sorted((o.taxon.rank, o.count) for o in occurrences(event, Taxonomy())) == [("", 1), ("genus", 2)]
    files = archive_files([event], Taxonomy(), "m version 1")
    occ = [dict(zip(*(line.split("\t") for line in (lines[0], row)))) for lines in [files["occurrence.txt"].decode().splitlines()]
           for row in lines[1:]]
    ids = [o["occurrenceID"] for o in occ]
    assert len(ids) == len(set(ids)) == 2 and all(i.startswith("s1_Chlamydomonas") for i in ids)
    emof = files["extendedmeasurementorfact.txt"].decode().splitlines()
    measured = [dict(zip(emof[0].split("\t"), row.split("\t"))) for row in emof[1:]]
    assert len({m["measurementID"] for m in measured}) == len(measured)  # each measurement id once
    for o in occ:  # each occurrence's own count, not the other's
        counts = [m["measurementValue"] for m in measured if m["occurrenceID"] == o["occurrenceID"] and m["measurementType"].startswith("Count")]
        assert counts == [o["individualCount"]]
    # names that _slug would make alike still get ids of their own
    slugged = Event("s2", [FrameResult("f.png", 20, 20, [ObjectResult(box, 0.9, s, 0.8) for s in ["A/b", "A b"]])], Sample(1.0, 1.0))
    lines = archive_files([slugged], Taxonomy({"A/b": Taxon("A/b"), "A b": Taxon("A b")}), "m version 1")["occurrence.txt"].decode().splitlines()
    assert len({line.split("\t")[1] for line in lines[1:]}) == 2


def test_obis_checks_that_run_offline(tmp_path, truth):
    """pyobistools' checks that need no network (field presence, event and
    measurement ids). It is not in requirements-test.txt: it pins
    pandas<3 and pulls in cartopy and geopandas for its on-land check."""
    pytest.importorskip("pyobistools", reason="pyobistools is not installed: .ci/run installs it with pip install --no-deps pyobistools==1.1.0")
    import pandas as pd
    from pyobistools.validation.check_eventids import check_eventids, check_extension_eventids
    from pyobistools.validation.check_fields import check_fields
    from pyobistools.validation.check_measurementids import check_measurementids

    from plankton.artifact.taxonomy import read_csv
    from repo_paths import REPO

    frames = [f for _, f in truth]
    bundled = read_csv(REPO / "models" / "default" / "taxonomy.csv")  # the bundled labels, "Ichtyobodo sp" spelled right
    with_ids = Taxonomy({lb: Taxon(t.scientific_name, t.rank, 999999000 + i) for i, (lb, t) in enumerate(bundled.rows.items())})  # test ids
    no_country = SampleMeta(**(META.as_dict() | {"country_code": ""}))
    for table, meta, expected in ((bundled, META, {"scientificNameID"}), (with_ids, META, set()), (with_ids, no_country, {"countryCode"})):
        files = archive_files([Event("st7", frames, Sample(0.5, 2.0), meta)], table, "m version 1")
        ev, occ, emof = (pd.read_csv(io.BytesIO(files[n]), sep="\t", dtype=str, keep_default_na=False)
                         for n in ("event.txt", "occurrence.txt", "extendedmeasurementorfact.txt"))
        # the flat occurrence table OBIS checks: without AphiaIDs, their absence is all it finds; kingdom and countryCode are filled
        assert set(check_fields(occ.merge(ev.drop(columns=["id"]), on="eventID"), level="error")["field"]) == expected
        assert set(check_fields(ev, level="error", analysis_type="event_core")["field"]) == expected - {"scientificNameID"}
        for problems in (check_eventids(ev), check_extension_eventids(ev, occ), check_extension_eventids(ev, emof), check_measurementids(emof)):
            assert len(problems) == 0, problems.to_string()


@pytest.mark.slow
def test_predict_exports_both_with_metadata(tiny_artifact, tmp_path):
    """`predict --export ecotaxa dwca --sample-meta --taxonomy`: concentration.csv
    keeps its columns and adds the metadata after them; both exports exist
    and agree on the sample; with a country code and the bundled taxonomy
    table, OBIS' offline field checks find only the AphiaIDs missing; a bad
    metadata file stops before any frame."""
    from repo_paths import EXAMPLES, REPO
    from plankton.artifact.taxonomy import read_csv
    from plankton.cli import main

    meta = tmp_path / "meta.json"
    meta.write_text('{"station": "L4", "latitude": 50.25, "longitude": -4.217, "date": "2024-05-14", "time": "09:30:00", '
                     '"depth_min": 0, "depth_max": 10, "country_code": "FR"}')
    taxonomy = REPO / "models" / "default" / "taxonomy.csv"
    out = tmp_path / "out"
    frame = sorted((EXAMPLES / "frames").iterdir())[0]  # one frame: at the random model's floor it has hundreds of objects
    args = ["predict", str(frame), "--model", str(tiny_artifact), "--runtime", "torch", "--det-conf", "0.001",
            "--um-per-px", "0.5", "--volume-ul", "2", "--sample-id", "st7", "--quiet"]
    assert main(args + ["--out", str(out), "--export", "ecotaxa", "dwca", "--sample-meta", str(meta), "--taxonomy", str(taxonomy)]) == 0
    header = (out / "concentration.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["species", "count", "volume_ml", "cells_per_ml", "cells_per_ml_low", "cells_per_ml_high"]
    assert header[-8:] == ["station", "latitude", "longitude", "date", "time", "depth_min", "depth_max", "country_code"]
    assert (out / "concentration.csv").read_text().splitlines()[1].endswith(",FR")
    assert check_folder(out / "ecotaxa") == []
    got = _read(out / "dwca.zip")
    assert list(got) == ["st7"] and got["st7"][0][DWC + "eventDate"] == "2024-05-14T09:30:00Z"
    conc = {r["species"]: int(r["count"]) for r in csv.DictReader(open(out / "concentration.csv"))}
    table, named = read_csv(taxonomy), Counter()
    for label, n in conc.items():
        if label not in (UNKNOWN, "total"):
            named[table.name(label)] += n
    assert {o[DWC + "scientificName"]: int(o[DWC + "individualCount"]) for o in got["st7"][1]} == named
    assert got["st7"][0][DWC + "countryCode"] == "FR" and all(o[DWC + "kingdom"] for o in got["st7"][1])
    if importlib.util.find_spec("pyobistools"):  # optional: see test_obis_checks_that_run_offline
        import pandas as pd
        from pyobistools.validation.check_fields import check_fields

        with zipfile.ZipFile(out / "dwca.zip") as zf:
            ev, occ = (pd.read_csv(io.BytesIO(zf.read(n)), sep="\t", dtype=str, keep_default_na=False) for n in ("event.txt", "occurrence.txt"))
        assert set(check_fields(occ.merge(ev.drop(columns=["id"]), on="eventID"), level="error")["field"]) == {"scientificNameID"}
        assert set(check_fields(ev, level="error", analysis_type="event_core")["field"]) == set()
    bad = tmp_path / "bad.json"
    bad.write_text('{"latitude": 123, "longitude": 0}')
    assert main(args + ["--out", str(tmp_path / "bad"), "--export", "dwca", "--sample-meta", str(bad)]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_the_app_exports_carry_the_sample_id_and_metadata(tiny_artifact):
    import dataclasses
    import re

    from app_utils import app_artifact
    from repo_paths import EXAMPLES
    from plankton_app.exports import default_sample_id
    from plankton_app.service import Service
    from plankton_app.tabs.sample import sample_meta

    ids = {default_sample_id() for _ in range(3)}
    assert len(ids) == 3 and all(re.fullmatch(r"plankton_app_\d{8}_\d{6}_[0-9a-f]{4}", i) for i in ids)
    meta, problems = sample_meta("L4", 50.25, -4.217, "2024-05-14", "09:30:00", 0, 10, " gb ")
    assert meta == SampleMeta(**(META.as_dict() | {"country_code": "GB"})) and problems == []
    assert sample_meta("L4", 50.25, -4.217, "2024-05-14", "09:30:00", 0, 10, "Britain")[1] == [
        "sample metadata: country_code 'Britain' is not an ISO 3166-1 alpha-2 country code (e.g. FR, GB, US)"]
    assert sample_meta("", 95, 0, "", "", None, None) == (None, ["sample metadata: latitude 95 is outside -90..90"])
    service = Service.load(app_artifact(tiny_artifact))
    session = service.analyse([str(sorted((EXAMPLES / "frames").iterdir())[0])])
    session = dataclasses.replace(session, sample=Sample(0.5, 2.0))
    view = service.refilter(session, service.det_floor, 0.0)
    files = service.sample_files(session, view, META, "st9")
    with zipfile.ZipFile(io.BytesIO(files["ecotaxa.zip"])) as zf:
        tsv = zf.read("ecotaxa_st9.tsv").decode("utf-8-sig").splitlines()
    rows = [dict(zip(tsv[0].split("\t"), r.split("\t"))) for r in tsv[2:]]
    assert rows and all(r["object_id"].startswith("st9_") and r["object_lat"] == "50.25" for r in rows)
    assert not any(r["object_annotation_category"].endswith(" sp") for r in rows)
    assert "latitude" in files["concentration.csv"].splitlines()[0]
    with zipfile.ZipFile(io.BytesIO(files["dwca.zip"])) as zf:
        assert sorted(zf.namelist()) == ["eml.xml", "event.txt", "extendedmeasurementorfact.txt", "meta.xml", "occurrence.txt"]
        assert zf.read("event.txt").decode().splitlines()[1].startswith("st9\tst9\t\t2024-05-14T09:30:00Z\t50.25")


def test_a_name_only_a_person_gave_is_not_called_the_models(tmp_path):
    """An occurrence whose every object a person named (here a name the
    model lacks) says so; one the model named says it was the machine's."""
    objs = [ObjectResult((0, 0, 10, 10), 0.9, "Noctiluca sp", 1.0, (Candidate("Noctiluca sp", 1.0),), corrected=True),
            ObjectResult((20, 20, 30, 30), 0.9, "Chlorella sp", 0.8, (Candidate("Chlorella sp", 0.8),))]
    path = write_archive(tmp_path / "dwca.zip", archive_files([Event("s", [FrameResult("f.jpg", 40, 40, objs)], Sample(0.5, 2.0), META)],
                                                              Taxonomy(), "model-x version 3", "plankton test"))
    remarks = {o[DWC + "scientificName"]: o[DWC + "identificationRemarks"] for o in _read(path)["s"][1]}
    assert remarks["Noctiluca"].startswith("named 'Noctiluca sp' by a person") and "machine" not in remarks["Noctiluca"]
    assert remarks["Chlorella"].startswith("machine identification by model-x version 3") and "not checked by a person" in remarks["Chlorella"]
