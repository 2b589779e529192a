"""Where the tests find the repository and its committed example frames
(a module of its own: tests in sub-folders cannot name the root conftest)."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "plankton_app" / "examples"  # the app's example frames, with their ground truth
FRAMES_COCO = EXAMPLES / "frames.coco.json"
