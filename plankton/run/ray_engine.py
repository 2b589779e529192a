"""``predict --engine ray``: the same run on a Ray cluster, with Ray Data.

The pipeline, all of it in the cluster:

1. one row per command-line input (a manifest: one per byte range of it);
2. ``map_batches(_expand)``: each input expands into chunks of
   ``--batch-size`` frames (``inputs.expand``), leaving out the frames the
   journal already has (``--resume``). It reserves no CPU: it only lists
   folders and reads archives, and must not wait behind the actors;
3. ``map_batches(_Predictor)`` on a fixed pool of ``--workers`` actors of
   ``--threads-per-worker`` CPUs each. Each actor loads the model once,
   then decodes and analyses one chunk a call, with the very code the
   local engine runs (``batch.run_item``), and returns the chunk's results
   as one block.

The driver only plans the inputs, appends each finished block to the
journal, shows progress and merges at the end (``batch.write_outputs``).
Each chunk travels as its own block (``target_max_block_size`` of one
byte: Ray Data would otherwise pack a whole folder's chunks into one block,
and one block goes to one actor). A worker that dies has its chunk retried
by Ray Data (actors restart, their tasks are retried); a chunk that comes
back twice is counted once, by key.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from plankton.run.journal import frame_from_dict, frame_to_dict
from plankton.artifact.manifest import ArtifactError

INSTALL_HINT = "--engine ray needs Ray Data: pip install -r requirements-scale.txt"
EXPAND_TASKS = 16  # input blocks expanded side by side: listing and archive reading, not inference
# Passed on to the workers when set here: how Ultralytics and the Hub behave. Never a token.
FORWARD_ENV = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "HF_ENDPOINT", "HF_HUB_OFFLINE", "PLANKTON_HUB_TIMEOUT", "PLANKTON_ORT_SPIN")


class RunStopped(RuntimeError):
    """The cluster could not finish the run; the message is one line."""


def require_ray():
    """Ray Data, or ImportError with what to install in one line."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its [data] extra has no ray.data)
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return ray


# ---------------------------------------------------------------- in the cluster

def _pack(items) -> dict:
    """A chunk of Items → one row: the items as JSON, archive members' bytes in one blob."""
    meta, blob = [], bytearray()
    for it in items:
        data = it.data if it.data is not None else None
        meta.append([it.key, it.name, it.shown, it.path, it.error, None if data is None else len(data)])
        blob += data or b""
    return {"items": json.dumps(meta), "data": bytes(blob)}


def _unpack(items: str, data: bytes):
    from plankton.run.inputs import Item

    out, offset = [], 0
    for key, name, shown, path, error, size in json.loads(items):
        chunk = None if size is None else bytes(data[offset:offset + size])
        offset += size or 0
        out.append(Item(key, name, shown, path, chunk, error))
    return out


def _expand(batch, skip, chunk: int):
    """Input rows → chunk rows, lazily (a generator: blocks leave as they
    fill). A chunk may span inputs: a thousand files named on the command
    line still go out ``chunk`` at a time."""
    import ray

    from plankton.run.inputs import expand

    if isinstance(skip, ray.ObjectRef):  # Ray Data passes fn_kwargs as they are: fetch the set once per call
        skip = ray.get(skip)
    items = []
    for spec in batch["spec"]:
        for item in expand(json.loads(spec)):
            if item.key in skip:
                continue
            items.append(item)
            if len(items) == chunk:
                yield {k: [v] for k, v in _pack(items).items()}
                items = []
    if items:
        yield {k: [v] for k, v in _pack(items).items()}


class _Predictor:
    """A Ray Data actor: the model, loaded once, run over chunks."""

    def __init__(self, model: dict, opts: dict, threads: int, expect: dict):
        os.environ["PLANKTON_THREADS"] = str(threads)  # ONNX Runtime's intra-op threads
        import torch

        torch.set_num_threads(threads)
        from plankton.pipeline.load import load_artifact
        from plankton.run.batch import Options

        path = model["path"]
        if model.get("commit"):  # the exact Hub snapshot the driver resolved: this node's cache, else the Hub
            from plankton.hub import resolve_model

            path = resolve_model(model["repo"], model["commit"], strict=True).path
        self.cascade = load_artifact(path, runtime=model["runtime"], device=model["device"])
        files = self.cascade.config.get("files", {})
        mine = {k: files.get(k, {}).get("sha256") for k in expect}
        if mine != expect:  # e.g. a node with another folder at the same path
            raise ArtifactError(f"the model at {path} on this worker differs from the driver's (checksums of {', '.join(expect)})")
        self.opts = Options(**opts)

    def __call__(self, batch):
        from plankton.run.batch import run_item

        results, jpegs = [], []
        for items, data in zip(batch["items"], batch["data"]):
            records, blob = [], bytearray()
            for item in _unpack(items, data):
                o = run_item(self.cascade, item, self.opts)
                records.append([o.key, frame_to_dict(o.frame) if o.frame else None, o.error, len(o.jpeg)])
                blob += o.jpeg
            results.append(json.dumps(records))
            jpegs.append(bytes(blob))
        return {"results": np.array(results, dtype=object), "jpegs": np.array(jpegs, dtype=object)}


