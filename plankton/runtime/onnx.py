"""ONNX export of both networks, and ONNX Runtime wrappers that drop into
``Detector`` and ``Identifier`` in place of the PyTorch modules.

An artifact may carry ``detector.onnx`` and ``embedder.onnx`` next to the
safetensors (``python -m training.export_onnx MODEL_DIR`` adds them, and
records in config.json's "onnx" section which safetensors they were made
from). ``load_artifact(folder, runtime="onnx"|"auto")`` then runs them in
ONNX Runtime; the PyTorch path stays the default and always works. INT8
versions of both (``plankton.runtime.quantized``) come before them under "auto"
(``plankton.runtime.registry`` chooses).

Graphs: the detector maps ``images`` B×3×H×W float32 in 0..1 (H, W
multiples of the stride) to ``output0`` B×(4+nc)×A — the Detect head's
decoded boxes (xywh pixels) and class scores, i.e. what
``non_max_suppression`` takes, without the raw feature maps. The embedder
maps ``crops`` B×3×S×S (normalised) to ``embeddings`` B×D unit rows.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch

from plankton.artifact.manifest import DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, ArtifactError
from plankton.runtime.interface import StandIn, cpu_only, one_line

DETECTOR_ONNX, EMBEDDER_ONNX = "detector.onnx", "embedder.onnx"
ONNX_FILES = (DETECTOR_ONNX, EMBEDDER_ONNX)
OPSET = 17
THREADS_ENV = "PLANKTON_THREADS"
SPIN_ENV = "PLANKTON_ORT_SPIN"


def available() -> bool:
    """True when onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except Exception:  # ImportError, or a broken native library
        return False
    return True


