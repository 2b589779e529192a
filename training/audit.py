"""Dataset audit: what a COCO file holds and what is wrong with it, before training.

    python -m training.audit --coco PATH/TO/annotations.coco.json --out work/audit [--um-per-px 0.5]

Writes OUT/audit.html (one self-contained page: charts, example crops and
warnings, readable offline) and OUT/audit.json (the same numbers for scripts).
The figures come from audit_report, the counts and warnings from audit_data.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .args import coco_arg
from plankton.model.crops import CropConfig
from plankton.files import atomic_write_text

from .audit_data import WARNING_KINDS, AuditError, pick_examples, read_coco_json, scan_frames, statistics, survey_coco
from .common import log, write_json

_LOGGED = 3  # warnings of each kind echoed to the log; the page and the JSON hold all


def audit(coco: str | os.PathLike, images: str | os.PathLike | None = None, *, um_per_px: float | None = None,
          min_stride: float = 8.0, examples: int = 8, seed: int = 0,
          crop: CropConfig | None = None) -> tuple[dict, dict[int, list[dict]]]:
    """Audit a COCO file and its frames: (the audit.json dict, the example
    crops per category id). ``images`` is the root that file names are
    resolved under (default: the COCO file's folder, as ``load_coco``)."""
    if um_per_px is not None and not um_per_px > 0:
        raise ValueError(f"um_per_px must be > 0, got {um_per_px}")
    if not min_stride > 0:
        raise ValueError(f"min_stride must be > 0, got {min_stride}")
    crop = crop or CropConfig()
    doc, sha = read_coco_json(coco)
    root = Path(images) if images is not None else Path(coco).parent
    survey = survey_coco(doc, min_stride)
    crops = scan_frames(survey, root, pick_examples(survey, examples, seed), crop)
    listed = len({os.path.normpath(e.file_name) for e in survey.entries})  # each missing or unreadable one is a warning
    result = {
        # The file's name only, no local path: the audit travels with the data.
        "source": {"annotations": Path(coco).name, "sha256": sha, "files_listed": listed,
                   "files_read": listed - len(survey.warnings["missing_files"]) - len(survey.warnings["unreadable_files"])},
        "parameters": {"um_per_px": um_per_px, "min_stride": min_stride, "examples": examples, "seed": seed,
                       "crop": crop.to_dict()},
        **statistics(survey, um_per_px),
        "warnings": survey.warnings,
        "examples": {str(cid): [{k: v for k, v in c.items() if k != "jpeg"} for c in cs]
                     for cid, cs in sorted(crops.items())},
    }
    return result, crops


def write_audit(result: dict, crops: dict[int, list[dict]], out: str | os.PathLike) -> Path:
    """Write OUT/audit.json and OUT/audit.html; returns the page's path."""
    from .audit_report import render_html  # plotly only when a page is written

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "audit.json", result)
    atomic_write_text(out / "audit.html", render_html(result, crops))
    return out / "audit.html"


def log_warnings(warnings: dict[str, list[dict]]) -> None:
    for kind, heading in WARNING_KINDS.items():
        found = warnings.get(kind, [])
        if found:
            more = f" (and {len(found) - _LOGGED} more)" if len(found) > _LOGGED else ""
            log.warning("%s: %d. %s%s", heading, len(found), "; ".join(w["message"] for w in found[:_LOGGED]), more)


def run_audit(coco, images=None, out="work/audit", **kwargs) -> dict:
    """audit + write_audit + the warnings in the log; returns the audit.json dict."""
    result, crops = audit(coco, images, **kwargs)
    page = write_audit(result, crops, out)
    log_warnings(result["warnings"])
    n = sum(map(len, result["warnings"].values()))
    log.info("audit of %s: %d frames, %d boxes, %d warnings; wrote %s", result["source"]["annotations"],
             result["totals"]["frames"], result["totals"]["boxes"], n, page)
    return result


def main(argv=None) -> dict:
    from .common import setup

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    coco_arg(p)
    p.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    p.add_argument("--um-per-px", type=float, default=None, help="scale: box sizes shown in µm instead of pixels")
    p.add_argument("--min-stride", type=float, default=8.0,
                   help="the detector's smallest stride in px; smaller boxes are warned about (default 8)")
    p.add_argument("--examples", type=int, default=8, help="example crops per species (default 8)")
    p.add_argument("--seed", type=int, default=0, help="which examples are drawn")
    p.add_argument("--out", required=True, help="folder for audit.html and audit.json")
    args = p.parse_args(argv)
    if args.um_per_px is not None and not args.um_per_px > 0:
        p.error(f"--um-per-px must be > 0, got {args.um_per_px}")
    if not args.min_stride > 0:
        p.error(f"--min-stride must be > 0, got {args.min_stride}")
    if args.examples < 0:
        p.error(f"--examples must be >= 0, got {args.examples}")
    setup(args.seed)
    try:
        return run_audit(args.coco, args.images, args.out, um_per_px=args.um_per_px, min_stride=args.min_stride,
                         examples=args.examples, seed=args.seed)
    except AuditError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
