"""The two quantization routes of ``training.quantize`` (see its doc):
OpenVINO IR by NNCF, and QDQ ONNX by ONNX Runtime's quantizer, with what of
each network stays fp32."""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from plankton.runtime.onnx import DETECTOR_ONNX, EMBEDDER_ONNX
from plankton.runtime.quantized import ONNXRUNTIME, OPENVINO, ROUTE_FILES

OVERFLOW_FIXES = ("enable", "first_layer")  # NNCF's OverflowFix: 7-bit weights in every layer, or in the first ones only


def head_decode_nodes(names: list[str], keep_fp32: str = "decode") -> list[str]:
    """Node names of the detection head to keep in fp32. Ultralytics names
    nodes after their module, ``/model/model.N/...``, and the head is the
    last module. "decode": all of the head but its convolution branches
    (cv2/cv3, one2one_cv2/3); "head": all of it; "none": nothing."""
    if keep_fp32 == "none":
        return []
    found = [int(m.group(1)) for n in names if (m := re.match(r".*?/model\.(\d+)/", n))]
    if not found:
        return []
    scope = next(m.group(0) for n in names if (m := re.match(r".*?/model\.(\d+)/", n)) and int(m.group(1)) == max(found))
    branch = re.compile(r"(one2one_)?cv\d")
    return [n for n in names if n.startswith(scope) and (keep_fp32 == "head" or not branch.match(n[len(scope):].split("/")[0]))]


def fp32_nodes(names: list[str], kind: str, keep_fp32: str = "decode") -> list[str]:
    """What stays fp32: the detector's head decoding (``head_decode_nodes``);
    the embedder's final L2 normalisation (the top-level nodes, outside the
    backbone and neck modules), so that embeddings stay unit vectors."""
    if kind == "detector":
        return head_decode_nodes(names, keep_fp32)
    return [n for n in names if n.startswith("/") and n.count("/") == 1]


def _onnx_metadata(path: Path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def quantize_openvino(src: Path, dst: Path, data, exclude_rule: str, subset: int, overflow_fix: str = "enable") -> dict:
    """fp32 ONNX → OpenVINO IR quantized by NNCF, the plankton metadata in
    its rt_info. ``overflow_fix`` "enable": every convolution's and matmul's
    weights in 7 bits, so that CPUs without VNNI, which add pairs of u8×s8
    products in 16 bits (VPMADDUBSW), cannot saturate (2×255×64 < 2^15);
    "first_layer", NNCF's default, does that for the first layers only."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # not one line per node kept in fp32
    model = ov.convert_model(str(src))
    for k, v in _onnx_metadata(src).items():
        model.set_rt_info(v, ["plankton", k])
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    exclude = fp32_nodes(names, "detector" if "detector" in src.name else "embedder", exclude_rule)
    if "embedder" in src.name:  # OpenVINO names an output's node after the output ("embeddings"), not "/Div"
        exclude += [r.input_value(0).get_node().get_friendly_name() for r in model.get_results()]
    ignored = nncf.IgnoredScope(names=exclude, validate=False) if exclude else None
    fix = {"enable": nncf.OverflowFix.ENABLE, "first_layer": nncf.OverflowFix.FIRST_LAYER}[overflow_fix]
    q = nncf.quantize(model, nncf.Dataset(data), preset=nncf.QuantizationPreset.MIXED, subset_size=subset, ignored_scope=ignored,
                      advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix))
    ov.save_model(q, str(dst), compress_to_fp16=False)
    return {"kept_fp32_nodes": len(exclude), "nncf": nncf.__version__, "openvino": ov.__version__, "preset": "mixed", "overflow_fix": overflow_fix}


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a re-iterable source, with
    the ``set_range`` that ``CalibStridedMinMax`` needs: ranges are then
    computed frame by frame and merged, instead of holding every
    intermediate tensor of every frame."""

    def __init__(self, source):
        self.source = source
        self.n = sum(1 for _ in source())
        self.set_range(0, self.n)

    def __len__(self):
        return self.n

    def set_range(self, start_index: int, end_index: int):
        import itertools

        self.it = itertools.islice(self.source(), start_index, end_index)

    def get_next(self):
        return next(self.it, None)


def quantize_onnxruntime(src: Path, dst: Path, source, exclude_rule: str) -> dict:
    """fp32 ONNX → QDQ ONNX by ``quantize_static`` (see the module doc)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="plankton-ort-q.") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # dynamic H, W defeat symbolic inference
        names = [n.name for n in onnx.load(str(pre)).graph.node]
        exclude = fp32_nodes(names, "detector" if "detector" in src.name else "embedder", exclude_rule)
        # Conv and MatMul only: Q/DQ pairs around SiLU's Sigmoid and Mul cost more than they save (measured on AVX2).
        quantize_static(str(pre), str(dst), _Reader(source), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        op_types_to_quantize=["Conv", "MatMul"], extra_options={"CalibStridedMinMax": 1})
    model = onnx.load(str(dst))
    have = {p.key for p in model.metadata_props}
    for k, v in _onnx_metadata(src).items():
        if k not in have:
            model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return {"kept_fp32_nodes": len(exclude), "onnxruntime": onnxruntime.__version__, "format": "QDQ", "per_channel": True, "reduce_range": True,
            "op_types": ["Conv", "MatMul"]}


def build_route(route: str, folder: Path, out: Path, calib, keep_fp32: str, overflow_fix: str = "enable") -> dict:
    """Both networks of ``route`` into ``out`` (``calib``: a
    ``training.quantize.Calibration``); returns its settings."""
    det_dst, emb_dst = (out / f for f in ROUTE_FILES[route])
    t = time.perf_counter()
    if route == OPENVINO:
        det = quantize_openvino(folder / DETECTOR_ONNX, det_dst, list_source(calib.detector), keep_fp32, len(calib.ids), overflow_fix)
        emb = quantize_openvino(folder / EMBEDDER_ONNX, emb_dst, list(calib.embedder()), keep_fp32, 10**6, overflow_fix)
    else:
        det = quantize_onnxruntime(folder / DETECTOR_ONNX, det_dst, calib.detector, keep_fp32)
        emb = quantize_onnxruntime(folder / EMBEDDER_ONNX, emb_dst, calib.embedder, keep_fp32)
    return {"detector": det, "embedder": emb, "keep_fp32": keep_fp32, "build_s": round(time.perf_counter() - t, 1),
            "weights_7bit": route == ONNXRUNTIME or overflow_fix == "enable"}  # ONNX Runtime's reduce_range is the same 7 bits


class list_source:
    """A re-iterable, sized view of a generator function, for nncf.Dataset."""

    def __init__(self, fn):
        self.fn = fn

    def __iter__(self):
        return iter(self.fn())


__all__ = ["OVERFLOW_FIXES", "build_route", "fp32_nodes", "head_decode_nodes", "list_source", "quantize_onnxruntime", "quantize_openvino"]