def has_onnx(folder: str | Path) -> bool:
    folder = Path(folder)
    return all((folder / f).is_file() for f in ONNX_FILES)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2
    CPU quota (containers such as Spaces' 2-vCPU tier)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(-(-int(quota) // int(period)))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_threads() -> int:
    """Intra-op threads: $PLANKTON_THREADS if set, else the available CPUs."""
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return available_cpus()


def default_spin() -> bool:
    """Whether idle intra-op threads busy-wait: $PLANKTON_ORT_SPIN ("1" to
    enable), else off. ORT spins by default, which is fastest on an idle
    machine; on 2 vCPUs shared with a decode thread, NMS, crops and a web
    server, spinning workers steal their time (measured with
    ``python -m benchmarks.speed``: the detector's median and p90 degrade
    badly under contention with spinning, little without)."""
    return os.environ.get(SPIN_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def session_options(threads: int | None = None, spin: bool | None = None):
    """ORT options: intra-op threads = ``threads`` (default: available
    cores), one inter-op thread, sequential execution, all graph
    optimisations; ``spin`` (default: ``default_spin()``) lets idle worker
    threads busy-wait between operators."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    spin = default_spin() if spin is None else spin
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # Flush denormals to zero: the detector's attention softmax produces
    # many, and x86 arithmetic on them is slow (~8% of the detector's time
    # at 1920×1088; outputs measured identical on the test frames).
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return so


def make_session(path: str | Path, threads: int | None = None, spin: bool | None = None):
    import onnxruntime as ort

    so = session_options(threads, spin)
    session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    session.plankton_options = {"intra_op_threads": so.intra_op_num_threads, "graph_optimization": "ORT_ENABLE_ALL",
                                "allow_spinning": so.get_session_config_entry("session.intra_op.allow_spinning") == "1",
                                "denormal_as_zero": so.get_session_config_entry("session.set_denormal_as_zero") == "1",
                                "providers": session.get_providers()}
    return session


def _metadata(session) -> dict:
    return dict(session.get_modelmeta().custom_metadata_map or {})


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        x = x.numpy()
    return np.ascontiguousarray(x, dtype=np.float32)  # no copy when already C-contiguous float32


class _OrtModule(StandIn):
    """A ``StandIn`` over an ONNX Runtime session."""

    engine = "the ONNX Runtime path"

    def __init__(self, session, path: str | Path | None = None):
        self.session, self.path = session, str(path) if path else None
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.metadata = _metadata(session)
        self.options = dict(getattr(session, "plankton_options", {}))

    def run(self, x) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: _to_numpy(x)})[0]

    def __call__(self, x) -> torch.Tensor:
        return torch.from_numpy(self.run(x))


class OrtDetectionModel(_OrtModule):
    """``DetectorNet`` (a fused Ultralytics DetectionModel's stand-in);
    ``stride`` comes from the graph's metadata."""

    def __init__(self, session, path=None):
        super().__init__(session, path)
        self.read_detector_metadata(self.metadata)


class OrtEmbeddingModel(_OrtModule):
    """``EmbedderNet`` (``EmbeddingNet``'s stand-in); a size-aware graph
    has a second input, the boxes' sizes."""

    def __init__(self, session, path=None):
        super().__init__(session, path)
        dim = session.get_outputs()[0].shape[-1]
        inputs = session.get_inputs()
        self.read_embedder_metadata(self.metadata, dim if isinstance(dim, int) else int(self.metadata["dim"]),
                                    int(inputs[1].shape[-1]) if len(inputs) > 1 else 0)
        self.sizes_name = inputs[1].name if len(inputs) > 1 else None

    def __call__(self, x, sizes=None) -> torch.Tensor:
        feed = {self.input_name: _to_numpy(x)}
        if self.sizes_name is not None:
            if sizes is None:
                raise ValueError("this embedder takes the boxes' sizes too")
            feed[self.sizes_name] = _to_numpy(sizes)
        return torch.from_numpy(self.session.run([self.output_name], feed)[0])


def load_detector(path: str | Path, threads: int | None = None) -> OrtDetectionModel:
    return OrtDetectionModel(make_session(path, threads), path)


def load_embedder(path: str | Path, threads: int | None = None) -> OrtEmbeddingModel:
    return OrtEmbeddingModel(make_session(path, threads), path)


# ---------------------------------------------------------------- export


class _DetectOnly(torch.nn.Module):
    """The Detect head's decoded output only (eval mode gives (y, preds))."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y


def _export(module: torch.nn.Module, example: tuple, path: Path, input_names: list[str], output_name: str,
            dynamic: dict, opset: int, metadata: dict) -> Path:
    import warnings

    import onnx

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shapes and the legacy exporter
            torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=[output_name], dynamic_axes=dynamic, do_constant_folding=True)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        for k, v in metadata.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def export_detector(model: torch.nn.Module, path: str | Path, shape: tuple[int, int] = (640, 640), opset: int = OPSET,
                    end2end: bool = False, names: list[str] | tuple[str, ...] | None = None) -> Path:
    """Export a DetectionModel (fused first, on a copy) with dynamic batch,
    height and width. ``shape`` (H, W) is only the tracing example."""
    from ultralytics.nn.modules import C2f, Detect

    model = copy.deepcopy(model).float().cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if end2end:
        model.end2end = True
    if hasattr(model, "fuse") and not (hasattr(model, "is_fused") and model.is_fused()):
        model = model.fuse(verbose=False)
    for m in model.modules():
        if isinstance(m, Detect):
            m.dynamic, m.export, m.format, m.shape = True, True, "onnx", None
        elif isinstance(m, C2f):
            m.forward = m.forward_split  # split, not chunk: a plainer graph
    stride = [float(s) for s in getattr(model, "stride", torch.tensor([8.0, 16.0, 32.0]))]
    if names is None:
        names = getattr(model, "names", None)
        names = list(names.values()) if isinstance(names, dict) else list(names or ["plankton"])
    meta = {"stride": json.dumps(stride), "names": json.dumps(list(names)), "end2end": "true" if end2end else "false",
            "producer": "plankton.runtime.onnx.export_detector"}
    example = torch.zeros(1, 3, *shape)
    out_axes = {0: "batch"} if end2end else {0: "batch", 2: "anchors"}  # end-to-end heads give B×max_det×6
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": out_axes}
    return _export(_DetectOnly(model), (example,), path, ["images"], "output0", dynamic, opset, meta)


def export_embedder(model: torch.nn.Module, path: str | Path, size: int, opset: int = OPSET) -> Path:
    """Export an EmbeddingNet for S×S crops (``size``) with a dynamic batch;
    a size-aware one gets a second input, ``sizes`` B×size_features."""
    model = copy.deepcopy(model).float().cpu().eval()
    meta = {"dim": str(int(model.dim)), "backbone": str(getattr(model, "backbone_name", "")), "input_size": str(int(size)),
            "producer": "plankton.runtime.onnx.export_embedder"}
    example, names = (torch.zeros(2, 3, size, size),), ["crops"]
    dynamic = {"crops": {0: "batch"}, "embeddings": {0: "batch"}}
    if getattr(model, "size_features", 0):
        example, names = example + (torch.zeros(2, model.size_features),), names + ["sizes"]
        dynamic["sizes"] = {0: "batch"}
    return _export(model, example, path, names, "embeddings", dynamic, opset, meta)


def check_parity(cascade, folder: str | Path, threads: int | None = None, seed: int = 0) -> dict:
    """Compare the ONNX files in ``folder`` with ``cascade``'s PyTorch
    modules on random inputs: detector raw output at two input sizes and
    two batch sizes, embedder cosine. Raises RuntimeError on a mismatch."""
    folder = Path(folder)
    g = torch.Generator().manual_seed(seed)
    det_ort, emb_ort = load_detector(folder / DETECTOR_ONNX, threads), load_embedder(folder / EMBEDDER_ONNX, threads)
    s = cascade.detector.stride
    out = {"detector_max_abs_diff": {}, "embedder_min_cosine": None}
    for b, h, w in ((1, 10 * s, 12 * s), (2, 6 * s, 8 * s)):
        x = torch.rand(b, 3, h, w, generator=g)
        with torch.inference_mode():
            ref = _DetectOnly(cascade.detector.model)(x).float()
        got = det_ort(x)
        if ref.shape != got.shape:
            raise RuntimeError(f"detector.onnx gives {tuple(got.shape)} for {tuple(x.shape)}, PyTorch {tuple(ref.shape)}")
        diff = float((ref - got).abs().max())
        scale = float(ref.abs().max())
        out["detector_max_abs_diff"][f"{b}x3x{h}x{w}"] = diff
        if diff > 1e-3 * max(scale, 1.0):
            raise RuntimeError(f"detector.onnx differs from PyTorch by up to {diff:.3g} (output scale {scale:.3g}) at {b}x3x{h}x{w}")
    size = cascade.identifier.cfg.crop.size
    args = (torch.randn(5, 3, size, size, generator=g),)
    if emb_ort.size_features:
        args += (torch.randn(5, emb_ort.size_features, generator=g),)
    with torch.inference_mode():
        ref = cascade.identifier.model(*args).float()
    cos = float(torch.nn.functional.cosine_similarity(ref, emb_ort(*args), dim=1).min())
    out["embedder_min_cosine"] = cos
    if cos < 0.9999:
        raise RuntimeError(f"embedder.onnx embeddings have cosine {cos:.6f} to PyTorch's (need ≥ 0.9999 on random input)")
    return out


def onnx_status(folder: str | Path, config: dict) -> str | None:
    """Why the ONNX files of an artifact cannot be used (None if they can):
    missing files, onnxruntime not importable, or files exported from
    other weights than the safetensors now in the folder."""
    folder = Path(folder)
    missing = [f for f in ONNX_FILES if not (folder / f).is_file()]
    if missing:
        return f"{folder}: no {' or '.join(missing)} (run: python -m training.export_onnx {folder})"
    if not available():
        return "onnxruntime is not installed (pip install onnxruntime)"
    section = config.get("onnx")
    files = config.get("files", {})
    if not isinstance(section, dict):
        return f"{folder}: config.json has no 'onnx' section (run: python -m training.export_onnx {folder})"
    for name in (DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS):
        made_from = section.get("source_sha256", {}).get(name)
        now = files.get(name, {}).get("sha256")
        if made_from is None or (now is not None and made_from != now):
            return f"{folder}: the ONNX files were exported from other weights than {name} (re-run: python -m training.export_onnx {folder})"
    return None


class OnnxRuntime:
    """``interface.Runtime`` for the fp32 ONNX files."""

    def status(self, folder: Path, config: dict, asked: str | None = None, device: str = "cpu") -> str | None:
        return onnx_status(folder, config) or cpu_only(device, _OrtModule.engine)

    def offered(self, folder: Path, config: dict, device: str) -> bool:
        # on a GPU, PyTorch is what "auto" should run: CPU-only files passed over are no news (as for INT8)
        return has_onnx(folder) and torch.device(device).type == "cpu"

    def name(self, config: dict) -> str:
        return "onnx"

    def load(self, folder: Path, config: dict, threads: int | None = None, streams: int = 1):
        try:
            return load_detector(folder / DETECTOR_ONNX, threads), load_embedder(folder / EMBEDDER_ONNX, threads)
        except Exception as e:  # onnxruntime's own error types
            raise ArtifactError(f"{folder}: ONNX Runtime cannot load the ONNX files ({one_line(e)})") from None

    def summary(self, folder: Path, config: dict) -> str | None:
        return None


RUNTIME = OnnxRuntime()


__all__ = ["DETECTOR_ONNX", "EMBEDDER_ONNX", "ONNX_FILES", "OPSET", "RUNTIME", "OnnxRuntime", "OrtDetectionModel", "OrtEmbeddingModel", "available",
           "available_cpus", "check_parity", "default_threads", "export_detector", "export_embedder",
           "has_onnx", "load_detector", "load_embedder", "make_session", "onnx_status", "session_options"]
