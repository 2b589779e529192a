"""Which JPEG decoder among the project's dependencies is fastest on the
CPU, and what a reduced-size decode (for the gate's cheap pass) saves.
Issue 31, "decode faster where it is free".

    python benchmarks/decode.py FRAME.jpg [FRAME.jpg ...] [--rounds 5]

Every decoder runs on the same frames, interleaved round by round in one
run, so the ratios hold on a shared machine whose speed drifts. Prints
ms per frame, the ratio to ``plankton.images.read_image`` and whether the
pixels are identical to it (decoders may use other IDCT/upsampling).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def decoders() -> dict:
    """name → (bytes → H×W×3 uint8 RGB or h×w grey)."""
    import cv2
    import torch
    import torchvision.io as tio
    from PIL import Image

    from plankton.model.gate import small_grey
    from plankton.images import read_image

    def pil(b):
        with Image.open(io.BytesIO(b)) as im:
            return np.asarray(im.convert("RGB"))

    def pil_before(b):  # read_image before issue 31: exif_transpose and convert("RGB") each copied the frame
        from PIL import ImageOps

        with Image.open(io.BytesIO(b)) as im:
            im.load()
            return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))

    def pil_draft(scale):
        def f(b):
            with Image.open(io.BytesIO(b)) as im:
                im.draft("L", (im.width // scale, im.height // scale))  # libjpeg's DCT scaling: decodes less
                return np.asarray(im.convert("L"))
        return f

    def cv(b):
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def cv_reduced(flag):
        return lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), flag)

    def tv(b):
        return tio.decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)).permute(1, 2, 0).numpy()

    return {
        "read_image (PIL)": lambda b: read_image(b),
        "read_image before (two copies)": pil_before,
        "PIL plain": pil,
        "OpenCV imdecode": cv,
        "torchvision decode_jpeg": tv,
        "full decode + gate downscale (grey 1/4)": lambda b: small_grey(read_image(b), 4),
        "PIL draft grey 1/4": pil_draft(4),
        "PIL draft grey 1/8": pil_draft(8),
        "OpenCV REDUCED_GRAYSCALE_4": cv_reduced(cv2.IMREAD_REDUCED_GRAYSCALE_4),
        "OpenCV REDUCED_GRAYSCALE_8": cv_reduced(cv2.IMREAD_REDUCED_GRAYSCALE_8),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("frames", nargs="+")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    import cv2
    import torch
    from PIL import features

    torch.set_num_threads(1)  # decoding is single-threaded in all three; keep torch from spreading
    cv2.setNumThreads(1)
    blobs = [Path(f).read_bytes() for f in args.frames]
    dec = decoders()
    ref = [dec["read_image (PIL)"](b) for b in blobs]
    secs = dict.fromkeys(dec, 0.0)
    for _ in range(args.rounds):
        for name, f in dec.items():
            t0 = time.perf_counter()
            for b in blobs:
                f(b)
            secs[name] += time.perf_counter() - t0
    n = args.rounds * len(blobs)
    base = secs["read_image (PIL)"] / n
    print(f"PIL libjpeg-turbo: {features.check_feature('libjpeg_turbo')} ({features.version('jpg')}); OpenCV {cv2.__version__}; "
          f"frames: {len(blobs)} × {args.rounds} rounds")
    print("| decoder | ms/frame | speed vs read_image | pixels vs read_image |")
    print("|---|---|---|---|")
    for name, f in dec.items():
        ms = 1000 * secs[name] / n
        out = [f(b) for b in blobs]
        if out[0].shape == ref[0].shape:
            diff = max(int(np.abs(o.astype(np.int16) - r).max()) for o, r in zip(out, ref))
            same = "identical" if diff == 0 else f"max |diff| {diff}"
        else:
            same = f"{out[0].shape[1]}×{out[0].shape[0]} grey"
        print(f"| {name} | {ms:.1f} | {base * 1000 / ms:.2f}× | {same} |" if ms else f"| {name} | 0 | - | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
