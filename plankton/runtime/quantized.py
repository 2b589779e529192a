"""INT8 versions of the detector and the embedder, and when to use them.

``python -m training.quantize MODEL_DIR --data DATA`` adds them to an
artifact that already has current fp32 ONNX files, and records in
config.json's "int8" section: the route ("openvino": OpenVINO IR made with
NNCF; "onnxruntime": QDQ ONNX made by ONNX Runtime's quantizer), the files,
the sha256 of the safetensors and ONNX files they were made from, the
training frames they were calibrated on, the CPU class they were measured
on, and their parity with fp32 ONNX on the validation frames. When the
INT8 embedder does not hold identification accuracy, "files" names the
fp32 ``embedder.onnx`` instead, run by the same runtime.

``runtime="auto"`` uses them only when they were made from the weights now
in the folder, the runtime package imports, and a parity measurement that
passed covers this CPU's class of 8-bit arithmetic (``cpu_problem``).
``training.quantize`` measures parity on its own CPU's class and again with
OpenVINO limited to each lesser class's kernels (``ISA_ENV``), and records
each under "parity_by_isa" with the CPU and the kernels that ran. Weights
made 7-bit by NNCF's overflow fix never saturate the 16-bit sums of CPUs
without VNNI, so every class then computes the same integers and one
measurement covers them all (``exact_sums``).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from plankton.artifact.manifest import DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, ArtifactError
from plankton.runtime.interface import StandIn, cpu_only, one_line

CPUINFO = Path("/proc/cpuinfo")
OPENVINO, ONNXRUNTIME = "openvino", "onnxruntime"
ROUTE_FILES = {  # route → (detector, embedder); an OpenVINO IR .xml has its weights in the .bin beside it
    OPENVINO: ("detector.int8.xml", "embedder.int8.xml"),
    ONNXRUNTIME: ("detector.int8.onnx", "embedder.int8.onnx"),
}
INT8_ROUTES = {"int8": None, "onnx-int8": ONNXRUNTIME, "openvino-int8": OPENVINO}  # runtime name → route (None: the artifact's)
RUNTIME_NAMES = {route: name for name, route in INT8_ROUTES.items() if route}  # route → runtime name
SOURCES = (DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, "detector.onnx", "embedder.onnx")


def with_weights(files) -> list[str]:
    """The files themselves and, for an OpenVINO IR .xml, its .bin."""
    out = []
    for f in files:
        out += [f, f[:-4] + ".bin"] if f.endswith(".xml") else [f]
    return out


def route_files(route: str) -> list[str]:
    """Every INT8 file a route can put in the artifact."""
    return with_weights(ROUTE_FILES[route])


def present_routes(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return [r for r in ROUTE_FILES if any((folder / f).is_file() for f in route_files(r))]


def cpu_flags(path: str | Path | None = None) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is no
    such file: then nothing is known about its 8-bit kernels)."""
    try:
        text = Path(path or CPUINFO).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name(path: str | Path | None = None) -> str | None:
    """The CPU's model name from /proc/cpuinfo, for the parity record."""
    try:
        lines = Path(path or CPUINFO).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def int8_isa(flags: set[str] | None) -> str | None:
    """The class of 8-bit dot products this CPU has. Without VNNI (AVX-512
    VNNI, or AVX-VNNI on newer cores) x86 multiplies u8×s8 pairs with
    VPMADDUBSW, whose 16-bit sums can saturate, so results can differ from
    a VNNI machine's. None: no AVX2, where INT8 is no faster than fp32."""
    if not flags or "avx2" not in flags:
        return None
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "vnni"
    return "avx2"


ISA_CLASSES = ("avx2", "vnni", "amx")  # worst to best
ISA_LABELS = {"avx2": "AVX2 without VNNI", "vnni": "VNNI", "amx": "AMX"}
# oneDNN (inside OpenVINO's CPU plugin) reads this once per process and then
# uses no kernels above the named ISA: how a better CPU runs a lesser class's kernels.
ISA_ENV = "ONEDNN_MAX_CPU_ISA"
ISA_LIMITS = {"avx2": "AVX2", "vnni": "AVX512_CORE_VNNI"}


LIMIT_CLASSES = {"SSE41": None, "AVX": None, "AVX2": "avx2", "AVX512_CORE": "avx2", "AVX2_VNNI": "vnni", "AVX2_VNNI_2": "vnni",
                 "AVX512_CORE_VNNI": "vnni", "AVX512_CORE_BF16": "vnni", "AVX512_CORE_FP16": "vnni", "AVX10_1_512": "vnni"}  # others: no cap


