"""The taxonomy table (class → scientific name, rank, AphiaID) and the
sample metadata (station, place, time, depth): derivation, CSV round trips,
and one clear line per bad row or field."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from plankton.sample.meta import SampleMeta, SampleMetaError, parse, parse_text
from plankton.artifact.taxonomy import FILE, Taxon, Taxonomy, TaxonomyError, derive, for_model, parse_csv, store

# ---- taxonomy


@pytest.mark.parametrize("label,expected", [
    ("Chlorella sp", ("Chlorella", "genus")),
    ("Prymnesium spp.", ("Prymnesium", "genus")),
    ("Gymnodinium  sp.", ("Gymnodinium", "genus")),
    ("Bodo saltans", ("Bodo saltans", "species")),
    ("Chlamydomonas (genus)", ("Chlamydomonas", "genus")),
    ("Copepoda", ("Copepoda", "")),  # one word: a name, but its rank is not guessed
    ("Chlamydomonas reinhardtii var. minor", ("Chlamydomonas reinhardtii var. minor", "")),
    ("not plankton", None),
    ("unknown", None),
])
def test_derived_names_and_ranks(label, expected):
    t = derive(label)
    assert (None if t is None else (t.scientific_name, t.rank)) == expected
    assert t is None or t.aphia_id is None  # never invented


def test_a_genus_answer_takes_the_table_genus_row():
    table = Taxonomy({"Chlamydomonas sp": Taxon("Chlamydomonas", "genus", 999999001)})
    assert table.taxon("Chlamydomonas (genus)") == Taxon("Chlamydomonas", "genus", 999999001)
    assert table.taxon("Tetraselmis (genus)") == Taxon("Tetraselmis", "genus")  # not in the table: derived
    assert table.name("unknown") == ""


def test_csv_round_trip_of_the_bundled_model_classes():
    from repo_paths import REPO

    names = json.loads((REPO / "models" / "default" / "config.json").read_text())["prototypes"]["names"]
    table = Taxonomy.derived(names + ["not plankton"])
    text = table.to_csv()
    assert text.splitlines()[0] == "class,scientific_name,rank,aphia_id"
    assert "Chlorella sp,Chlorella,genus," in text.splitlines() and "not plankton,,," in text.splitlines()
    back = parse_csv(text)
    assert back == table and back.taxon("Bodo saltans") == Taxon("Bodo saltans", "species")
    with_id = parse_csv("class,scientific_name,rank,aphia_id\nBodo saltans,Bodo saltans,species,999999002\n")
    assert with_id.taxon("Bodo saltans").lsid == "urn:lsid:marinespecies.org:taxname:999999002"
    assert parse_csv(with_id.to_csv()) == with_id
    assert parse_csv("class,scientific_name,rank\nX sp,Xus,Genus\n").taxon("X sp") == Taxon("Xus", "genus")  # aphia_id column optional


HEADER = "class,scientific_name,rank,aphia_id\n"


@pytest.mark.parametrize("text,message", [
    ("species,name\nA sp,A\n", "the first line must be class,scientific_name,rank,aphia_id"),
    (HEADER + "A sp,A,genera,\n", "line 2: rank 'genera' is not one of"),
    (HEADER + "A sp,A,genus,abc\n", "line 2: aphia_id 'abc' is not a positive whole number"),
    (HEADER + "A sp,A,genus,\nA sp,A,genus,\n", "line 3: class 'A sp' is listed twice"),
    (HEADER + "A sp,A sp,genus,\n", "line 2: scientific_name 'A sp' ends in 'sp'"),
    (HEADER + "A sp,A,genus\n", "line 2: 3 fields for 4 columns"),
    (HEADER + ",A,genus,\n", "line 2: no class"),
    (HEADER + "A sp,,genus,\n", "line 2: a rank or aphia_id needs a scientific_name"),
])
def test_bad_taxonomy_rows_get_one_line_each(text, message):
    with pytest.raises(TaxonomyError) as e:
        parse_csv(text, "tax.csv")
    assert len(e.value.problems) == 1 and message in e.value.problems[0] and e.value.problems[0].startswith("tax.csv")
    assert "\n" not in str(e.value)


def test_every_bad_row_is_listed():
    with pytest.raises(TaxonomyError) as e:
        parse_csv(HEADER + "A sp,A,genera,\nB sp,B,genus,x\nC sp,C,genus,\n", "t.csv")
    assert [p.split(":")[0] for p in e.value.problems] == ["t.csv line 2", "t.csv line 3"]
    assert str(e.value).endswith("(and 1 more)")


def test_the_artifact_stores_its_taxonomy(tiny_artifact, tmp_path):
    from plankton.artifact.manifest import read_config

    config = read_config(tiny_artifact)  # checksums checked, taxonomy.csv included
    assert FILE in config["files"]
    stored = parse_csv((tiny_artifact / FILE).read_text())
    assert list(stored.rows) == config["prototypes"]["names"] and stored.taxon("Chlorella sp") == Taxon("Chlorella", "genus")
    bare = tmp_path / "bare"
    bare.mkdir()
    assert for_model(bare, ["Oscillatoria sp"]).taxon("Oscillatoria sp") == Taxon("Oscillatoria", "genus")  # no file: derived
    copy = tmp_path / "copy"
    shutil.copytree(tiny_artifact, copy)
    store(copy, Taxonomy(stored.rows | {"Chlorella sp": Taxon("Chlorella", "genus", 999999005)}))
    assert read_config(copy)["files"][FILE]["bytes"] == (copy / FILE).stat().st_size  # the manifest follows the new file
    assert for_model(copy, config["prototypes"]["names"]).taxon("Chlorella sp").aphia_id == 999999005


def test_enrol_stores_the_given_taxonomy_and_names_new_species(tiny_artifact, tmp_path):
    from plankton.artifact.enrol import enrol
    from plankton.artifact.manifest import read_config

    emb = np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32)
    given = parse_csv(HEADER + "Chlorella sp,Chlorella,genus,999999003\n")
    enrol(tiny_artifact, {"Noctiluca scintillans": emb}, tmp_path / "child", force=True, taxonomy=given)
    read_config(tmp_path / "child")  # its checksums cover the new file
    child = parse_csv((tmp_path / "child" / FILE).read_text())
    assert child.taxon("Chlorella sp").aphia_id == 999999003
    assert child.rows["Noctiluca scintillans"] == Taxon("Noctiluca scintillans", "species")
    enrol(tmp_path / "child", {"Akashiwo sp": emb}, tmp_path / "grandchild", force=True)  # no table given: the parent's, completed
    grandchild = parse_csv((tmp_path / "grandchild" / FILE).read_text())
    assert grandchild.taxon("Chlorella sp").aphia_id == 999999003 and grandchild.rows["Akashiwo sp"] == Taxon("Akashiwo", "genus")


def test_enrol_refuses_a_bad_taxonomy_before_any_work(tmp_path, capsys):
    from plankton.cli import main

    bad = tmp_path / "tax.csv"
    bad.write_text(HEADER + "A sp,A,genera,\n")
    code = main(["enrol", "--model", str(tmp_path / "no-model"), "--coco", str(tmp_path / "x.json"), "--out", str(tmp_path / "o"),
                 "--taxonomy", str(bad), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"plankton: {bad} line 2: rank 'genera' is not one of " + err[0].split("is not one of ")[1]]


# ---- sample metadata

GOOD = {"station": "L4", "latitude": 50.25, "longitude": -4.217, "date": "2024-05-14", "time": "09:30:00", "depth_min": 0, "depth_max": 10}


def test_good_metadata_passes_as_json_and_csv():
    meta = parse_text(json.dumps(GOOD))
    assert meta == SampleMeta("L4", 50.25, -4.217, "2024-05-14", "09:30:00", 0.0, 10.0)
    assert meta.event_date == "2024-05-14T09:30:00Z"
    csv_form = "key,value\n" + "\n".join(f"{k},{v}" for k, v in GOOD.items()) + "\n"
    assert parse_text(csv_form) == meta
    assert parse({"date": "2024-05-14", "time": "09:30"}).time == "09:30:00"
    assert parse({}).is_empty() and parse({"date": "2024-05-14"}).event_date == "2024-05-14"


@pytest.mark.parametrize("change,field,message", [
    ({"latitude": 123}, "latitude", "latitude 123 is outside -90..90"),
    ({"longitude": -200.5}, "longitude", "longitude -200.5 is outside -180..180"),
    ({"latitude": "fifty"}, "latitude", "latitude 'fifty' is not a number"),
    ({"latitude": True}, "latitude", "latitude True is not a number"),
    ({"longitude": None}, "longitude", "longitude is missing"),
    ({"date": "2024-13-01"}, "date", "date '2024-13-01' is not a date as YYYY-MM-DD"),
    ({"date": "14/05/2024"}, "date", "date '14/05/2024' is not a date"),
    ({"time": "25:00:00"}, "time", "time '25:00:00' is not a UTC time as HH:MM:SS"),
    ({"time": "9.30"}, "time", "time '9.30' is not a UTC time"),
    ({"depth_min": -1}, "depth_min", "depth_min -1 is negative"),
    ({"depth_min": 20}, "depth_min", "depth_min 20 is deeper than depth_max 10"),
    ({"lattitude": 50}, "lattitude", "unknown key 'lattitude'"),
])
def test_each_bad_field_gets_one_line_naming_it(change, field, message):
    with pytest.raises(SampleMetaError) as e:
        parse(GOOD | change)
    assert len(e.value.problems) == 1, e.value.problems
    (line,) = e.value.problems
    assert line.startswith("sample metadata: ") and field in line and message in line


def test_two_bad_fields_two_lines_and_bad_files():
    with pytest.raises(SampleMetaError) as e:
        parse(GOOD | {"latitude": 95, "date": "yesterday"})
    assert [p.split()[2] for p in e.value.problems] == ["latitude", "date"]
    with pytest.raises(SampleMetaError, match="not valid JSON"):
        parse_text("{'station': 'L4'}")
    with pytest.raises(SampleMetaError, match="line 2 has 3 fields"):
        parse_text("key,value\nlatitude,50,1\n")
    with pytest.raises(SampleMetaError, match="expected an object"):
        parse_text("[1, 2]")
    with pytest.raises(SampleMetaError, match="latitude 91"):
        SampleMeta(latitude=91, longitude=0)  # the dataclass checks itself too
