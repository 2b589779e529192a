"""Stage accounting for ``benchmarks.speed`` (kept apart: bench.py is long
enough): where a frame's time goes, stage by stage, and what the gate
(``plankton.model.gate``) skipped. Issue 31: "benchmarks.speed reports each stage,
and the share of tiles skipped"."""
from __future__ import annotations

# The stages as a reader thinks of them → bench's own stage names. Bench's
# "detect" includes the gate's cheap pass; "detector" here is detect without
# it, and "gate" the pass's mean per frame from the detector's own account.
READABLE = {"decode": "decode", "detector": "detect", "crops": "crop", "embedder": "embed", "match": "match", "write": "write"}


def stage_report(stages_ms: dict, detector) -> dict:
    """stages_ms: bench's per-stage {median, ...} in ms → per readable
    stage its median ms (the gate: its mean) and share of the frame's
    serial time (their sum), plus the gate's summary: frames run whole,
    pixels the network did not see, windows per frame."""
    stats = getattr(detector, "gate_stats", None)
    med = {k: (stages_ms.get(v) or {}).get("median") or 0.0 for k, v in READABLE.items()}
    med["gate"] = 1000 * stats.seconds / max(stats.frames, 1) if stats is not None else 0.0
    med["detector"] = max(med["detector"] - med["gate"], 0.0)
    total = sum(med.values()) or 1.0
    cfg = getattr(getattr(detector, "cfg", None), "gate", None)
    return {"median_ms": {k: round(v, 2) for k, v in med.items()},
            "share_of_frame": {k: round(v / total, 3) for k, v in med.items()},
            "gate": {"config": cfg, **(stats.summary() if stats is not None else {})}}
