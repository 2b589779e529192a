"""What the app shows, as HTML, images and tables: species swatches,
counts, the objects table, annotated frames and the model summary. Pure
formatting over a Session and its View; nothing here runs a model."""
from __future__ import annotations

import dataclasses
import html

import numpy as np
from PIL import Image

from plankton.results import UNKNOWN, FrameResult
from plankton.thumbs import contrast
from plankton.run.writers import annotate, species_colour

from .session import Session, View
from .thumbs import data_uri, img_html

DISPLAY_SIDE = 1280  # annotated frames are drawn at most this wide/high
MAX_TABLE_ROWS = 300


def downscale(image: np.ndarray, side: int = DISPLAY_SIDE) -> tuple[np.ndarray, float]:
    """An H×W×3 frame at most ``side`` pixels on its longer edge, and the scale used."""
    H, W = image.shape[:2]
    s = min(1.0, side / max(H, W))
    if s >= 1.0:
        return image, 1.0
    import cv2

    return cv2.resize(image, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA), s


def _scaled(frame: FrameResult, s: float) -> FrameResult:
    if s == 1.0:
        return frame
    objs = [dataclasses.replace(o, xyxy=tuple(v * s for v in o.xyxy)) for o in frame.objects]
    return FrameResult(frame.image, round(frame.width * s), round(frame.height * s), objs)


def rgb(name: str, colours: dict | None = None) -> str:
    r, g, b = (colours or {}).get(name) or species_colour(name)
    return f"rgb({r},{g},{b})"


def species_html(name: str, colours: dict | None = None) -> str:
    """A species name with its box colour (``colours``: the upload's, from
    ``View.colours``) as a swatch; unknown in grey italics."""
    swatch = f'<span style="display:inline-block;width:0.8em;height:0.8em;border-radius:2px;margin-right:0.35em;vertical-align:-0.05em;background:{rgb(name, colours)}"></span>'
    label = f"<i>{UNKNOWN}</i>" if name == UNKNOWN else html.escape(name)
    return swatch + label


