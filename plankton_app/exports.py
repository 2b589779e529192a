"""The Sample tab's publishing downloads: an EcoTaxa import folder and a
Darwin Core Archive of the upload at the current thresholds (corrections
applied), named by the model's taxonomy and carrying the sample's id and
metadata (docs/publishing.md)."""
from __future__ import annotations

import io
import secrets
import tempfile
import time
import zipfile
from pathlib import Path

from plankton._version import __version__
from plankton.sample.dwca import Event, archive_files, zip_bytes
from plankton.sample.ecotaxa import EcotaxaExport, ExportInfo
from plankton.sample.exports import concentration_rows_from_csv, model_label
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


def ecotaxa_zip(service, session, view, meta: SampleMeta | None, sample_id: str) -> bytes:
    """An EcoTaxa import folder (``plankton.sample.ecotaxa``) of the view, zipped."""
    info = ExportInfo(sample_id, session.sample.um_per_px, session.sample.volume_ul, f"plankton {__version__}",
                      model_label(model_of(service, session)[0]), meta=meta, taxonomy=taxonomy(service, session), frames=len(view.frames))
    with tempfile.TemporaryDirectory() as tmp:
        export = EcotaxaExport(tmp, info)
        for (fi, f), fr, ids in zip(enumerate(session.frames), view.frames, view.ids):
            start = session.starts[fi]
            export.add(fr, [f.computed.crops[k - start] for k in ids])
        export.close()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(Path(tmp).iterdir()):
                zf.write(p, p.name)
    return buf.getvalue()


def dwca_zip(service, session, view, concentration_csv: str | None, meta: SampleMeta | None, sample_id: str) -> bytes:
    """A Darwin Core Archive (``plankton.sample.dwca``) of the view: one event, the
    abundances of the concentration table shown beside it."""
    rows = concentration_rows_from_csv(concentration_csv) if concentration_csv else None
    event = Event(sample_id, list(view.frames), session.sample, meta or SampleMeta(), rows)
    return zip_bytes(archive_files([event], taxonomy(service, session), model_label(model_of(service, session)[0]), f"plankton {__version__}"))
