"""Issue 40: selective test-time augmentation in the identifier
(``Identifier.refine``): only crops whose two nearest species are close are
embedded again, in their 8 rotations and mirrors."""
from __future__ import annotations

import numpy as np
import torch

from plankton.model.crops import CropConfig, dihedral_views
from plankton.model.identifier import Identifier, IdentifierConfig
from plankton.model.prototypes import Prototypes


class Tiny(torch.nn.Module):
    """A fixed random projection of the pixels, unit rows: orientation-sensitive, as a CNN is."""

    dim = 8

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 16 * 16, self.dim, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return torch.nn.functional.normalize(self.proj(x.flatten(1)), dim=1)


def _identifier(margin: float, protos: Prototypes) -> Identifier:
    cfg = IdentifierConfig(crop=CropConfig(size=16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), tta_margin=margin)
    return Identifier(Tiny(), cfg, protos)


def test_only_doubtful_crops_take_the_mean_of_their_eight_views():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    sizes = np.zeros((6, 2), np.float32)
    plain = _identifier(0.0, None).embed_crops(crops)
    # species a sits on crop 0, b on crop 1; crops 2-5 fall wherever they fall
    protos = Prototypes.build(plain[:2], np.array([0, 1]), ["a", "b"], k=1, mode="mean")
    top2 = np.sort(protos.similarity(plain), axis=1)
    margin = top2[:, 1] - top2[:, 0]
    cut = float(np.median(margin))
    refined = _identifier(cut, protos).refine(crops, sizes, plain)
    doubtful = margin < cut
    assert doubtful.any() and (~doubtful).any()
    np.testing.assert_array_equal(refined[~doubtful], plain[~doubtful])
    views = _identifier(0.0, None).embed_crops(dihedral_views(crops)).reshape(8, 6, -1).mean(0)
    expected = views / np.linalg.norm(views, axis=1, keepdims=True)
    np.testing.assert_allclose(refined[doubtful], expected[doubtful], atol=1e-5)
    assert not np.allclose(refined[doubtful], plain[doubtful], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(refined, axis=1), 1, atol=1e-5)


def test_a_doubtful_crop_turned_over_gets_the_same_embedding():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    turned = np.ascontiguousarray(np.rot90(crop[:, :, ::-1], 1, axes=(1, 2)))
    ident = _identifier(2.0, Prototypes.build(np.eye(8, dtype=np.float32)[:2], np.array([0, 1]), ["a", "b"], k=1, mode="mean"))
    a = ident.refine(crop, np.zeros((1, 2)), ident.embed_crops(crop))
    b = ident.refine(turned, np.zeros((1, 2)), ident.embed_crops(turned))
    assert not np.allclose(ident.embed_crops(crop), ident.embed_crops(turned), atol=1e-3)  # the network alone tells them apart
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_off_by_default_and_without_prototypes():
    crops = np.random.default_rng(2).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    assert IdentifierConfig(crop=CropConfig(size=16), mean=(0, 0, 0), std=(1, 1, 1)).tta_margin == 0.0
    ident = _identifier(1.0, None)
    plain = ident.embed_crops(crops)
    np.testing.assert_array_equal(ident.refine(crops, np.zeros((3, 2)), plain), plain)
