"""plankton.model.identifier and plankton.pipeline.cascade on the committed frame with the
random-weight model: batching, thresholds applied after the models, results."""
import dataclasses

import numpy as np
import pytest

from plankton.pipeline.cascade import Cascade, FrameAnalysis
from plankton.model.identifier import Identifier, IdentifierConfig, to_tensor
from plankton.results import UNKNOWN, Detections, FrameResult, ObjectResult


@pytest.fixture(scope="module")
def analysis(tiny_cascade, frame):
    image, _ = frame
    return tiny_cascade.analyse(image, "frame.jpg")


@pytest.fixture(scope="module")
def gt_crops(tiny_cascade, frame):
    image, gt = frame
    return tiny_cascade.identifier.crops(image, gt)


@pytest.fixture(scope="module")
def fast(tiny_cascade):
    """The same models with a detector floor of 0.01: the random detector scores most
    boxes ~0.003 and a few ~0.012, so predictions at >= 0.01 embed few crops (CPU time)."""
    from plankton.pipeline.cascade import Cascade

    return Cascade(tiny_cascade.detector, tiny_cascade.identifier, det_floor=0.01)


def test_crops_follow_the_identifier_config(tiny_cascade, gt_crops, frame):
    S = tiny_cascade.identifier.cfg.crop.size
    assert gt_crops.shape == (len(frame[1]), S, S, 3) and gt_crops.dtype == np.uint8
    assert len(gt_crops) >= 8


def test_to_tensor_normalises():
    crops = np.zeros((2, 4, 4, 3), np.uint8)
    crops[1] = 255
    x = to_tensor(crops, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 4, 4)
    assert float(x[0].max()) == -1.0 and float(x[1].min()) == 1.0


def test_batched_embedding_equals_one_by_one(tiny_cascade, gt_crops):
    ident, gt_crops = tiny_cascade.identifier, gt_crops[:8]
    batched = ident.embed_crops(gt_crops)
    assert batched.shape == (len(gt_crops), ident.model.dim) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)
    single = np.concatenate([ident.embed_crops(c[None]) for c in gt_crops])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    # A batch size that splits the crops unevenly gives the same embeddings.
    cfg = dataclasses.replace(ident.cfg, batch_size=3)
    small_batches = Identifier(ident.model, cfg).embed_crops(gt_crops)  # no prototypes needed to embed
    np.testing.assert_allclose(batched, small_batches, atol=1e-4)
    # Embeddings depend on the crop (the model is not constant).
    assert np.abs(batched[0] - batched[1]).max() > 1e-3


def test_embed_boxes_of_no_boxes(tiny_cascade, frame):
    out = tiny_cascade.identifier.embed_boxes(frame[0], np.zeros((0, 4), np.float32))
    assert out.shape == (0, 512) and out.dtype == np.float32


def test_embed_boxes_is_crops_then_embed(tiny_cascade, frame, gt_crops):
    ident = tiny_cascade.identifier
    np.testing.assert_allclose(ident.embed_boxes(frame[0], frame[1][:3]), ident.embed_crops(gt_crops[:3]), atol=1e-5)


def test_identifier_refuses_prototypes_of_another_dim(tiny_cascade):
    from plankton.model.prototypes import Prototypes

    p = Prototypes(["a"], np.eye(1, 8, dtype=np.float32), np.eye(1, 8, dtype=np.float32)[None])
    with pytest.raises(ValueError, match="8-d"):
        Identifier(tiny_cascade.identifier.model, tiny_cascade.identifier.cfg, p)


def test_enrol_from_a_box(tiny_cascade, frame):
    image, gt = frame
    shared = tiny_cascade.identifier
    emb = shared.embed_boxes(image, gt[:1])
    protos = shared.prototypes.enrol("new species", emb)
    assert protos.names[-1] == "new species" and shared.prototypes.names[-1] != "new species"  # the shared model is unchanged
    result = protos.match(emb, threshold=0.99)[0]
    assert result.species == "new species" and result.similarity == pytest.approx(1.0, abs=1e-4)


