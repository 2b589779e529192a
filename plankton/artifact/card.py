"""The model card (README.md) pushed with every artifact: Hub metadata
(``huggingface_hub.ModelCardData`` with ``EvalResult``s, so the Hub shows
the figures in its model index) and a plain summary built from
config.json and metrics.json.

    card = build_card(config, metrics, repo_id="ORG/NAME")   # a huggingface_hub.ModelCard
    card.data.eval_results                                    # what the Hub will index

metrics.json may be any JSON object. Numbers are collected as measured
figures, one level of sections deep or more (``{"detector": {"map50": 0.8},
"identifier": {"top1": 0.9}}`` → ``detector/map50``, ``identifier/top1``).
Sections or keys that mention detection/boxes/mAP are reported under the
object-detection task, the rest under image-classification. Lists of rows
with a "species" key (plankton.metrics.per_class_table) become a per-species
table. Counts (support, n, …) and settings (threshold, seed, …) are shown in
the summary but are not reported as metrics.
"""
from __future__ import annotations

import json
import math
import re

from huggingface_hub import EvalResult, ModelCard, ModelCardData

LIBRARY = "plankton"
PIPELINE_TAG = "object-detection"
BASE_TAGS = ["plankton", "microscopy", "object-detection", "image-classification", "metric-learning", "safetensors", "biology"]
NOT_METRICS = re.compile(
    r"^(support|n|count|seed|epochs?|epochs_done|steps?|seconds|time|duration|wall_s|.*_s|.*_s_per_frame|threshold|.*_threshold|.*floor"
    r"|images|objects|objects_.*|species|boxes|frames|.*_frames|.*_objects|.*_crops|lr|batch_size|cpus|.*threads|n_.*|num_.*|.*_count"
    r"|det_conf|containment|folds|coverable)$", re.I)
# Sections of metrics.json that describe the evaluation rather than measure the model.
CONTEXT = {"split", "evaluation", "learning_curve", "hardware", "timing", "args", "meta"}
HIDDEN = {"hardware", "learning_curve", "args", "history"}  # not even shown in the summary table
DETECTION = re.compile(r"detect|^det_|\bmap|box|iou|^ap\d*(_\d+)?$|^ap_|_ap\d*(_\d+)?$|end_to_end|e2e|locali[sz]", re.I)
MAX_METRICS = 40


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _walk(obj, path=()):
    """(path tuple, value) for every scalar leaf of nested dicts."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, path + (str(k),))
    else:
        yield path, obj


def measured_figures(metrics: dict | None) -> list[dict]:
    """Numeric figures of metrics.json: [{"name", "type", "task", "value", "metric"}],
    where ``metric`` is False for counts, settings, timings and context
    sections (split, evaluation); hardware and learning curves are left out."""
    out = []
    for path, v in _walk(metrics or {}):
        if not path or not _finite(v) or any(p in HIDDEN for p in path):
            continue
        name = "/".join(path)
        slug = re.sub(r"[^a-z0-9]+", "_", path[-1].lower()).strip("_") or "value"
        task = "object-detection" if any(DETECTION.search(p) for p in path) else "image-classification"
        metric = not NOT_METRICS.match(path[-1]) and not any(p in CONTEXT for p in path)
        out.append({"name": name, "type": slug, "task": task, "value": float(v) if isinstance(v, float) else int(v), "metric": metric})
    return out


def per_species_tables(metrics: dict | None) -> list[tuple[str, list[dict]]]:
    """(name, rows) of every list of {"species": ...} rows in metrics.json."""
    tables = []

    def visit(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, path + (str(k),))
        elif isinstance(obj, list) and obj and all(isinstance(r, dict) and "species" in r for r in obj):
            tables.append(("/".join(path) or "per species", obj))

    visit(metrics or {}, ())
    return tables


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 200 else s[:197] + "..."
    return str(v)


def _summary(v, depth: int = 0) -> str:
    """A short, readable rendering of a config value: lists become counts,
    nested mappings are shown one level deep, hardware and run arguments are left out."""
    if isinstance(v, dict):
        parts = [f"{k}: {_summary(x, depth + 1)}" for k, x in v.items() if k not in HIDDEN and x is not None and x != {} and x != []]
        text = ", ".join(parts) if depth < 2 else "…"
        return text if len(text) <= 400 else text[:397] + "..."
    if isinstance(v, list):
        return f"{len(v)} entries"
    return _fmt(v)


def _md(text) -> str:
    """Escape table-breaking characters in a table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def class_names(config: dict) -> list[str]:
    return list((config.get("prototypes") or {}).get("names") or [])


def card_data(config: dict, metrics: dict | None, *, repo_id: str | None = None, license: str | None = None) -> ModelCardData:
    """The card's metadata: library, license, tags and one EvalResult per
    measured figure of metrics.json (validation frames)."""
    name = (repo_id or "").split("/")[-1] or config.get("name") or "plankton-model"
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    dataset = str(training.get("dataset_name") or training.get("dataset") or training.get("data") or "plankton microscope frames (held-out split)")
    titles = {"object-detection": "Object detection", "image-classification": "Species identification"}
    results = [EvalResult(task_type=f["task"], task_name=titles[f["task"]], dataset_type=str(training.get("dataset_id") or "custom"),
                          dataset_name=dataset, dataset_split=str(training.get("eval_split") or "validation"),
                          metric_type=f["type"], metric_name=f["name"], metric_value=f["value"])
               for f in measured_figures(metrics) if f["metric"]][:MAX_METRICS]
    return ModelCardData(library_name=LIBRARY, license=license or config.get("license") or "unknown", pipeline_tag=PIPELINE_TAG,
                         tags=list(BASE_TAGS), model_name=name, eval_results=results or None)