def counts_html(view: View | None) -> str:
    """Counts per species as a small HTML table, colour-keyed like the boxes."""
    if view is None:
        return ""
    counts = view.counts
    if not counts:
        return "<p>No objects at these thresholds.</p>"
    total = sum(counts.values())
    rows = "".join(f'<tr><td>{species_html(k, view.colours)}</td><td style="text-align:right">{v}</td><td style="text-align:right">{100 * v / total:.0f}%</td></tr>' for k, v in counts.items())
    # the total first, where the eye lands, not below a list that may need a scroll
    return (f'<table class="counts"><thead><tr><th>Species</th><th style="text-align:right">Count</th><th style="text-align:right">Share</th></tr>'
            f'<tr class="total"><td><b>Total</b></td><td style="text-align:right"><b>{total}</b></td><td></td></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def annotated(session: Session, view: View) -> list[tuple[Image.Image, str]]:
    """(annotated image at display size, caption) per frame."""
    out = []
    for f, fr, ids in zip(session.frames, view.frames, view.ids):
        img = annotate(f.computed.display, _scaled(fr, f.computed.scale), numbers=[int(k) + 1 for k in ids], colours=view.colours or None)
        counts = fr.counts
        caption = f"{f.name}: {len(fr.objects)} object{'s' if len(fr.objects) != 1 else ''}"
        if counts.get(UNKNOWN):
            caption += f" ({counts[UNKNOWN]} unknown)"
        out.append((img, caption))
    return out


def table(session: Session, view: View, limit: int = MAX_TABLE_ROWS) -> tuple[list[list], int]:
    """Rows for the objects table (HTML cells for crop and species) and
    the total number of objects (rows beyond ``limit`` are left out).
    Objects are numbered from 1 for people (object id + 1)."""
    rows = []
    for oid, fr, o in view.objects():
        if len(rows) >= limit:
            break
        alts = " · ".join(f"{html.escape(c.species)} {c.similarity:.2f}" for c in o.topk)
        name = species_html(o.species, view.colours)
        if o.corrected:  # the top-3 are the model's, not the name shown: say so
            name += " <b>✔ corrected</b>"
            alts = "the model said: " + alts
        rows.append([oid + 1, html.escape(fr.image), img_html(session, oid), name, round(o.similarity, 3), round(o.det_score, 3), alts])
    return rows, view.n_objects


def num(x: float) -> str:
    """A threshold for people: two decimals, three when needed (0.50, 0.011)."""
    s = f"{x:.3f}"
    return s[:-1] if s.endswith("0") else s


def _hardware(hw: dict | None, device: str | None = None) -> str:
    hw = hw or {}
    if hw.get("gpu") and device != "cpu":
        return f"1 × {hw['gpu']}"
    return f"{hw.get('cpus', '?')} CPU cores" if hw else "not recorded"


def _minutes(seconds) -> str:
    return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "not recorded"


def training_rows(training: dict | None) -> list[list]:
    """The training record of config.json as a short table: one row per
    stage (each detector stage, the embedder, the prototypes) with its
    model, data, epochs, hardware and wall time."""
    training = training or {}
    split = training.get("split") or {}
    meta = split.get("meta") or {}
    frames = f"{len(split.get('train_ids') or [])} training frames" if split.get("train_ids") else "training frames"
    rows = []
    det = training.get("detector") or {}
    for i, st in enumerate(det.get("stages") or [], 1):
        args = st.get("args") or {}
        start = "from the previous stage" if args.get("init") else "from scratch"
        rows.append([f"detector, stage {i}", f"{det.get('architecture', '?')} at {args.get('imgsz', '?')} px, {start}", frames,
                     st.get("epochs_done"), _hardware(st.get("hardware"), st.get("device")), _minutes(st.get("wall_s"))])
    emb = training.get("embedder") or {}
    if emb:
        history, args = emb.get("history") or [], emb.get("args") or {}
        # older artifacts have one stage and no "stages" list
        stages = emb.get("stages") or [{"epochs_done": len(history) or None, "hardware": emb.get("hardware"), "device": emb.get("device"),
                                        "args": args, "wall_s": (history or [{}])[-1].get("wall_s")}]
        for i, st in enumerate(stages, 1):
            a = st.get("args") or {}
            crop = f"{a.get('size', '?')}-px crops" + (", box size as input" if a.get("size_input") else "")
            start = f", from stage {i - 1}'s epoch {stages[i - 2].get('kept_epoch')}" if i > 1 else ""
            rows.append([f"embedder, stage {i}" if len(stages) > 1 else "embedder", f"{emb.get('backbone', '?')}, {crop}{start}",
                         f"{emb.get('train_crops', '?')} training crops", st.get("epochs_done"),
                         _hardware(st.get("hardware"), st.get("device")), _minutes(st.get("wall_s"))])
    protos = training.get("prototypes") or {}
    if protos:
        which = "every labelled frame" if protos.get("frames") == "all" else "training frames"
        rule = "; per-species thresholds from held-out training frames" if "held-out" in protos.get("threshold_rule", "") else ""
        matched = "class means (sub-centres for the gallery)" if protos.get("match") == "mean" else "class means + sub-centres"
        rows.append(["prototypes and thresholds", f"{matched}{rule}", f"crops of {which}", None,
                     _hardware(protos.get("hardware")), "not recorded"])
    if meta or training.get("data"):
        frames = f"{meta.get('n_train', '?')} training / {meta.get('n_val', '?')} validation frames" if meta else ""
        rows.insert(0, ["data", str(training.get("data", "")), frames, training.get("epochs") if not rows else None, "", ""])
    return rows


TRAINING_HEADERS = ["stage", "model", "data", "epochs", "hardware", "wall time"]


def model_markdown(info: dict) -> str:
    """The Model tab's summary of ``Service.model_info()``."""
    v = info["versions"] or {}
    th = info["thresholds"]
    ident = (info.get("metrics") or {}).get("identification") or {}
    det = (info.get("metrics") or {}).get("detection") or {}
    lines = [f"### {info['name'] or 'Unnamed model'}",
             f"**Source:** {info['source']} · **runtime:** {info.get('runtime', 'torch')}  ",
             f"**Trained:** {info['created'] or 'unknown'}  ",
             "**Versions:** " + (", ".join(f"{k} {val}" for k, val in v.items()) or "unknown") + "  ",
             f"**Detector:** {info['detector'].get('architecture')} at {info['detector'].get('imgsz')} px · "
             f"**Embedder:** {info['embedder'].get('backbone')} ({info['embedder'].get('dim')}-d"
             + (", sees each box's size" if info['embedder'].get('size_features') else "") + ")  ",
             f"**Species with prototypes:** {len(info['classes'])}  ",
             f"**Default thresholds:** detector {num(th['det_conf'])}, similarity {num(th['cls_conf'])}"
             + (f" (and {len(th['class_thresholds'])} species with their own, in the table below)" if th.get("class_thresholds") else "")]
    figures = []
    if isinstance(det.get("ap50"), float):
        figures.append(f"detection AP at IoU 0.5 **{det['ap50']:.3f}**, recall {det.get('recall', float('nan')):.3f}")
    if isinstance(ident.get("top1"), float):
        figures.append(f"identification top-1 **{ident['top1']:.3f}**, F1-macro {ident.get('f1_macro', float('nan')):.3f}"
                       + (f", F1-macro over species with ≥ {ident.get('common_species', {}).get('min_training_boxes', 10)} training boxes {ident['f1_macro_common']:.3f}" if isinstance(ident.get("f1_macro_common"), float) else ""))
    if isinstance(ident.get("unknown_rate_at_threshold"), float):
        figures.append(f"at the default thresholds {100 * ident['unknown_rate_at_threshold']:.1f}% of known objects are *unknown*"
                       + (f" and {100 * ident['accuracy_of_named_at_threshold']:.1f}% of the named ones are right" if isinstance(ident.get("accuracy_of_named_at_threshold"), float) else ""))
    cv = (info.get("counting") or {}).get("cross_validation") or {}
    if isinstance(cv.get("pooled_bray_curtis_est"), float):
        figures.append(f"counts at the counting point (detector {num(info['counting']['det_conf'])}): {cv['rows_ratio']:.2f}× the annotated objects "
                       f"shown, estimated total {100 * cv['pooled_total_error_est']:+.1f}%, Bray-Curtis of the composition "
                       f"{cv['pooled_bray_curtis_raw']:.3f} raw → **{cv['pooled_bray_curtis_est']:.3f}** estimated, 95% intervals holding "
                       f"{100 * cv['coverage']:.0f}% of species counts ({cv.get('folds', 5)}-fold cross-validation over frames)")
    if figures:
        lines.append("\n**Validation (frames the model did not train on):** " + "; ".join(figures) + ".")
    if info["problems"]:
        lines.append("\n⚠️ " + " · ".join(info["problems"]))
    return "\n".join(lines)


def _thumbs(images: list[np.ndarray], side: int = 64) -> str:
    """Exemplars as stored (square; with their shape kept in artifacts built
    since issue 28), contrast-stretched as the upload's crops are."""
    return "".join(f'<img src="{data_uri(contrast(im))}" width="{side}" height="{side}" style="display:inline-block;margin:1px;border-radius:3px">'
                   for im in images)


def species_gallery_html(name: str, subcenters: list[tuple[int, list[np.ndarray]]], spread: float | None) -> str:
    """One species: its sub-centres side by side, each with its exemplars and
    the number of training crops nearest to it."""
    used = [(n, ims) for n, ims in subcenters if n > 0]
    total = sum(n for n, _ in used)
    if spread is None or len(used) < 2:
        verdict = "Too few training crops for distinct forms."
    elif spread >= 0.9:
        verdict = f"Its sub-centres look alike (lowest cosine between them {spread:.2f}): one form."
    else:
        verdict = f"Its sub-centres differ (lowest cosine between them {spread:.2f}): the model learned {len(used)} forms."
    cells = "".join(f'<div style="display:inline-block;vertical-align:top;margin:0 10px 10px 0;padding:6px;border:1px solid var(--border-color-primary);'
                    f'border-radius:6px"><div style="white-space:nowrap">{_thumbs(ims)}</div><div style="font-size:0.85em">sub-centre {k + 1}: {n} crop{"s" if n != 1 else ""}</div></div>'
                    for k, (n, ims) in enumerate(subcenters) if n > 0)
    return f"<h4>{species_html(name)} <span style='font-weight:normal'>· {total} training crops</span></h4><p>{verdict}</p>{cells}"


def pairs_html(rows: list[dict], exemplars) -> str:
    """The closest species pairs, with exemplars of both side by side."""
    def first(name, n=3):
        if exemplars is None or name not in exemplars.names:
            return "<i>no exemplars</i>"
        per = sorted(exemplars.of(name), key=lambda t: -t[0])
        return _thumbs([ims[0] for cnt, ims in per if cnt and ims][:n], 44)
    body = "".join(f"<tr><td>{species_html(r['a'])}<div style='white-space:nowrap'>{first(r['a'])}</div></td>"
                   f"<td>{species_html(r['b'])}<div style='white-space:nowrap'>{first(r['b'])}</div></td>"
                   f"<td style='text-align:right'>{r['cosine']:.3f}</td><td style='text-align:right'>{r['mean_cosine']:.3f}</td>"
                   f"<td style='text-align:right'>{r.get('confused', '')}</td></tr>" for r in rows)
    return ("<table class='counts'><thead><tr><th>species</th><th>look-alike</th><th>closest sub-centres (cosine)</th><th>means (cosine)</th>"
            "<th>confused on validation frames</th></tr></thead><tbody>" + body + "</tbody></table>")
