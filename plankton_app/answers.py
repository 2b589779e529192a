"""What the model's stored validation set says at any similarity threshold
(with a session's enrolled species): per-species metrics, the answers
behind the confusion matrix, coverage, and the species no validation
object of theirs reaches. A mixin of ``Service``: it reads
``self.validation``, ``self.metrics`` and ``self.cascade``."""
from __future__ import annotations

import numpy as np

from plankton.metrics import per_class_table, predict_labels
from plankton.model.prototypes import shifted_thresholds
from plankton.results import NOT_PLANKTON, UNKNOWN

from .session import Session


class ValidationAnswers:
    def per_class(self, cls_conf: float | None = None, session: Session | None = None) -> list[dict]:
        """Per-species precision/recall/F1/support on the stored validation
        set at ``cls_conf`` (with a session's enrolled species, if any).
        Without a validation set: the table stored in metrics.json."""
        cls = self.cls_conf if cls_conf is None else float(cls_conf)
        if self.validation is None:
            return list(((self.metrics or {}).get("identification") or {}).get("per_class") or [])
        sim, names, thresholds = self._val_similarity(session, cls)
        rows = per_class_table(np.asarray(self.validation.true_names, dtype=object), sim, names, thresholds)
        by_name = {n: round(float(t), 4) for n, t in zip(names, thresholds)}
        return [r | {"threshold": by_name.get(r["species"])} for r in rows]

    def _val_similarity(self, session: Session | None, cls_conf: float) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Validation similarities, class names and per-class thresholds at
        global threshold ``cls_conf`` (with the session's enrolled species)."""
        if session is not None and session.val_similarity is not None:
            return session.val_similarity, list(session.prototypes.names), shifted_thresholds(cls_conf, session.class_offsets)
        names = list(self.validation.class_names)
        return self.validation.similarity, names, shifted_thresholds(cls_conf, self.cascade.identifier.cfg.offsets(names))

    def validation_answers(self, cls_conf: float, session: Session | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(true species, the answers at global threshold ``cls_conf``) of
        the stored validation objects (with a session's enrolled species)."""
        sim, names, thresholds = self._val_similarity(session, float(cls_conf))
        return np.asarray(self.validation.true_names, dtype=object), predict_labels(sim, names, thresholds)

    def unnameable(self, cls_conf: float, session: Session | None = None) -> list[dict]:
        """Species that no stored validation object of theirs can reach at
        ``cls_conf``: their threshold there is above the highest similarity
        any of their validation objects has to them ({species, threshold,
        best}). They can still be named in principle, but in practice not."""
        if self.validation is None or not len(self.validation.true_names):
            return []
        sim, names, thresholds = self._val_similarity(session, float(cls_conf))
        true = np.asarray(self.validation.true_names, dtype=object)
        out = []
        for j, n in enumerate(names):
            own = sim[true == n, j]
            if n != NOT_PLANKTON and len(own) and own.max() < thresholds[j]:
                out.append({"species": n, "threshold": round(float(thresholds[j]), 4), "best": round(float(own.max()), 4)})
        return out

    def coverage(self, cls_conf: float, session: Session | None = None) -> dict | None:
        """Share of validation objects that get a name at ``cls_conf``, and
        the accuracy on those."""
        if self.validation is None or not len(self.validation.true_names):
            return None
        true, pred = self.validation_answers(cls_conf, session)
        named = pred != UNKNOWN
        return {"n": int(len(true)), "coverage": float(named.mean()), "accuracy": float(np.mean(pred[named] == true[named])) if named.any() else float("nan")}
