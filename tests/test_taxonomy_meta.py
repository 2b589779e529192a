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
    assert text.splitlines()[0] == "class,scientific_name,rank,aphia_id,kingdom"
    assert "Chlorella sp,Chlorella,genus,,Plantae" in text.splitlines() and "not plankton,,,," in text.splitlines()
    back = parse_csv(text)
    assert back == table and back.taxon("Bodo saltans") == Taxon("Bodo saltans", "species", None, "Protozoa")
    with_id = parse_csv("class,scientific_name,rank,aphia_id\nBodo saltans,Bodo saltans,species,999999002\n")
    assert with_id.taxon("Bodo saltans").lsid == "urn:lsid:marinespecies.org:taxname:999999002"
    assert parse_csv(with_id.to_csv()) == with_id
    assert parse_csv("class,scientific_name,rank\nX sp,Xus,Genus\n").taxon("X sp") == Taxon("Xus", "genus")  # aphia_id column optional


HEADER = "class,scientific_name,rank,aphia_id\n"

# WoRMS' kingdoms (what OBIS checks names against) of every genus the bundled model and its data name, written out again here.
KINGDOM_OF = {
    "Bacteria": "Anabaena Microcystis Oscillatoria Spirulina",
    "Plantae": "Chlamydomonas Chlorella Oocystis Pyramimonas Tetraselmis",
    "Chromista": "Bacteriastrum Cerataulina Chaetoceros Skeletonema Chrysochromulina Prymnesium Chattonella Heterosigma Chromulina "
                 "Cryptomonas Hemiselmis Gymnodinium Gyrodinium Oxyrrhis Peridinium Chilodonella Cyclidium Euplotes Strombidium "
                 "Tintinnopsis Vorticella Zoothamnium",
    "Protozoa": "Anisonema Bodo Euglena Ichthyobodo Desmarella Amoeba",
}
KINGDOM_OF = {genus: kingdom for kingdom, genera in KINGDOM_OF.items() for genus in genera.split()}


def test_every_bundled_class_has_its_kingdom():
    from repo_paths import REPO

    from plankton.artifact.taxonomy import read_csv

    folder = REPO / "models" / "default"
    names = json.loads((folder / "config.json").read_text())["prototypes"]["names"]
    table = read_csv(folder / FILE)
    for name in names:
        t = table.taxon(name)
        assert t.kingdom == KINGDOM_OF[t.scientific_name.split()[0]], name
    assert {t.kingdom for t in map(table.taxon, names)} == {"Bacteria", "Plantae", "Chromista", "Protozoa"}
    # the training data's other labels, derived
    for label in ("Euglena sp", "Vorticella sp", "Strombidium sp", "Amoeba sp", "Chilodonella sp"):
        assert derive(label).kingdom == KINGDOM_OF[derive(label).scientific_name], label


def test_a_table_kingdom_wins_and_a_genus_not_listed_has_none():
    table = parse_csv("class,scientific_name,rank,aphia_id,kingdom\nA sp,Chlorella,genus,,chromista\nB sp,Bus,genus,,\n")
    assert table.taxon("A sp").kingdom == "Chromista"  # the table's, in WoRMS' spelling
    assert table.taxon("B sp").kingdom == "" and derive("Copepoda").kingdom == ""  # nothing guessed
    assert parse_csv(table.to_csv()) == table


def test_unknown_has_no_taxon_whatever_the_table_says():
    assert Taxonomy({"unknown": Taxon("Unknownia", "genus")}).taxon("unknown") is None
    assert "unknown" not in Taxonomy.derived(["Chlorella sp", "unknown"]).to_csv()  # so the table it writes reads back


