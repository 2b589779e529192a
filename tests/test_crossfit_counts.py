"""Issue 41: the count evidence's naming cross-fitted (each frame named by
the fold embedder that never trained on it), on the committed frames with
random-weight fold embedders laid out as training.train_embedder writes them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repo_paths import FRAMES_COCO


def _fold_embedder(folder, seed: int):
    """embedder.safetensors and embedder.json, the files train_embedder leaves."""
    from safetensors.torch import save_file

    from plankton.model.crops import CropConfig
    from plankton.model.embedder import EmbeddingNet

    torch.manual_seed(seed)
    net = EmbeddingNet("efficientnet_lite0", 512).eval()
    folder.mkdir(parents=True)
    save_file({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, str(folder / "embedder.safetensors"))
    (folder / "embedder.json").write_text(json.dumps({"backbone": "efficientnet_lite0", "dim": 512, "size_features": 0,
                                                      "crop": CropConfig(size=64).to_dict(), "names": []}))


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    ids = sorted(im["id"] for im in json.loads(FRAMES_COCO.read_text())["images"])
    (root / "folds.json").write_text(json.dumps({"frames": [ids[:1], ids[1:]]}))
    for k in range(2):
        _fold_embedder(root / "runs" / "r" / f"fold{k}", seed=10 + k)
    return root, ids


def _read(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_each_frame_is_named_by_the_fold_that_held_it_out(tmp_path, tiny_artifact, folds):
    from plankton.coco import load_coco
    from plankton.images import read_image
    from plankton.model.prototypes import Prototypes
    from training import count_evidence
    from training.count_crossfit import FoldNamer, load_fold_embedder

    root, ids = folds
    common = ["--model", str(tiny_artifact), "--coco", str(FRAMES_COCO), "--frames", "all", "--runtime", "torch"]
    count_evidence.main(common + ["--out", str(tmp_path / "own.safetensors")])
    count_evidence.main(common + ["--out", str(tmp_path / "oof.safetensors"), "--fold-models", str(root / "runs" / "r"),
                                  "--folds-json", str(root / "folds.json")])
    own, oof = _read(tmp_path / "own.safetensors"), _read(tmp_path / "oof.safetensors")
    # the detector part is the model's, box for box
    np.testing.assert_array_equal(own["det_xyxy"], oof["det_xyxy"])
    np.testing.assert_array_equal(own["det_score"], oof["det_score"])
    assert not np.allclose(own["gt_similarity"], oof["gt_similarity"], atol=1e-3)

    # frame ids[0] is fold 0's: its boxes, embedded by fold 0, against prototypes from fold 1's frames (fold 0's training folds)
    coco = load_coco(FRAMES_COCO, strict=False)
    from plankton.pipeline.load import load_artifact

    cascade = load_artifact(tiny_artifact)
    names = cascade.class_names
    cat = {c.id: c.name for c in coco.categories.values()}
    ident, _ = load_fold_embedder(root / "runs" / "r" / "fold0")
    train = [b for i in ids[1:] for b in coco.boxes_of(i) if cat[b.category_id] in names]
    emb = np.concatenate([ident.embed_boxes(read_image(coco.path_of(i)), np.array([b.xyxy for b in coco.boxes_of(i) if cat[b.category_id] in names],
                                                                                      np.float32)) for i in ids[1:]])
    ident.prototypes = Prototypes.build(emb, np.array([names.index(cat[b.category_id]) for b in train]), names,
                                        mode=cascade.identifier.prototypes.mode, keep_support=False)
    namer = FoldNamer(ident, names)
    first = oof["gt_frame"] == 0
    expect = namer.similarity(namer.embed_boxes(read_image(coco.path_of(ids[0])), coco.xyxy_of(ids[0])))
    np.testing.assert_allclose(oof["gt_similarity"][first], expect, atol=1e-4)
    # and not what fold 1 (which trained on that frame) would say
    other, _ = load_fold_embedder(root / "runs" / "r" / "fold1")
    other.prototypes = ident.prototypes
    wrong = FoldNamer(other, names).similarity(other.embed_boxes(read_image(coco.path_of(ids[0])), coco.xyxy_of(ids[0])))
    assert not np.allclose(oof["gt_similarity"][first], wrong, atol=1e-3)


def test_a_frame_in_no_fold_is_refused_by_name(tmp_path, tiny_artifact, folds):
    from training import count_evidence

    root, ids = folds
    (tmp_path / "short.json").write_text(json.dumps({"frames": [ids[:1], ids[1:2]]}))
    with pytest.raises(SystemExit, match=rf"frame\(s\) {ids[2]} are in no fold"):
        count_evidence.main(["--model", str(tiny_artifact), "--coco", str(FRAMES_COCO), "--frames", "all", "--runtime", "torch",
                             "--out", str(tmp_path / "x.safetensors"), "--fold-models", str(root / "runs" / "r"), "--folds-json", str(tmp_path / "short.json")])
    (tmp_path / "bad.json").write_text(json.dumps({"folds": []}))
    with pytest.raises(SystemExit, match="not a folds file"):
        count_evidence.main(["--model", str(tiny_artifact), "--coco", str(FRAMES_COCO), "--frames", "all", "--runtime", "torch",
                             "--out", str(tmp_path / "x.safetensors"), "--fold-models", str(root / "runs" / "r"), "--folds-json", str(tmp_path / "bad.json")])
