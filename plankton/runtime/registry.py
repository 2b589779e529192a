"""Which runtime runs an artifact's networks: PyTorch, fp32 ONNX Runtime,
or the INT8 files (``plankton.runtime.quantized``). ``runtime="auto"`` takes the
fastest whose files are present, current and usable on this CPU, and says
why not each faster one. Kept apart from ``plankton.runtime.onnx`` (export and
ONNX Runtime wrappers) and ``plankton.runtime.quantized`` (INT8 files), which it
composes, so that neither of those imports the other's loader."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from plankton.artifact.manifest import ArtifactError
from plankton.runtime import INT8_RUNTIMES, RUNTIMES
from plankton.runtime.onnx import DETECTOR_ONNX, EMBEDDER_ONNX, has_onnx, load_detector, load_embedder, onnx_status
from plankton.runtime.quantized import (ISA_LABELS, ROUTE_FILES, RUNTIME_NAMES, covering_parity, cpu_isa, int8_status, load_int8_models,
                                        parity_summary, present_routes, where_measured)

RUNTIME_TITLES = {"openvino-int8": "OpenVINO INT8", "onnx-int8": "ONNX Runtime INT8", "onnx": "fp32 ONNX Runtime", "torch": "PyTorch"}




def _embedder_problem(path: Path, emb, config: dict) -> str | None:
    dim = int(config["embedder"]["dim"])
    if emb.dim != dim:
        return f"{path}: {emb.dim}-d embeddings but config.json says {dim}"
    want = int(config["embedder"].get("size_features", 0))
    if emb.size_features != want:
        return f"{path}: takes {emb.size_features} size features but config.json says {want}"
    return None


def _load_int8(folder: Path, config: dict, runtime: str, device: str, threads: int | None, streams: int = 1):
    """(models, None) or (None, why not) for the INT8 files."""
    problem = int8_status(folder, config, INT8_RUNTIMES.get(runtime))
    if problem is None and torch.device(device).type != "cpu":
        problem = f"the INT8 path runs on the CPU only, not {device}"
    if problem is None:
        try:
            det, emb, name = load_int8_models(folder, config, threads, streams)
            problem = _embedder_problem(folder / ROUTE_FILES[config["int8"]["route"]][1], emb, config)
            if problem is None:
                return (det, emb, name), None
        except Exception as e:  # the runtime's own error types
            problem = f"{folder}: the INT8 files cannot be loaded ({' '.join(str(e).split())[:300]})"
    return None, problem


def auto_runtime(folder: str | Path, config: dict) -> dict:
    """What ``runtime="auto"`` picks on the CPU, and why not each faster
    runtime, from the files, config and CPU alone (no network is loaded,
    so a file that fails to load is not caught here)."""
    folder, why_not = Path(folder), {}
    problem = int8_status(folder, config)
    if problem is None:
        return {"runtime": RUNTIME_NAMES[config["int8"]["route"]], "why_not": why_not}
    why_not["int8"] = problem
    problem = onnx_status(folder, config)
    if problem is None:
        return {"runtime": "onnx", "why_not": why_not}
    why_not["onnx"] = problem
    return {"runtime": "torch", "why_not": why_not}


def runtime_summary(folder: str | Path, config: dict) -> str:
    """One line saying which runtime ``runtime="auto"`` runs on this CPU
    and why: for INT8, the parity measurement that covers this CPU's class;
    otherwise why not each faster runtime. For ``plankton info`` and the
    app's Model tab."""
    plan = auto_runtime(folder, config)
    name = plan["runtime"]
    head = f"{RUNTIME_TITLES.get(name, name)} ({name})"
    if name in RUNTIME_TITLES and name.endswith("-int8"):
        section, isa = config["int8"], cpu_isa()
        found = covering_parity(section, isa) if "parity_by_isa" in section else None
        if found is None:  # files recorded before parity was measured per CPU class
            measured = (section.get("cpu") or {}).get("int8_isa")
            return f"{head}: this CPU ({ISA_LABELS.get(isa, isa)}); INT8 parity measured with {ISA_LABELS.get(measured, measured)} kernels ({parity_summary(section.get('parity') or {})} against fp32)"
        cls, record = found
        how = "its own class" if cls == isa else f"a class that sums 8-bit products alike ({ISA_LABELS.get(cls, cls)})"
        return f"{head}: this CPU ({ISA_LABELS.get(isa, isa)}) is covered by the INT8 parity of {how}, measured {where_measured(cls, record)}: {parity_summary(record)} against fp32"
    return head + "".join(f"; not {k}: {v}" for k, v in plan["why_not"].items())


def load_onnx_models(folder: str | Path, config: dict, runtime: str = "auto", device: str = "cpu", threads: int | None = None, streams: int = 1):
    """For ``build_cascade``: (detector, embedder, runtime name), or None
    when PyTorch should run. ``runtime="auto"`` takes the INT8 files when
    ``quantized.int8_status`` finds them usable, else the fp32 ONNX files
    when current, else None; INT8 or ONNX files that are present but
    unusable get a warning saying why. An explicit runtime ("onnx", "int8",
    "onnx-int8", "openvino-int8") that cannot be used is an ArtifactError.
    ``streams``: frames OpenVINO may run at once (``quantized.ov_config``)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "torch":
        return None
    folder = Path(folder)
    if runtime in INT8_RUNTIMES or runtime == "auto":
        models, problem = _load_int8(folder, config, runtime, device, threads, streams)
        if models is not None:
            return models
        if runtime != "auto":
            raise ArtifactError(problem)
        shipped = (config.get("int8") or {}).get("route")
        if (shipped or present_routes(folder)) and torch.device(device).type == "cpu":  # INT8 meant to be used, but not usable: say why
            warnings.warn(f"not using the INT8 files: {problem}", RuntimeWarning, stacklevel=3)
    problem = onnx_status(folder, config)
    if problem is None and torch.device(device).type != "cpu":
        problem = f"the ONNX Runtime path runs on the CPU only, not {device}"
    if problem is None:
        try:
            det, emb = load_detector(folder / DETECTOR_ONNX, threads), load_embedder(folder / EMBEDDER_ONNX, threads)
            problem = _embedder_problem(folder / EMBEDDER_ONNX, emb, config)
            if problem is None:
                return det, emb, "onnx"
        except Exception as e:  # onnxruntime's own error types
            problem = f"{folder}: ONNX Runtime cannot load the ONNX files ({' '.join(str(e).split())[:300]})"
    if runtime == "onnx":
        raise ArtifactError(problem)
    if has_onnx(folder):  # files present but unusable: say why once; absent files are the normal case
        warnings.warn(f"using PyTorch: {problem}", RuntimeWarning, stacklevel=3)
    return None
