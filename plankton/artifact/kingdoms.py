"""The kingdom of each genus the bundled model and its training data name,
for Darwin Core's ``kingdom``, which OBIS requires of every occurrence.

Kingdoms are WoRMS' (the register OBIS matches names against), which
follows Ruggiero et al. 2015: so ciliates and dinoflagellates, often
called protozoa, are Chromista there with the diatoms, haptophytes,
raphidophytes, chrysophytes and cryptophytes; euglenozoans,
choanoflagellates and amoebae are Protozoa; green algae are Plantae;
cyanobacteria are Bacteria. A taxonomy table's own ``kingdom`` column
overrides this; a genus not listed here has no kingdom unless the table
gives one (nothing is guessed from the name).
"""
from __future__ import annotations

KINGDOMS = ("Animalia", "Archaea", "Bacteria", "Chromista", "Fungi", "Plantae", "Protozoa", "Viruses")

_BY_KINGDOM = {
    "Bacteria": ["Anabaena", "Microcystis", "Oscillatoria", "Spirulina"],  # cyanobacteria
    "Plantae": ["Chlamydomonas", "Chlorella", "Oocystis", "Pyramimonas", "Tetraselmis"],  # green algae
    "Chromista": [
        "Bacteriastrum", "Cerataulina", "Chaetoceros", "Skeletonema",  # diatoms
        "Chrysochromulina", "Prymnesium",  # haptophytes
        "Chattonella", "Heterosigma",  # raphidophytes
        "Chromulina",  # chrysophytes
        "Cryptomonas", "Hemiselmis",  # cryptophytes
        "Gymnodinium", "Gyrodinium", "Oxyrrhis", "Peridinium",  # dinoflagellates
        "Chilodonella", "Cyclidium", "Euplotes", "Strombidium", "Tintinnopsis", "Vorticella", "Zoothamnium",  # ciliates
    ],
    "Protozoa": [
        "Anisonema", "Bodo", "Euglena", "Ichthyobodo",  # euglenozoans
        "Desmarella",  # choanoflagellates
        "Amoeba",  # amoebozoans
    ],
}
GENUS_KINGDOM = {genus: kingdom for kingdom, genera in _BY_KINGDOM.items() for genus in genera}


def default_kingdom(scientific_name: str) -> str:
    """The kingdom of the genus a scientific name starts with; "" when this
    table does not list it."""
    words = str(scientific_name).split()
    return GENUS_KINGDOM.get(words[0], "") if words else ""


__all__ = ["GENUS_KINGDOM", "KINGDOMS", "default_kingdom"]
