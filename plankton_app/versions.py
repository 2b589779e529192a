"""A session's own species and the model versions made from its
corrections: enrol a species for this session only, write a child of the
loaded model from the corrections (``plankton.artifact.enrol``), answer
with its prototypes, and publish it to the Hub. A mixin of ``Service``: it
reads ``self.folder``, ``self.cascade``, ``self.validation``,
``self.class_names`` and ``self.corrections_coco``."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from plankton.model.prototypes import Prototypes
from plankton.results import NOT_PLANKTON, UNKNOWN

from .session import Session
from .uploads import InputError

PUSH_REPO_ENV, PUSH_REVISION_ENV = "PLANKTON_PUSH_REPO", "PLANKTON_PUSH_REVISION"  # where saved versions are published


class Versions:
    # ---- a new model version from the session's corrections
    def save_version(self, session: Session, folder: str | Path, force: bool = False):
        """``write_version`` then ``use_version``: (report, the session now
        using the child's prototypes)."""
        report = self.write_version(session, folder, force)
        return report, self.use_version(session, folder)

    def write_version(self, session: Session, folder: str | Path, force: bool = False):
        """Enrol the session's corrections into a child of the loaded model,
        written to ``folder`` (``plankton.artifact.enrol``: refused when it
        costs the existing species more than 0.01 top-1, unless ``force``).
        Returns enrol's report; the session is not touched, so the app can
        switch the session as it is when the slow write ends."""
        from plankton.artifact.enrol import enrol

        corrections = session.all_corrections()
        if not corrections:
            raise InputError("There are no corrections in this session: correct some objects in the Review tab first.")
        examples: dict[str, list] = {}
        for c in corrections:
            examples.setdefault(c.label, []).append(c.embedding)
        coco = json.dumps(self.corrections_coco(session), sort_keys=True).encode()
        source = {"kind": "app session", "corrections_sha256": hashlib.sha256(coco).hexdigest(), "objects": len(corrections)}
        return enrol(self.folder, {k: np.stack(v) for k, v in examples.items()}, folder, force=force, source=source)

    def use_version(self, session: Session, folder: str | Path) -> Session:
        """``session`` (its corrections kept) answering with the prototypes of the version in ``folder``."""
        child = Prototypes.load(Path(folder) / "prototypes.safetensors")
        switched = self._with_prototypes(session, child, [n for n in child.names if n not in self.class_names and n != NOT_PLANKTON])
        return dataclasses.replace(switched, version=str(folder))

    def publish_version(self, folder: str | Path) -> dict | None:
        """Push a saved version to the Hub repo named by $PLANKTON_PUSH_REPO
        (branch $PLANKTON_PUSH_REVISION, default main) with
        ``plankton_app.publish``, as ``python -m hub push`` does; None when no
        repo is configured. The token is huggingface_hub's (HF_TOKEN)."""
        repo = os.environ.get(PUSH_REPO_ENV, "").strip()
        if not repo:
            return None
        from .publish import push_artifact

        endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
        return push_artifact(folder, repo, revision=os.environ.get(PUSH_REVISION_ENV, "").strip() or None, endpoint=endpoint,
                             commit_message=f"Model version saved from the app's corrections ({Path(folder).name})")

    # ---- enrolment
    def _with_prototypes(self, session: Session, prototypes: Prototypes, enrolled: list[str]) -> Session:
        sims = [prototypes.similarity(f.analysis.embeddings) for f in session.frames]
        val = prototypes.similarity(self.validation.embeddings) if self.validation is not None else None
        offsets = self.cascade.identifier.cfg.offsets(prototypes.names)  # an enrolled species has the global threshold
        return dataclasses.replace(session, prototypes=prototypes, similarity=sims, val_similarity=val, class_offsets=offsets, enrolled=list(enrolled))

    def enrol(self, session: Session, name: str, object_ids: Iterable[int]) -> Session:
        """A new species (or new examples of one) from objects of the upload,
        by id: a new session whose prototypes include it. No retraining; the
        model shared by all users is unchanged."""
        name = " ".join(str(name or "").split())
        if not name:
            raise InputError("Give the new species a name.")
        if name == UNKNOWN:
            raise InputError(f"'{UNKNOWN}' is reserved; choose another name.")
        ids = sorted(set(int(i) for i in object_ids))
        if not ids:
            raise InputError("Choose at least one object (its # in the table).")
        bad = [i for i in ids if not 0 <= i < session.n_detections]
        if bad:
            raise InputError(f"No object {', '.join(map(str, bad))} in this upload (ids go from 0 to {session.n_detections - 1}).")
        emb = []
        for i in ids:
            fi, di = session.locate(i)
            emb.append(session.frames[fi].analysis.embeddings[di])
        base = session.prototypes or self.cascade.identifier.prototypes
        # With the support embeddings kept, examples of a known species join it instead of replacing it.
        protos = base.add({name: np.stack(emb)}) if base.support is not None else base.enrol(name, np.stack(emb))
        return self._with_prototypes(session, protos, session.enrolled + ([name] if name not in session.enrolled else []))

