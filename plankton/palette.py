"""Species colours: Kelly's 20 colours of maximum contrast (without white,
black and grey, which stay for the frame, text and ``unknown``), given
so that the species the model confuses most get the most different
colours. A look-alike pair drawn in two reds cannot be told apart on the
frame, which is exactly where a person has to check the model.

Differences are CIEDE2000 (ΔE00) in CIELAB under D65."""
from __future__ import annotations

import hashlib

import numpy as np

from plankton.results import NOT_PLANKTON, UNKNOWN

GREY = (150, 150, 150)  # unknown, always
KELLY = [(0xF3, 0xC3, 0x00), (0x87, 0x56, 0x92), (0xF3, 0x84, 0x00), (0xA1, 0xCA, 0xF1), (0xBE, 0x00, 0x32), (0xC2, 0xB2, 0x80),
         (0x00, 0x88, 0x56), (0xE6, 0x8F, 0xAC), (0x00, 0x67, 0xA5), (0xF9, 0x93, 0x79), (0x60, 0x4E, 0x97), (0xF6, 0xA6, 0x00),
         (0xB3, 0x44, 0x6C), (0xDC, 0xD3, 0x00), (0x88, 0x2D, 0x17), (0x8D, 0xB6, 0x00), (0x65, 0x45, 0x22), (0xE2, 0x58, 0x22),
         (0x2B, 0x3D, 0x26), (0x23, 0xA8, 0xA8)]  # the last: a teal for Kelly's grey, which is too close to unknown's
NEIGHBOURS = 3  # closest pairs per species that the colouring keeps apart (ranked by prototype cosine)


