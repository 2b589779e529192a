"""Import Ultralytics safely for a library. Before import: no run-time pip
installs and no network (it would otherwise try both). After import: undo
its patch of ``PIL.Image.open``, which tries to pip-install a HEIF plugin
whenever Pillow cannot identify a file — exactly what bad uploads are."""
import os

os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_VERBOSE", "false")

import ultralytics  # noqa: E402
from PIL import Image  # noqa: E402
from ultralytics.utils import patches  # noqa: E402

Image.open = getattr(patches, "_image_open", Image.open)
__version__ = ultralytics.__version__
