"""Evaluation figures (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from plankton.results import UNKNOWN  # noqa: E402


def confusion(true, pred, path: str | Path) -> None:
    """Row-normalised confusion matrix, true species × predicted (incl. unknown)."""
    labels = [n for n in dict.fromkeys(sorted(set(true)) + [UNKNOWN])]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(4 + 0.32 * n, 3.5 + 0.32 * n))
    ConfusionMatrixDisplay.from_predictions(list(true), list(pred), labels=labels, normalize="true", ax=ax, cmap="Blues",
                                            colorbar=False, values_format=".2f", xticks_rotation="vertical", text_kw={"fontsize": 6})
    ax.set_title("Validation confusion (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def reliability(true, sim: np.ndarray, names: list[str], path: str | Path, bins: int = 10) -> None:
    """Accuracy of the best match against its similarity, in bins."""
    known = np.isin(true, names)
    t, s = np.asarray(true)[known], sim[known]
    best = s.max(1) if len(s) else np.zeros(0)
    correct = np.asarray(names, dtype=object)[s.argmax(1)] == t if len(s) else np.zeros(0, bool)
    edges = np.linspace(min(best.min(initial=0), 0), 1, bins + 1)
    idx = np.clip(np.digitize(best, edges) - 1, 0, bins - 1)
    centres, acc, count = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            centres.append((edges[b] + edges[b + 1]) / 2), acc.append(correct[m].mean()), count.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(centres, acc, width=(edges[1] - edges[0]) * 0.9, color="#4C72B0")
    for c, a, k in zip(centres, acc, count):
        ax.text(c, a + 0.01, str(k), ha="center", fontsize=7)
    ax.set(xlabel="best cosine similarity", ylabel="top-1 accuracy", ylim=(0, 1.08), title="Reliability (numbers: objects per bin)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _stage_lines(ax, curve: list[dict]) -> None:
    """A dotted line where a later stage continued from the earlier one's weights."""
    for a, b in zip(curve, curve[1:]):
        if a.get("stage") != b.get("stage"):
            ax.axvline(a["epoch"] + 0.5, color="grey", ls=":", lw=1)


def learning_curves(detector: list[dict] | None, embedder: list[dict] | None, path: str | Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if detector:
        e = [r["epoch"] for r in detector]
        for key, label in (("ap50", "AP@0.5"), ("ap50_95", "AP@0.5:0.95"), ("recall", "recall")):
            axes[0].plot(e, [r.get(key, np.nan) for r in detector], label=label)
        _stage_lines(axes[0], detector)
        axes[0].legend()
    axes[0].set(title="Detector (validation frames)", xlabel="epoch", ylim=(0, 1))
    if embedder:
        e = [r["epoch"] for r in embedder]
        axes[1].plot(e, [r["val_top1"] for r in embedder], label="top-1")
        axes[1].plot(e, [r["val_f1_macro"] for r in embedder], label="F1-macro")
        _stage_lines(axes[1], embedder)
        axes[1].legend()
    axes[1].set(title="Embedder (validation crops)", xlabel="epoch", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