def test_identifier_without_prototypes_embeds_but_does_not_identify(tiny_cascade, gt_crops):
    shared = tiny_cascade.identifier
    plain = Identifier(shared.model, shared.cfg)
    np.testing.assert_allclose(plain.embed_crops(gt_crops[:3]), shared.embed_crops(gt_crops[:3]), atol=1e-6)
    with pytest.raises(ValueError, match="no prototypes"):
        plain.similarity(plain.embed_crops(gt_crops[:1]))
    with pytest.raises(ValueError, match="needs an identifier with prototypes"):
        Cascade(tiny_cascade.detector, plain)


def test_identifier_config_round_trip(tiny_cascade):
    cfg = dataclasses.replace(tiny_cascade.identifier.cfg, class_thresholds={"Chlorella sp": 0.71})
    assert IdentifierConfig.from_dict(cfg.to_dict(), "efficientnet_lite0") == cfg


def test_identifier_config_takes_normalisation_from_the_registry():
    """The backbone registry is the only source of mean and std: a config
    without them gets the registry's, one that disagrees is refused."""
    from plankton.model.crops import CropConfig
    from plankton.model.embedder import BACKBONES

    cfg = IdentifierConfig.for_backbone("resnet18", CropConfig(size=32))
    assert (cfg.mean, cfg.std) == (BACKBONES["resnet18"].mean, BACKBONES["resnet18"].std) != ((0.5,) * 3, (0.5,) * 3)
    assert IdentifierConfig.from_dict({"crop": {"size": 32}}, "resnet18") == cfg
    with pytest.raises(ValueError, match="mean .* differs from what backbone 'resnet18' expects"):
        IdentifierConfig.from_dict({"crop": {"size": 32}, "mean": [0.5, 0.5, 0.5]}, "resnet18")


def test_analysis_shapes(tiny_cascade, analysis):
    assert isinstance(analysis, FrameAnalysis)
    n, C = len(analysis.detections), len(tiny_cascade.identifier.prototypes.names)
    assert n > 0
    assert (analysis.width, analysis.height, analysis.image) == (1920, 1080, "frame.jpg")
    assert analysis.embeddings.shape == (n, 512) and analysis.similarity.shape == (n, C)
    assert analysis.names == tiny_cascade.identifier.prototypes.names
    assert analysis.det_floor == tiny_cascade.det_floor
    np.testing.assert_allclose(analysis.similarity, tiny_cascade.identifier.prototypes.similarity(analysis.embeddings), atol=1e-5)


def test_resolve_det_conf_is_monotonic(analysis):
    scores = np.unique(analysis.detections.score)
    thresholds = sorted({analysis.det_floor, *scores.tolist(), float(scores.max()) + 1e-3})
    previous = None
    for t in thresholds:
        fr = analysis.resolve(t, 0.0)
        boxes = {o.xyxy for o in fr.objects}
        assert all(o.det_score >= t for o in fr.objects)
        assert len(fr.objects) == int((analysis.detections.score >= t).sum())
        if previous is not None:
            assert boxes <= previous, "a higher det_conf keeps a subset of the objects"
        previous = boxes
    assert previous == set()  # above every score nothing is left


def test_resolve_cls_conf_is_monotonic(analysis):
    best = analysis.similarity.max(1)
    thresholds = [-1.0, *np.quantile(best, [0.1, 0.5, 0.9]).tolist(), float(best.max()), float(best.max()) + 1e-3]
    base = analysis.resolve(analysis.det_floor, -1.0)
    assert not any(o.is_unknown for o in base.objects)
    unknowns = []
    for t in thresholds:
        fr = analysis.resolve(analysis.det_floor, t)
        assert len(fr.objects) == len(base.objects)  # cls_conf never drops an object
        for o, b in zip(fr.objects, base.objects):
            assert o.xyxy == b.xyxy and o.similarity == pytest.approx(b.similarity)
            assert o.species == (b.species if b.similarity >= t else UNKNOWN)
        unknowns.append(sum(o.is_unknown for o in fr.objects))
    assert unknowns == sorted(unknowns) and unknowns[0] == 0 and unknowns[-1] == len(base.objects)


def test_resolve_below_the_floor_is_refused(analysis):
    with pytest.raises(ValueError, match="floor"):
        analysis.resolve(analysis.det_floor / 2, 0.5)


def test_frame_result_counts(analysis):
    sims = analysis.similarity.max(1)
    fr = analysis.resolve(analysis.det_floor, float(np.median(sims)))
    counts = fr.counts
    assert sum(counts.values()) == len(fr.objects)
    assert counts.get(UNKNOWN, 0) == sum(o.is_unknown for o in fr.objects)
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    for species, n in counts.items():
        assert n == sum(o.species == species for o in fr.objects)