@pytest.mark.parametrize("text,message", [
    ("species,name\nA sp,A\n", "the first line must be class,scientific_name,rank,aphia_id"),
    (HEADER + "A sp,A,genera,\n", "line 2: rank 'genera' is not one of"),
    (HEADER + "A sp,A,genus,abc\n", "line 2: aphia_id 'abc' is not a positive whole number"),
    (HEADER + "A sp,A,genus,\nA sp,A,genus,\n", "line 3: class 'A sp' is listed twice"),
    (HEADER + "A sp,A sp,genus,\n", "line 2: scientific_name 'A sp' ends in 'sp'"),
    (HEADER + "A sp,A,genus\n", "line 2: 3 fields for 4 columns"),
    (HEADER + ",A,genus,\n", "line 2: no class"),
    (HEADER + "A sp,,genus,\n", "line 2: a rank, aphia_id or kingdom needs a scientific_name"),
    (HEADER + "unknown,,,\n", "line 2: class 'unknown' is the model's answer for objects it cannot name, not a class"),
    (HEADER + "Unknown,Unknownia,genus,\n", "line 2: class 'Unknown' is the model's answer"),
    (HEADER + "A sp,A,genus,\u00b2\n", "line 2: aphia_id '\u00b2' is not a positive whole number"),  # isdigit() says yes, int() says no
    (HEADER + "A sp,A,genus,1" + "0" * 5000 + "\n", "is not a positive whole number"),  # past int()'s digit limit
    ("class,scientific_name,rank,kingdom\nA sp,A,genus,Plants\n", "line 2: kingdom 'Plants' is not one of Animalia, Archaea, Bacteria"),
    ("class,scientific_name,rank\nA sp," + "x" * 200_000 + ",genus\n", "not a readable CSV"),
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
    assert parse(GOOD | {"country_code": "fr"}).country_code == "FR" and SampleMeta(country_code=" gb").country_code == "GB"
    assert parse({"station": 0}).station == "0" and parse({"station": 42}).station == "42"  # a numbered station, not a missing one
    assert meta.event_date == "2024-05-14T09:30:00Z"
    csv_form = "key,value\n" + "\n".join(f"{k},{v}" for k, v in GOOD.items()) + "\n"
    assert parse_text(csv_form) == meta
    assert parse({"date": "2024-05-14", "time": "09:30"}).time == "09:30:00"
    assert parse({}).is_empty() and parse({"date": "2024-05-14"}).event_date == "2024-05-14"


@pytest.mark.parametrize("change,field,message", [
    ({"latitude": 123}, "latitude", "latitude 123 is outside -90..90"),
    ({"longitude": -200.5}, "longitude", "longitude -200.5 is outside -180..180"),
    ({"latitude": "fifty"}, "latitude", "latitude 'fifty' is not a number"),
    ({"latitude": True}, "latitude", "latitude true is not a number"),
    ({"latitude": int("1" + "0" * 400), "longitude": 0}, "latitude", "latitude (a very long number) is not a number"),
    ({"date": 0}, "date", "date 0 is not a date as YYYY-MM-DD"),  # given, and wrong: not missing
    ({"date": False}, "date", "date false is not a date as YYYY-MM-DD"),
    ({"time": 930}, "time", "time 930 is not a UTC time"),
    ({"station": True}, "station", "station true is not text"),
    ({"station": {"name": "L4"}}, "station", "station (an object) is not text"),
    ({"country_code": "UK"}, "country_code", "country_code 'UK' is not an ISO 3166-1 alpha-2 country code"),
    ({"country_code": "FRA"}, "country_code", "country_code 'FRA' is not an ISO 3166-1 alpha-2"),
    ({"country_code": 33}, "country_code", "country_code 33 is not an ISO 3166-1 alpha-2"),
    ({"longitude": None}, "longitude", "longitude is missing"),
    ({"date": "2024-13-01"}, "date", "date '2024-13-01' is not a real day"),  # the right shape, no such month
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


@pytest.mark.parametrize("text,holds", [("null", "null"), ("42", "a number"), ('"abc"', "text"), ("[1, 2]", "a list"), ("true", "true or false")])
def test_json_that_is_not_an_object_says_so(text, holds):
    with pytest.raises(SampleMetaError) as e:
        parse_text(text, "m.json")
    assert e.value.problems == [f"sample metadata: m.json is JSON but not an object (it holds {holds}); expected an object of "
                                "station, latitude, longitude, date, time, depth_min, depth_max, country_code"]


def test_deeply_nested_json_is_one_line():
    for text in ("[" * 100_000 + "]" * 100_000, '{"station": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        with pytest.raises(SampleMetaError) as e:
            parse_text(text, "deep.json")
        assert e.value.problems == ["sample metadata: deep.json is JSON nested too deeply to read; expected an object of "
                                    "station, latitude, longitude, date, time, depth_min, depth_max, country_code"]
    with pytest.raises(SampleMetaError) as e:  # nested less deeply than the parser's limit: loaded, then refused by name
        parse_text('{"station": ' + "[" * 500 + "]" * 500 + "}")
    assert e.value.problems == ["sample metadata: station (a list) is not text"]
    with pytest.raises(SampleMetaError, match="latitude 91"):
        SampleMeta(latitude=91, longitude=0)  # the dataclass checks itself too


def test_a_date_in_the_right_shape_that_is_no_real_day_says_so(tmp_path):
    """Issue 42: "2026-02-30" is YYYY-MM-DD; what is wrong is the day."""
    from plankton.sample.meta import SampleMetaError, read

    for text, said in (('{"date": "2026-02-30"}', "is not a real day"), ('{"date": "30/02/2026"}', "is not a date as YYYY-MM-DD")):
        f = tmp_path / "meta.json"
        f.write_text(text)
        with pytest.raises(SampleMetaError, match=said):
            read(f)