# ---------------------------------------------------------------- the driver

def _quiet(ray) -> None:
    """Ray Data logs every execution, warns that its own progress bars are
    off (ours is on) and prints tracebacks to the console; we say what
    failed in one line, and its log file in the Ray session still gets
    everything. (This process's DataContext: the CLI runs one dataset.)"""
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.target_max_block_size = 1  # one chunk per block (see the module's docstring)


def connect(ray, address: str | None, cpus_wanted: int) -> bool:
    """Join the cluster at ``address`` or start a local one (at least as many
    CPUs as asked for, so the pool can start). Returns whether we started it.
    The workers import this very plankton package (shipped with the job)."""
    if ray.is_initialized():  # e.g. a caller that set up its own cluster
        return False
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parents[1])], "env_vars": env}
    kwargs = dict(runtime_env=runtime_env, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **kwargs)
    else:
        cpus = max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, cpus_wanted)
        ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)
    return True


def _causes(e: BaseException):
    """``e`` and every exception Ray wrapped inside it, outermost first
    (``.cause`` of a RayTaskError, the RayTaskError an ActorDiedError
    carries in its arguments, ``__cause__``)."""
    todo, seen = [e], set()
    while todo:
        x = todo.pop(0)
        if id(x) not in seen:
            seen.add(id(x))
            yield x
            todo += [c for c in (getattr(x, "cause", None), x.__cause__, *x.args) if isinstance(c, BaseException)]


def _blocks(ds):
    """The pipeline's output blocks; its failures as ArtifactError (a
    worker could not load the model) or RunStopped, each one line."""
    it = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    while True:
        try:
            block = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - Ray wraps everything: one line for people
            causes = list(_causes(e))
            for cause in causes:
                if isinstance(cause, ArtifactError):  # a worker could not load the model
                    raise cause from None
            # The innermost exception that is not Ray's own says what went wrong; else Ray's.
            mine = [c for c in causes if not type(c).__module__.startswith("ray")]
            cause = mine[-1] if mine else e
            lines = [line for line in str(cause).strip().splitlines() if line.strip()]
            raise RunStopped(f"{type(cause).__name__}: {lines[0][:300] if lines else 'no message'}") from None
        yield block


def run(args, cascade, model: dict, opts, journal, out: Path, report, progress) -> tuple[dict, bool]:
    """Run the pipeline; returns ({key: FrameResult}, whether any input was
    bad) like ``batch.run_local``. ArtifactError if the workers cannot load
    the model; RunStopped if the cluster fails otherwise."""
    from dataclasses import asdict

    from plankton.run.batch import Outcome, keep, settings
    from plankton.run.inputs import plan

    ray = require_ray()
    threads = args.threads_per_worker
    # RAY_ADDRESS is how `ray job submit` and KubeRay's RayJob tell a driver where its cluster is.
    started = connect(ray, args.ray_address or os.environ.get("RAY_ADDRESS"), (args.workers or 1) * threads)
    try:
        _quiet(ray)
        workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        s = settings(cascade, opts)
        expect = {"detector.safetensors": s["model"], "embedder.safetensors": s["embedder"]}
        specs = [{"spec": json.dumps(spec)} for spec in plan(args.paths)]
        ds = ray.data.from_items(specs, override_num_blocks=min(len(specs), EXPAND_TASKS))  # inputs expand side by side
        ds = ds.map_batches(_expand, batch_size=None, num_cpus=0, fn_kwargs={"skip": ray.put(frozenset(journal.done)), "chunk": args.batch_size})
        gpus = 1 if str(args.device).startswith("cuda") else None  # one GPU per worker (untested here: no GPU)
        ds = ds.map_batches(_Predictor, batch_size=1, num_cpus=threads, num_gpus=gpus, compute=ray.data.ActorPoolStrategy(size=workers),
                            fn_constructor_kwargs={"model": model, "opts": asdict(opts), "threads": threads, "expect": expect})
        frames, failed, bad = dict(journal.done), set(), False
        for block in _blocks(ds):
            for results, blob in zip(block["results"], block["jpegs"]):
                records, offset, new = [], 0, 0
                for key, frame, error, size in json.loads(results):
                    jpeg, offset = bytes(blob[offset:offset + size]), offset + size
                    if key in frames or key in failed:  # a retried chunk, or an input given twice
                        continue
                    new += 1
                    if error:
                        failed.add(key)
                        report(error)
                        bad = True
                    else:
                        frames[key] = frame_from_dict(frame)
                        keep(out, Outcome(key, jpeg=jpeg))
                        records.append((key, frame))
                journal.add_many(records)
                progress.update(new)
        return frames, bad
    finally:
        if started:
            ray.shutdown()
        sys.stderr.flush()


__all__ = ["INSTALL_HINT", "RunStopped", "require_ray", "connect", "run"]
