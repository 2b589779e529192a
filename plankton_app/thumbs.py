"""Display crops of the upload's objects, made on first look and cached
with the frame's analysis: the object's own shape (a filament stays a
filament), padded, with a scale bar when the sample's scale is known.
Cut from the native-resolution crops the exports keep, so no object is
cropped again; the network's crops are not these."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from plankton.thumbs import display_crop

from .session import Computed, Session

THUMB_SIDE = 120  # longer side, pixels: a long thin object keeps a visible width


def data_uri(crop: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb(computed: Computed, index: int, um_per_px: float | None = None) -> tuple[str, int, int]:
    """(JPEG data URI, width, height) of detection ``index`` of a frame."""
    key = (index, um_per_px or None)
    hit = computed.thumbs.get(key)
    if hit is None:
        crop = computed.crops[index] if index < len(computed.crops) else np.full((8, 8, 3), 200, np.uint8)
        small = display_crop(crop, THUMB_SIDE, um_per_px)
        hit = computed.thumbs[key] = (data_uri(small), int(small.shape[1]), int(small.shape[0]))
    return hit


def img_html(session: Session, object_id: int, max_side: int = 96) -> str:
    """An <img> of object ``object_id`` at most ``max_side`` pixels on its longer side."""
    fi, di = session.locate(object_id)
    uri, w, h = thumb(session.frames[fi].computed, di, session.sample.um_per_px)
    s = min(1.0, max_side / max(w, h))
    return f'<img src="{uri}" alt="object {object_id + 1}" width="{max(1, round(w * s))}" height="{max(1, round(h * s))}">'
