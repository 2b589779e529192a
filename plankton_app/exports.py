"""The Sample tab's publishing downloads: every format of
``plankton.sample.formats`` made of the upload at the current thresholds
(corrections applied), named by the model's taxonomy and carrying the
sample's id and metadata (docs/publishing.md). What is the app's own
here: which model named the objects, the taxonomy's fallback, the sample
id of an upload, and the crops taken from the session's cache."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

from plankton.sample.exports import ExportJob, concentration_rows_from_csv, model_label
from plankton.sample import formats
from plankton.sample.meta import SampleMeta
from plankton.artifact.manifest import ArtifactError, read_config
from plankton.artifact.taxonomy import Taxonomy, TaxonomyError, for_model

PREFIX = "plankton_app_"


def default_sample_id() -> str:
    """Unique per upload, so two uploads never merge into one EcoTaxa
    sample or one Darwin Core event: the UTC time and 4 random hex digits."""
    return f"{PREFIX}{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{secrets.token_hex(2)}"


def model_of(service, session) -> tuple[dict, Path, list[str]]:
    """(config, folder, class names) of the model that named the session's
    objects: the version saved from this session once it switched to it,
    else the loaded model. Exports say which version named what."""
    if session is not None and session.version:
        try:
            config = read_config(session.version, check_files=False)
            return config, Path(session.version), list(config.get("prototypes", {}).get("names") or session.prototypes.names)
        except (ArtifactError, OSError, AttributeError):
            pass  # the saved folder is gone: say the loaded model rather than fail the download
    return service.config, service.folder, service.class_names


def taxonomy(service, session=None) -> Taxonomy:
    """The naming model's taxonomy.csv completed for its classes; derived
    from the labels when it is missing or unusable (the problem is kept in
    ``service.problems`` once)."""
    _, folder, names = model_of(service, session)
    try:
        return for_model(folder, names)
    except TaxonomyError as e:
        if str(e) not in service.problems:
            service.problems.append(service.public(e))
        return Taxonomy()


def job(service, session, view, meta: SampleMeta | None, sample_id: str, concentration_csv: str | None = None) -> ExportJob:
    """The view as every export format takes it: its frames, the crops
    cut from the session's cache (no frame is read again), the naming
    model's taxonomy and label, and the abundances of the concentration
    table shown beside it."""

    def crops():
        for (fi, f), fr, ids in zip(enumerate(session.frames), view.frames, view.ids):
            start = session.starts[fi]
            yield fr, [f.computed.crops[k - start] for k in ids]

    rows = concentration_rows_from_csv(concentration_csv) if concentration_csv else None
    return ExportJob(sample_id, tuple(view.frames), crops, session.sample, meta or SampleMeta(), taxonomy(service, session),
                     model_label(model_of(service, session)[0]), rows=rows)


def downloads(service, session, view, meta: SampleMeta | None, sample_id: str, concentration_csv: str | None = None) -> dict[str, bytes]:
    """{download name: bytes} of every format in ``plankton.sample.formats``."""
    one = job(service, session, view, meta, sample_id, concentration_csv)
    return {fmt.download: fmt.data(one) for fmt in formats.FORMATS}