def cpu_isa(flags: set[str] | None = None) -> str | None:
    """This process's 8-bit class: the CPU's (``int8_isa``), lowered to the
    class of the kernels ``ONEDNN_MAX_CPU_ISA`` limits OpenVINO to, if set
    (then those kernels run, so that class's parity is the one that applies)."""
    import os

    isa = int8_isa(cpu_flags() if flags is None else flags)
    limit = os.environ.get(ISA_ENV, "").strip().upper()
    if isa is None or limit not in LIMIT_CLASSES:
        return isa
    capped = LIMIT_CLASSES[limit]
    return None if capped is None else min(isa, capped, key=ISA_CLASSES.index)


def isa_classes_below(isa: str | None, flags: set[str] | None) -> list[str]:
    """The lesser classes whose kernels this CPU can be limited to."""
    if isa not in ISA_CLASSES:
        return []
    below = list(ISA_CLASSES[: ISA_CLASSES.index(isa)])
    return [c for c in below if c != "vnni" or "avx512_vnni" in (flags or ())]  # AVX-VNNI alone has no oneDNN limit of its own


def exact_sums(isa: str, section: dict) -> bool:
    """Whether this class adds the files' 8-bit products without saturating:
    VNNI and AMX sum in 32 bits; AVX2 does too when every quantized weight
    has 7 bits (NNCF's overflow fix on all layers, ONNX Runtime's reduce_range),
    since 2×255×64 fits a 16-bit sum. Classes that sum exactly compute the same
    integers, so a parity measured on one holds for the others."""
    return isa in ("vnni", "amx") or bool((section.get("precision") or {}).get("weights_7bit"))


def covering_parity(section: dict, isa: str) -> tuple[str, dict] | None:
    """(class, record) of the parity measurement that covers CPUs of class
    ``isa``: its own class's, else one of a class that sums alike. None: none does."""
    measured = section.get("parity_by_isa") or {}
    if isa in measured:
        return isa, measured[isa]
    if exact_sums(isa, section):
        for other in ISA_CLASSES:
            if other in measured and exact_sums(other, section):
                return other, measured[other]
    return None


METRIC_LABELS = {"ap50": "AP@0.5", "recall": "recall", "top1": "top-1", "f1_macro": "F1-macro", "open_set_unknown_rate": "unseen species unknown"}


def parity_summary(record: dict) -> str:
    """Each gated figure's change against fp32, e.g. "AP@0.5 -0.0036, top-1 +0.0025"."""
    drop = record.get("drop_vs_fp32") or {}
    return ", ".join(f"{METRIC_LABELS.get(k, k)} {-v:+.4f}" for k, v in drop.items())


def where_measured(isa: str, record: dict) -> str:
    """"with AVX2 kernels on AMD EPYC 9B14 (ONEDNN_MAX_CPU_ISA=AVX2)": the class, the CPU, the limit."""
    return (f"with {ISA_LABELS.get(isa, isa)} kernels" + (f" on {record['cpu']}" if record.get("cpu") else "")
            + (f" ({record['isa_limit']})" if record.get("isa_limit") else ""))


def cpu_problem(section: dict, flags: set[str] | None = None) -> str | None:
    """Why this CPU should not run the INT8 files (None if it may): no
    measurement covers its class, or the one that does failed."""
    flags = cpu_flags() if flags is None else flags
    isa = cpu_isa(flags)
    if isa is None:
        return "this CPU has no AVX2 8-bit kernels" if flags is not None else "this CPU's features are unknown (no /proc/cpuinfo)"
    if "parity_by_isa" not in section:  # files quantized before parity was measured per class: one CPU class recorded
        measured = (section.get("cpu") or {}).get("int8_isa")
        if measured in ("vnni", "amx") and isa == "avx2":
            return "the INT8 parity was measured with VNNI, and this CPU has none (its 8-bit sums can saturate)"
        return None
    found = covering_parity(section, isa)
    if found is None:
        done = ", ".join(ISA_LABELS.get(k, k) for k in section["parity_by_isa"]) or "none"
        return f"no INT8 parity was measured for this CPU's class ({ISA_LABELS[isa]}; measured: {done})"
    cls, record = found
    if record.get("passed") is not True:
        return f"the INT8 parity measured {where_measured(cls, record)} did not hold ({parity_summary(record)} against fp32)"
    return None


def int8_kernels(compiled) -> list[str]:
    """The kernels OpenVINO chose for a compiled model's 8-bit layers
    (e.g. "jit_avx2_I8", "brgconv_avx512_I8"): what shows which class ran."""
    names = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "primitiveType" in info and info["primitiveType"].astype(str).endswith("_I8"):
            names.add(info["primitiveType"].astype(str))
    return sorted(names)


