"""plankton: detect and identify plankton in brightfield microscope frames.

    import plankton
    cascade = plankton.load_artifact()            # the bundled model, or a folder
    frame = cascade.predict(plankton.read_image("frame.jpg"), "frame.jpg")

The layout: ``model`` (the networks and the one open-set decision),
``artifact`` (the model folder), ``runtime`` (ONNX, INT8), ``sample``
(sizes, counts, concentrations, exports), ``run`` (many frames), ``review``
(unknowns, model versions compared); ``hub`` pulls, ``cli`` is the command line.
"""
from plankton._version import __version__  # noqa: E402,F401  (one place, read by pyproject.toml too)

from plankton.results import UNKNOWN, Candidate, Detections, FrameResult, Identification, ObjectResult  # noqa: E402

# Loaded on first use, so that ``import plankton`` stays light (no torch until a model is needed).
_LAZY = {"load_artifact": "plankton.pipeline.load", "read_image": "plankton.images", "Cascade": "plankton.pipeline.cascade"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plankton' has no attribute {name!r}")


__all__ = ["UNKNOWN", "Candidate", "Detections", "FrameResult", "Identification", "ObjectResult", "__version__", *_LAZY]