def lab(rgb) -> np.ndarray:
    """sRGB (…×3, 0-255) → CIELAB (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def delta_e(rgb1, rgb2) -> np.ndarray:
    """CIEDE2000 colour difference between sRGB colours (broadcasting)."""
    L1, a1, b1 = np.moveaxis(lab(rgb1), -1, 0)
    L2, a2, b2 = np.moveaxis(lab(rgb2), -1, 0)
    C7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    G = 0.5 * (1 - np.sqrt(C7 / (C7 + 25.0 ** 7)))
    a1, a2 = a1 * (1 + G), a2 * (1 + G)
    C1, C2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    dL, dC = L2 - L1, C2 - C1
    dh = h2 - h1
    dh = np.where(C1 * C2 == 0, 0, np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)))
    dH = 2 * np.sqrt(C1 * C2) * np.sin(np.radians(dh / 2))
    Lm, Cm = (L1 + L2) / 2, (C1 + C2) / 2
    hs = h1 + h2
    hm = np.where(C1 * C2 == 0, hs, np.where(np.abs(h1 - h2) <= 180, hs / 2, np.where(hs < 360, (hs + 360) / 2, (hs - 360) / 2)))
    T = 1 - 0.17 * np.cos(np.radians(hm - 30)) + 0.24 * np.cos(np.radians(2 * hm)) + 0.32 * np.cos(np.radians(3 * hm + 6)) - 0.20 * np.cos(np.radians(4 * hm - 63))
    SL = 1 + 0.015 * (Lm - 50) ** 2 / np.sqrt(20 + (Lm - 50) ** 2)
    SC, SH = 1 + 0.045 * Cm, 1 + 0.015 * Cm * T
    Cm7 = Cm ** 7
    RT = -2 * np.sqrt(Cm7 / (Cm7 + 25.0 ** 7)) * np.sin(np.radians(60 * np.exp(-(((hm - 275) / 25) ** 2))))
    return np.sqrt((dL / SL) ** 2 + (dC / SC) ** 2 + (dH / SH) ** 2 + RT * (dC / SC) * (dH / SH))


SEPARATE = 30.0  # ΔE00 past which look-alikes count as told apart: an unused colour is then preferred


def assign(names: list[str], pairs: list[tuple[str, str]], palette: list[tuple[int, int, int]] = KELLY) -> dict[str, tuple[int, int, int]]:
    """{species: colour}. ``pairs``: look-alike pairs, the most confused
    first. Greedy: species in order of their first pair, each taking the
    unused colour farthest (max of the min ΔE00) from the colours of its
    look-alikes already coloured, then from every colour given so far
    (grey included). With more species than colours, colours repeat, still
    kept away from look-alikes."""
    pal = [tuple(int(v) for v in c) for c in palette]
    D = delta_e(np.array(pal)[:, None], np.array(pal)[None])
    to_grey = delta_e(np.array(pal), np.array(GREY))
    order = list(dict.fromkeys([n for p in pairs for n in p if n in names] + list(names)))
    near: dict[str, list[str]] = {n: [] for n in order}
    for a, b in pairs:
        if a in near and b in near:
            near[a].append(b)
            near[b].append(a)
    given: dict[str, int] = {}
    for n in order:
        used = set(given.values())

        def score(i):
            # far enough from its look-alikes first (a reused colour beats an unused one that sits next to a look-alike),
            # then an unused colour, then far from every colour given
            look = [D[i, given[m]] for m in near[n] if m in given]
            every = [D[i, j] for j in given.values()] + [to_grey[i]]
            return (min(min(look, default=np.inf), SEPARATE), i not in used, min(every), -i)

        given[n] = max(range(len(pal)), key=score)
    return {n: pal[i] for n, i in given.items()}


def look_alikes(prototypes, per_species: int = NEIGHBOURS) -> list[tuple[str, str]]:
    """The model's closest species pairs (``gallery.closest_pairs``), most
    alike first: enough of them that each species has its ``per_species``
    nearest among them."""
    from plankton.artifact.gallery import closest_pairs

    n = sum(1 for x in prototypes.names if x != NOT_PLANKTON)
    return [(r["a"], r["b"]) for r in closest_pairs(prototypes, n * (n - 1) // 2)][: max(1, per_species * n)]


_made: dict[tuple, dict] = {}


def for_prototypes(prototypes) -> dict[str, tuple[int, int, int]]:
    """{species: colour} for a model's prototypes (remembered per prototypes'
    content, so a per-frame caller pays once)."""
    key = (tuple(prototypes.names), hashlib.sha1(np.ascontiguousarray(prototypes.means).tobytes()).hexdigest())
    if key not in _made:
        names = [n for n in prototypes.names if n != NOT_PLANKTON]
        _made[key] = assign(names, look_alikes(prototypes))
    return dict(_made[key])


_uploads: dict[tuple, dict] = {}


def for_upload(present: list[str], pairs: list[tuple[str, str]], base: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
    """``base`` with the species ``present`` in an upload (most frequent
    first) recoloured among themselves: with 34 species and 20 colours the
    model-wide mapping repeats colours, but an upload rarely holds more
    than 20 species, and those on screen are the ones to tell apart."""
    key = (tuple(present), tuple(pairs[:5]), len(pairs))
    if key not in _uploads:
        kept = [(a, b) for a, b in pairs if a in present and b in present]
        _uploads[key] = assign(list(present), kept)  # look-alike pairs first, then the rest by frequency
        if len(_uploads) > 256:
            _uploads.pop(next(iter(_uploads)))
    return dict(base) | _uploads[key]


_current: dict[str, tuple[int, int, int]] = {}


def use(colours: dict[str, tuple[int, int, int]]) -> None:
    """Make ``colours`` the mapping every frame, legend and table of this
    process draws with (one model per process: the app, the CLI)."""
    _current.clear()
    _current.update(colours)


def colour(name: str) -> tuple[int, int, int]:
    """A species' colour: from the mapping in use, else a stable pick from
    the palette (species enrolled later); ``unknown`` is always grey."""
    if name == UNKNOWN:
        return GREY
    if name in _current:
        return _current[name]
    return KELLY[int(hashlib.md5(name.encode()).hexdigest()[:8], 16) % len(KELLY)]
