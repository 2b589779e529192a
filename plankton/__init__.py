"""plankton: detect and identify plankton in brightfield microscope frames."""
__version__ = "0.1.0"

from .results import UNKNOWN, Candidate, Detections, FrameResult, Identification, ObjectResult  # noqa: E402

__all__ = ["UNKNOWN", "Candidate", "Detections", "FrameResult", "Identification", "ObjectResult", "__version__"]