def kernels_class(kernels: list[str]) -> str | None:
    """The best ISA among kernel names: "amx", "avx512" or "avx2"."""
    for key in ("amx", "avx512", "avx2"):
        if any(key in k for k in kernels):
            return key
    return None


def int8_status(folder: str | Path, config: dict, route: str | None = None) -> str | None:
    """Why the artifact's INT8 files cannot be used (None if they can)."""
    folder = Path(folder)
    section = config.get("int8")
    if not isinstance(section, dict):
        return f"{folder}: config.json has no 'int8' section (run: python -m training.quantize {folder} --data DATA)"
    if section.get("route") not in ROUTE_FILES:
        return f"{folder}: no INT8 files were shipped ({section.get('why', 'no route recorded')})"
    if route is not None and section["route"] != route:
        return f"{folder}: its INT8 files are for {section['route']}, not {route}"
    files = section.get("files") or {}
    if set(files) != {"detector", "embedder"}:
        return f"{folder}: config.json's 'int8' section does not name its detector and embedder files"
    missing = [f for f in with_weights(files.values()) if not (folder / f).is_file()]
    if missing:
        return f"{folder}: no {' or '.join(missing)}"
    parity = section.get("parity") or {}
    if "parity_by_isa" not in section and parity.get("passed") is not True:  # per class, cpu_problem decides
        return f"{folder}: no passed INT8 parity is recorded in config.json"
    files = config.get("files", {})
    for name in SOURCES:
        made_from = (section.get("source_sha256") or {}).get(name)
        if made_from is None or made_from != files.get(name, {}).get("sha256"):
            return f"{folder}: the INT8 files were made from other weights than {name} (re-run: python -m training.quantize {folder} --data DATA)"
    try:
        __import__("openvino" if section["route"] == OPENVINO else "onnxruntime")
    except Exception:  # ImportError, or a broken native library
        return f"the {section['route']} package is not installed"
    return cpu_problem(section)


# ---------------------------------------------------------------- OpenVINO


def ov_config(threads: int, streams: int = 1) -> dict:
    """``threads`` threads in all, in ``streams`` streams: one stream answers
    one frame soonest (the app); two let two frames run at once, each on
    its share of the cores, which keeps the cores busy while the other
    frame is in Python (the CLI). f32 for what is not quantized: on CPUs
    with bf16 or AMX, OpenVINO would otherwise run those layers in bf16,
    which the parity run did not measure. No core pinning: the decode
    thread and the web server share these cores. A stream needs a thread
    of its own, so there are at most ``threads`` streams."""
    streams = max(1, min(int(streams), int(threads)))
    return {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": streams, "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}


class _OvModule(StandIn):
    """A ``StandIn`` over an OpenVINO compiled model. An infer request is
    not thread-safe, so each thread gets its own."""

    engine = "the INT8 path"

    def __init__(self, compiled, path, threads: int, meta: dict, streams: int = 1):
        self.compiled, self.path = compiled, str(path)
        self.streams = int(compiled.get_property("NUM_STREAMS"))  # what OpenVINO made of the request
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.metadata = dict(meta)
        self.options = {"runtime": "openvino"} | {k: str(v) for k, v in ov_config(threads, streams).items()}
        self._local = threading.local()

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def run(self, *arrays) -> np.ndarray:
        from plankton.runtime.onnx import _to_numpy

        feed = {name: _to_numpy(a) for name, a in zip(self.input_names, arrays)}
        out = self._request().infer(feed, share_inputs=True)
        return np.array(out[0], copy=True)


class OvDetectionModel(_OvModule):
    """``DetectorNet`` over OpenVINO (see ``OrtDetectionModel``)."""

    def __init__(self, compiled, path, threads, meta: dict, streams: int = 1):
        super().__init__(compiled, path, threads, meta, streams)
        self.read_detector_metadata(meta)

    def __call__(self, x) -> torch.Tensor:
        return torch.from_numpy(self.run(x))


class OvEmbeddingModel(_OvModule):
    """``EmbedderNet`` over OpenVINO (see ``OrtEmbeddingModel``)."""

    def __init__(self, compiled, path, threads, meta: dict, streams: int = 1):
        super().__init__(compiled, path, threads, meta, streams)
        self.read_embedder_metadata(meta, int(meta.get("dim") or compiled.outputs[0].get_partial_shape()[-1].get_length()),
                                    compiled.inputs[1].get_partial_shape()[1].get_length() if len(compiled.inputs) > 1 else 0)

    def __call__(self, x, sizes=None) -> torch.Tensor:
        if self.size_features and sizes is None:
            raise ValueError("this embedder takes the boxes' sizes too")
        return torch.from_numpy(self.run(x, sizes) if self.size_features else self.run(x))