def build_card(config: dict, metrics: dict | None = None, *, repo_id: str | None = None, license: str | None = None, files: dict | None = None,
               gallery: dict | None = None) -> ModelCard:
    """The model card: ``card_data`` as its YAML front matter, then the
    human summary (with ``plankton.artifact.gallery.summary``'s tables when given).
    ``str(card)`` is the README.md text."""
    data = card_data(config, metrics, repo_id=repo_id, license=license)
    names = class_names(config)
    det = config.get("detector") or {}
    emb = config.get("embedder") or {}
    ident = config.get("identifier") or {}
    title = config.get("name") or (repo_id or "plankton model").split("/")[-1]
    lines = ["---", data.to_yaml(), "---", "", f"# {title}", ""]

    lines += [
        "A plankton identification model for brightfield microscope frames, made with the "
        "open-source `plankton` package. It works in two stages: a detector finds every object "
        "in a frame, then an embedding network compares each object's crop with stored "
        "prototypes of known species and names the closest one, or answers **unknown** when "
        "nothing is similar enough.",
        "",
        "## What it identifies",
        "",
        f"- Detector: `{det.get('architecture', '?')}` at {det.get('imgsz', '?')} px, "
        f"confidence threshold {det.get('conf', '?')}"
        + (f", tiled inference with {det.get('tile')} px tiles" if det.get("tile") else "") + ".",
        f"- Identifier: `{emb.get('backbone', '?')}` embeddings ({emb.get('dim', '?')}-d), "
        f"similarity threshold `cls_conf` {ident.get('cls_conf', ident.get('threshold', '?'))} below which an object is `unknown`.",
        f"- {len(names)} species" + (":" if names else " (no class names recorded)."),
        "",
    ]
    if names:
        lines += [", ".join(f"*{n}*" for n in names), ""]

    lines += ["## Measured figures", ""]
    figures = measured_figures(metrics)
    if figures:
        lines += ["| figure | value |", "|---|---|"] + [f"| {_md(f['name'])} | {_fmt(f['value'])} |" for f in figures] + [""]
        for name, rows in per_species_tables(metrics)[:2]:
            cols = [c for c in ("species", "precision", "recall", "f1", "support") if any(c in r for r in rows)]
            lines += [f"Per species ({_md(name)}):", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_md(_fmt(r.get(c, ""))) for c in cols) + " |" for r in rows[:60]] + [""]
    else:
        lines += ["Not measured: this artifact has no metrics.json, so its accuracy is unknown. "
                  "Evaluate it on your own frames before relying on it.", ""]

    if gallery:
        lines += ["## Look-alike species", "",
                  "The species pairs whose prototypes are closest (cosine of their closest sub-centres, and of their class means): "
                  "the ones the model finds hardest to tell apart.", "", "| species | look-alike | sub-centres | means |", "|---|---|---|---|"]
        lines += [f"| {_md(p['a'])} | {_md(p['b'])} | {p['cosine']:.3f} | {p['mean_cosine']:.3f} |" for p in gallery["closest_pairs"]] + [""]
        lines += ["Training crops nearest to each of a species' sub-centres (its forms), and the lowest cosine between two of them:", "",
                  "| species | crops per sub-centre | lowest cosine |", "|---|---|---|"]
        lines += [f"| {_md(r['species'])} | {' · '.join(map(str, r['subcenter_crops'])) if r['subcenter_crops'] else 'not stored'} | "
                  f"{r['lowest_subcenter_cosine']:.2f} |" for r in gallery["species"]] + [""]

    lines += ["## Training data", ""]
    training = config.get("training")
    if isinstance(training, dict) and training:
        lines += [f"- **{_md(k)}**: {_md(_summary(v))}" for k, v in training.items() if k not in HIDDEN and v is not None] + [""]
    elif training:
        lines += [str(training), ""]
    else:
        lines += ["Not recorded in this artifact's config.json.", ""]

    lines += [
        "## Limits",
        "",
        f"- It only knows the {len(names) or 'listed'} species above. Any other organism is either reported "
        "as `unknown` or, if it looks like a known species, wrongly given that species' name.",
        "- The training frames come from a single collection taken with one microscope set-up (see "
        "Training data). Other optics, magnifications, focus, illumination, stains or debris levels can "
        "lower detection and identification quality without warning.",
        "- The figures above were measured on a held-out split of the same collection; they overstate "
        "accuracy on samples from other sites, seasons or instruments.",
        "- Crowded, overlapping or out-of-focus objects, and objects much smaller than those in training, "
        "are often missed or merged.",
        "- It is a research aid: check its output before using counts for monitoring, regulation or "
        "public-health decisions.",
        "",
        "## Use",
        "",
        "```bash",
        f"PLANKTON_MODEL_REPO={repo_id or 'ORG/NAME'} PLANKTON_MODEL_REVISION=<commit sha> python app.py",
        f"python -m plankton predict frames/ --out results/ --model-repo {repo_id or 'ORG/NAME'} --model-revision <commit sha>",
        "```",
        "",
        "Pin a full commit sha in production. The files are checked against the sha256 checksums in "
        "config.json before loading; only safetensors, JSON, PNG and CSV files are downloaded.",
        "",
    ]
    files = files if files is not None else config.get("files") or {}
    if files:
        lines += ["## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
        lines += [f"| {_md(k)} | {v.get('bytes', '')} | `{str(v.get('sha256', ''))[:16]}…` |" for k, v in sorted(files.items())] + [""]
    versions = config.get("versions") or {}
    if versions or config.get("created"):
        lines += ["Built " + (f"{config['created']} " if config.get("created") else "") + "with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    return ModelCard("\n".join(lines))


__all__ = ["build_card", "card_data", "measured_figures", "per_species_tables"]
