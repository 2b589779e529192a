"""Which runtime runs an artifact's networks: one from ``plankton.runtime.TABLE``
(each implements ``interface.Runtime``), else PyTorch. ``runtime="auto"``
takes the first in the table whose files are present, current and usable
on this CPU, and says why not each one before it. Nothing here knows one
runtime from another: checks that concern one runtime (its files, its
package, the CPU classes its parity covers) live in its module."""
from __future__ import annotations

import warnings
from pathlib import Path

import plankton.runtime as table
from plankton.artifact.manifest import ArtifactError
from plankton.runtime import RUNTIMES, RuntimeSpec
from plankton.runtime.interface import DetectorNet, EmbedderNet

TORCH_TITLE = "PyTorch"


def _embedder_problem(emb: EmbedderNet, config: dict) -> str | None:
    """Whether the loaded embedder is the one config.json describes."""
    section, path = config.get("embedder") or {}, getattr(emb, "path", None)
    dim = int(section.get("dim", emb.dim))  # none recorded: build_cascade still checks it against the prototypes
    if emb.dim != dim:
        return f"{path}: {emb.dim}-d embeddings but config.json says {dim}"
    want = int(section.get("size_features", 0))
    if emb.size_features != want:
        return f"{path}: takes {emb.size_features} size features but config.json says {want}"
    return None


def _try(spec: RuntimeSpec, folder: Path, config: dict, asked: str | None, device: str, threads: int | None, streams: int):
    """((detector, embedder, name), None), or (None, why not) for one runtime."""
    runtime = spec.runtime()
    problem = runtime.status(folder, config, asked, device)
    if problem is None:
        try:
            det, emb = runtime.load(folder, config, threads, streams)
            problem = _embedder_problem(emb, config)
            if problem is None:
                return (det, emb, runtime.name(config)), None
        except ArtifactError as e:
            problem = str(e)
    return None, problem


def auto_runtime(folder: str | Path, config: dict) -> dict:
    """What ``runtime="auto"`` picks on the CPU, and why not each faster
    runtime, from the files, config and CPU alone (no network is loaded,
    so a file that fails to load is not caught here)."""
    folder, why_not = Path(folder), {}
    for spec in table.TABLE:
        runtime = spec.runtime()
        problem = runtime.status(folder, config)
        if problem is None:
            return {"runtime": runtime.name(config), "why_not": why_not}
        why_not[spec.key] = problem
    return {"runtime": "torch", "why_not": why_not}


def runtime_summary(folder: str | Path, config: dict) -> str:
    """One line saying which runtime ``runtime="auto"`` runs on this CPU
    and why: what the runtime says of this CPU (for INT8, the parity
    measurement that covers its class), else why not each faster runtime.
    For ``plankton info`` and the app's Model tab."""
    plan = auto_runtime(folder, config)
    name, spec = plan["runtime"], table.spec_for(plan["runtime"])
    head = f"{spec.titles[name] if spec else TORCH_TITLE} ({name})"
    why = spec.runtime().summary(Path(folder), config) if spec else None
    return f"{head}: {why}" if why else head + "".join(f"; not {k}: {v}" for k, v in plan["why_not"].items())


def load_onnx_models(folder: str | Path, config: dict, runtime: str = "auto", device: str = "cpu", threads: int | None = None,
                     streams: int = 1) -> tuple[DetectorNet, EmbedderNet, str] | None:
    """For ``build_cascade``: (detector, embedder, runtime name), or None
    when PyTorch should run. ``runtime="auto"`` walks the table, fastest
    first, and takes the first runtime usable here; one that the folder
    offers but that cannot run gets a warning saying why. An explicit
    runtime that cannot be used is an ArtifactError. ``streams``: frames
    OpenVINO may run at once (``quantized.ov_config``)."""
    names = table.runtime_names()
    if runtime not in names:
        raise ValueError(f"runtime must be one of {', '.join(names)}, not {runtime!r}")
    if runtime == "torch":
        return None
    folder = Path(folder)
    specs = table.TABLE if runtime == "auto" else (table.spec_for(runtime),)
    for i, spec in enumerate(specs):
        models, problem = _try(spec, folder, config, None if runtime == "auto" else runtime, device, threads, streams)
        if models is not None:
            return models
        if runtime != "auto":
            raise ArtifactError(problem)
        if spec.runtime().offered(folder, config, device):  # meant to be used, but not usable: say why
            fallback = "using PyTorch" if i == len(specs) - 1 else f"not using the {spec.label} files"
            warnings.warn(f"{fallback}: {problem}", RuntimeWarning, stacklevel=3)
    return None


__all__ = ["RUNTIMES", "TORCH_TITLE", "auto_runtime", "load_onnx_models", "runtime_summary"]