def _ov_metadata(model) -> dict:
    """The plankton metadata that ``training.quantize`` stores in the IR."""
    try:
        info = model.get_rt_info(["plankton"]).astype(dict)
        return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in info.items()}
    except Exception:  # no such section: an IR from elsewhere
        return {}


def load_openvino(path: str | Path, kind: str, threads: int, streams: int = 1):
    """An IR .xml (weights in the .bin beside it) or an ONNX file, compiled
    for the CPU and wrapped for ``kind`` ("detector" | "embedder"). Both
    are plain graph and tensor files: nothing is unpickled."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    meta = _ov_metadata(model)
    compiled = core.compile_model(model, "CPU", ov_config(threads, streams))
    cls = OvDetectionModel if kind == "detector" else OvEmbeddingModel
    return cls(compiled, path, threads, meta, streams)


def load_int8_models(folder: str | Path, config: dict, threads: int | None = None, streams: int = 1):
    """(detector, embedder, runtime name) from the artifact's INT8 files.
    Call ``int8_status`` first; this only loads. ``streams``: see ``ov_config``
    (OpenVINO only)."""
    from plankton.runtime.onnx import default_threads, load_detector, load_embedder

    folder = Path(folder)
    route = config["int8"]["route"]
    files = config["int8"].get("files") or dict(zip(("detector", "embedder"), ROUTE_FILES[route]))
    det_file, emb_file = files["detector"], files["embedder"]  # the embedder may be the fp32 ONNX file: see training.quantize
    threads = threads or default_threads()
    if route == OPENVINO:
        det, emb = load_openvino(folder / det_file, "detector", threads, streams), load_openvino(folder / emb_file, "embedder", threads, streams)
    else:
        det, emb = load_detector(folder / det_file, threads), load_embedder(folder / emb_file, threads)
    return det, emb, RUNTIME_NAMES[route]


class Int8Runtime:
    """``interface.Runtime`` for the INT8 files the artifact ships, on
    either route: "int8" asks for whichever, "onnx-int8" and "openvino-int8" for one."""

    def status(self, folder: Path, config: dict, asked: str | None = None, device: str = "cpu") -> str | None:
        return int8_status(folder, config, INT8_ROUTES.get(asked)) or cpu_only(device, _OvModule.engine)

    def offered(self, folder: Path, config: dict, device: str) -> bool:
        shipped = (config.get("int8") or {}).get("route")
        return bool(shipped or present_routes(folder)) and torch.device(device).type == "cpu"

    def name(self, config: dict) -> str:
        return RUNTIME_NAMES[config["int8"]["route"]]

    def load(self, folder: Path, config: dict, threads: int | None = None, streams: int = 1):
        try:
            return load_int8_models(folder, config, threads, streams)[:2]
        except Exception as e:  # the runtime's own error types
            raise ArtifactError(f"{folder}: the INT8 files cannot be loaded ({one_line(e)})") from None

    def summary(self, folder: Path, config: dict) -> str | None:
        """The parity measurement that covers this CPU's class."""
        section, isa = config["int8"], cpu_isa()
        found = covering_parity(section, isa) if "parity_by_isa" in section else None
        if found is None:  # files recorded before parity was measured per CPU class
            measured = (section.get("cpu") or {}).get("int8_isa")
            return (f"this CPU ({ISA_LABELS.get(isa, isa)}); INT8 parity measured with {ISA_LABELS.get(measured, measured)} kernels "
                    f"({parity_summary(section.get('parity') or {})} against fp32)")
        cls, record = found
        how = "its own class" if cls == isa else f"a class that sums 8-bit products alike ({ISA_LABELS.get(cls, cls)})"
        return f"this CPU ({ISA_LABELS.get(isa, isa)}) is covered by the INT8 parity of {how}, measured {where_measured(cls, record)}: {parity_summary(record)} against fp32"


RUNTIME = Int8Runtime()


__all__ = ["CPUINFO", "INT8_ROUTES", "ISA_CLASSES", "ISA_ENV", "ISA_LABELS", "ISA_LIMITS", "LIMIT_CLASSES", "ONNXRUNTIME", "OPENVINO", "ROUTE_FILES", "RUNTIME", "RUNTIME_NAMES", "SOURCES",
           "Int8Runtime", "OvDetectionModel", "OvEmbeddingModel", "cpu_flags",
           "cpu_isa", "cpu_name", "cpu_problem", "covering_parity", "exact_sums", "int8_isa", "int8_kernels", "isa_classes_below", "kernels_class", "parity_summary", "where_measured", "int8_status", "load_int8_models", "load_openvino", "ov_config", "present_routes", "route_files", "with_weights"]