def test_counts_known_values():
    objs = [ObjectResult((0, 0, 1, 1), 0.9, s, 0.5) for s in ["b", "a", "b", UNKNOWN, "b", "a"]]
    assert FrameResult("x", 10, 10, objs).counts == {"b": 3, "a": 2, UNKNOWN: 1}
    assert FrameResult("x", 10, 10).counts == {}


def test_topk_in_results(analysis):
    fr = analysis.resolve(analysis.det_floor, 0.0, topk=3)
    assert len(fr.objects) == len(analysis.detections) >= 10  # at the floor every detection is an object, in order
    for o, row in zip(fr.objects[:10], analysis.similarity):
        assert len(o.topk) == 3 and o.topk[0].species == o.species
        # the three most similar classes of this object's own similarity row, best first
        best3 = np.argsort(-row)[:3]
        assert [c.species for c in o.topk] == [analysis.names[j] for j in best3]
        np.testing.assert_allclose([c.similarity for c in o.topk], row[best3], atol=1e-6)


def test_predict_equals_analyse_then_resolve(fast, frame, analysis):
    det_conf = 0.01
    fr = fast.predict(frame[0], "frame.jpg", det_conf=det_conf, cls_conf=0.1)
    expected = analysis.resolve(det_conf, 0.1, fast.identifier.cfg.topk)
    assert len(expected.objects) > 0
    assert [(o.species, o.det_score) for o in fr.objects] == [(o.species, o.det_score) for o in expected.objects]
    np.testing.assert_allclose([o.xyxy for o in fr.objects], [o.xyxy for o in expected.objects], atol=1e-3)


def test_predict_on_a_plain_grey_frame(fast):
    grey = np.full((1080, 1920, 3), 128, np.uint8)
    fr = fast.predict(grey, "grey.png", det_conf=0.01)
    assert isinstance(fr, FrameResult) and (fr.width, fr.height, fr.image) == (1920, 1080, "grey.png")
    assert len(fr.objects) > 0, "the random detector finds boxes above 0.01 even on grey: the checks below must run"
    for o in fr.objects:
        assert isinstance(o, ObjectResult) and isinstance(o.species, str) and isinstance(o.similarity, float)
        assert 0 <= o.xyxy[0] <= o.xyxy[2] <= 1920 and 0 <= o.xyxy[1] <= o.xyxy[3] <= 1080


@pytest.mark.parametrize("tile", [0, 640])
def test_predict_tiled_and_untiled(fast, frame, tile):
    image = np.ascontiguousarray(frame[0][::2, ::2])
    fr = fast.predict(image, "half.jpg", det_conf=0.01, tile=tile)
    assert (fr.width, fr.height) == (960, 540)
    assert len(fr.objects) > 0, "objects above 0.01 on the half frame: the bounds below must run"
    for o in fr.objects:
        assert 0 <= o.xyxy[0] <= o.xyxy[2] <= 960 and 0 <= o.xyxy[1] <= o.xyxy[3] <= 540


def test_analyse_batch_equals_per_frame(fast, frames_coco):
    from plankton.images import read_image

    images = [read_image(frames_coco.path_of(i)) for i in sorted(frames_coco.images)[:2]]
    batch = fast.analyse_batch(images, ["a", "b"])
    assert [a.image for a in batch] == ["a", "b"] and all(a.det_floor == 0.01 for a in batch)
    for image, a in zip(images, batch):
        one = fast.analyse(image)
        assert len(a.detections) == len(one.detections)
        np.testing.assert_allclose(a.detections.xyxy, one.detections.xyxy, atol=0.5)
        np.testing.assert_allclose(a.embeddings, one.embeddings, atol=1e-4)


def test_analyse_given_boxes(tiny_cascade, frame):
    image, gt = frame
    a = tiny_cascade.analyse_boxes(image, Detections(gt, np.ones(len(gt))), "gt")
    fr = a.resolve(0.0, 0.0)
    assert len(fr.objects) == len(gt)
    np.testing.assert_allclose([o.xyxy for o in fr.objects], gt, atol=1e-3)  # order and boxes kept
