"""Crops for people to look at, not for the network: the object's own
shape kept (a filament squeezed into a square and shrunk shows nothing),
padded, and with a scale bar in µm when the scale is known. The
embedder's crops (``plankton.model.crops``) are a different thing and do not
change with these."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

NICE_UM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def fit(crop: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """An h×w×3 crop resized so its longer side is ``long_side`` (aspect
    kept; the shorter side at least 1 pixel), and the scale used."""
    h, w = crop.shape[:2]
    s = long_side / max(h, w, 1)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(crop), size, interpolation=interp), s


def letterbox(crop: np.ndarray, side: int, fill=(255, 255, 255)) -> np.ndarray:
    """The crop, aspect kept, centred on a side×side canvas of ``fill``:
    for stores that need one shape (the gallery's exemplars)."""
    small, _ = fit(crop, side)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = fill
    h, w = small.shape[:2]
    y, x = (side - h) // 2, (side - w) // 2
    out[y : y + h, x : x + w] = small
    return out


def _font(size: int):
    """A font with "µ" (DejaVu, where installed), and the unit to write with it:
    Pillow's built-in font has no µ and would draw a box."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), "µm"
    except OSError:
        return ImageFont.load_default(size=size), "um"


def scale_bar(image: np.ndarray, um_per_px: float) -> np.ndarray:
    """A copy of ``image`` with a bar of a round length in µm (at most a
    third of its width) in the lower left; ``um_per_px``: µm per pixel of
    ``image`` itself."""
    h, w = image.shape[:2]
    if not um_per_px or um_per_px <= 0 or w < 24 or h < 12:
        return image
    fitting = [u for u in NICE_UM if u / um_per_px <= w / 3]
    if not fitting:
        return image
    um = fitting[-1]
    length = max(2, round(um / um_per_px))
    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    font, unit = _font(9)
    x0, y0 = 3, h - 4
    label = f"{um} {unit}"
    box = draw.textbbox((x0, y0 - 14), label, font=font)
    # a dark halo under a white bar and text: readable on bright and dark fields alike
    draw.rectangle((x0 - 2, min(box[1], y0 - 3) - 1, max(x0 + length, box[2]) + 2, y0 + 2), fill=(0, 0, 0))
    draw.rectangle((x0, y0 - 2, x0 + length, y0), fill=(255, 255, 255))
    draw.text((x0, y0 - 14), label, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def contrast(image: np.ndarray, max_gain: float = 3.0) -> np.ndarray:
    """One linear map for all three channels (so hues stay), taking the 1st to
    99th percentile of brightness to the full range, at most ``max_gain``
    times steeper (a flat crop must not turn into amplified noise)."""
    grey = image.mean(-1)
    lo, hi = np.percentile(grey, [1, 99])
    gain = min(max_gain, 255.0 / max(hi - lo, 1.0))
    centre = (lo + hi) / 2
    return np.clip((image.astype(np.float32) - centre) * gain + 127.5, 0, 255).astype(np.uint8)


def display_crop(crop: np.ndarray, long_side: int, um_per_px: float | None = None, stretch: bool = True) -> np.ndarray:
    """A native-resolution crop (``plankton.sample.ecotaxa.object_crop``: the box
    with padding) for display: longer side ``long_side``, aspect kept, and a
    scale bar when ``um_per_px`` (µm per pixel of the frame) is known.
    ``stretch``: spread its brightness over the full range (1% clipped each
    end, hues kept), because a pale filament on a brightfield is a few grey
    levels off its background and invisible in a small picture."""
    small, s = fit(crop, long_side)
    if stretch:
        small = contrast(small)
    return scale_bar(small, um_per_px / s) if um_per_px else small
