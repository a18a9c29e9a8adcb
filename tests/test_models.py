from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmkcomp.errors import UserInputError
from lmkcomp.models import (
    HEADS,
    ModelConfig,
    Neck,
    class_weights_inverse_log,
    create_backbone,
    create_head,
    create_loss,
    create_model,
    create_pooling,
    dynamic_margins,
    freeze_batchnorm,
    power_mean,
)

BACKBONE = "test_resnet"  # timm's tiny test model: 96 channels, fast on CPU
S, M = 30.0, 0.3


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


# --- pooling ---------------------------------------------------------------------------


def test_gem_is_average_pooling_at_p1_and_tends_to_max_pooling():
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.1
    torch.testing.assert_close(create_pooling("gem", p=1.0)(x), x.mean(dim=(2, 3)))
    mac = x.amax(dim=(2, 3))
    errors = []
    for p in (10.0, 50.0):
        gem = create_pooling("gem", p=p)(x)
        # (mean x^p)^(1/p) lies in [max * (1/HW)^(1/p), max] for positive x.
        assert torch.all(gem <= mac + 1e-12)
        assert torch.all(gem >= mac * (1 / 16) ** (1 / p) - 1e-12)
        errors.append((mac - gem).abs().max().item())
    assert errors[1] < errors[0] and errors[1] < 0.06


def test_gem_formula_clamp_and_gradient_to_p():
    gem = create_pooling("gem")
    assert gem.power == pytest.approx(3.0) and gem.p.requires_grad
    x = torch.tensor([[[[-1.0, 0.0], [1.0, 2.0]]]])
    eps = 1e-6
    expected = ((eps**3 + eps**3 + 1.0 + 8.0) / 4) ** (1 / 3)
    out = gem(x)
    assert out.shape == (1, 1)
    assert out.item() == pytest.approx(expected, rel=1e-5)
    out.sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad) and gem.p.grad.abs() > 0
    assert not create_pooling("gem", trainable=False).p.requires_grad


def test_avg_max_poolings_power_mean_and_unknown_name():
    x = torch.rand(2, 5, 3, 3)
    torch.testing.assert_close(create_pooling("avg")(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(create_pooling("max")(x), x.amax(dim=(2, 3)))
    assert create_pooling("avg").power == 1.0 and math.isinf(create_pooling("max").power)
    a, b = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 0.5])
    torch.testing.assert_close(power_mean([a, b], 1.0), torch.tensor([1.5, 2.25]))
    torch.testing.assert_close(power_mean([a, b], math.inf), torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(power_mean([a, b], 3.0), ((a**3 + b**3) / 2) ** (1 / 3))
    with pytest.raises(UserInputError, match="unknown pooling 'sum'"):
        create_pooling("sum")


# --- heads -----------------------------------------------------------------------------


def hand_made_head(name: str, **kwargs):
    """Classes at angles 0, pi/2, pi in the plane; embeddings deliberately not unit length."""
    head = create_head(name, embedding_size=2, num_classes=3, **kwargs)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(0.0), unit(math.pi / 2), unit(math.pi)]) * 3.0)
    return head


def test_arcface_target_logit_is_s_cos_theta_plus_m():
    head = hand_made_head("arcface")
    a = 0.4
    emb = torch.tensor([unit(a)]) * 2.0
    logits = head(emb, torch.tensor([0]))
    thetas = [math.acos(math.cos(a - c)) for c in (0.0, math.pi / 2, math.pi)]
    assert logits[0, 0].item() == pytest.approx(S * math.cos(thetas[0] + M), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(S * math.cos(thetas[1]), abs=1e-4)
    assert logits[0, 2].item() == pytest.approx(S * math.cos(thetas[2]), abs=1e-4)
    # Inference: no margin anywhere.
    plain = head(emb, None)
    torch.testing.assert_close(plain[0], torch.tensor([S * math.cos(t) for t in thetas]), atol=1e-4, rtol=0)


def test_arcface_beyond_pi_minus_m_stays_monotonic():
    head = hand_made_head("arcface")
    # Angle to class 2 (at pi) is pi - a: past pi - m when a < m.
    a = 0.1
    theta = math.pi - a
    logit = head(torch.tensor([unit(a)]), torch.tensor([2]))[0, 2].item()
    assert logit == pytest.approx(S * (math.cos(theta) - math.sin(math.pi - M) * M), abs=1e-4)
    assert logit < S * math.cos(math.pi)  # whereas cos(theta + m) would have risen again
    targets = [head(torch.tensor([unit(b)]), torch.tensor([0]))[0, 0].item() for b in torch.linspace(0, math.pi, 60)]
    assert all(later < earlier for earlier, later in zip(targets, targets[1:]))


def test_cosface_target_logit_and_inference():
    head = hand_made_head("cosface")
    a = 0.4
    emb = torch.tensor([unit(a)])
    logits = head(emb, torch.tensor([1]))
    theta1 = math.pi / 2 - a
    assert logits[0, 1].item() == pytest.approx(S * (math.cos(theta1) - M), abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(S * math.cos(a), abs=1e-4)
    assert head(emb, None)[0, 1].item() == pytest.approx(S * math.cos(theta1), abs=1e-4)


def test_subcenter_arcface_uses_the_best_subcenter():
    head = create_head("subcenter_arcface", embedding_size=2, num_classes=2)
    assert head.weight.shape == (6, 2)
    s2 = math.sqrt(0.5)
    with torch.no_grad():
        # class 0: cosines 0.6, 0.8 (its 2nd sub-centre, the best), -0.6; class 1: -0.8, 0.28, -0.1414
        head.weight.copy_(torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1], [-0.6, 0.8], [s2, -s2]]))
    emb = torch.tensor([[0.6, 0.8]]) * 5
    torch.testing.assert_close(head(emb, None), torch.tensor([[S * 0.8, S * 0.28]]), atol=1e-4, rtol=0)
    trained = head(emb, torch.tensor([0]))
    assert trained[0, 0].item() == pytest.approx(S * math.cos(math.acos(0.8) + M), abs=1e-4)
    assert trained[0, 1].item() == pytest.approx(S * 0.28, abs=1e-4)


def test_dynamic_margins_formula():
    counts = [1, 16, 81, 10000]  # n^(-1/4) = 1, 1/2, 1/3, 1/10
    # m_max = a * 1 + b and m_min = a / 10 + b  =>  a = 0.45 / 0.9 = 0.5, b = 0.0
    a, b = 0.5, 0.0
    margins = dynamic_margins(counts, 0.05, 0.5)
    expected = torch.tensor([a * n**-0.25 + b for n in counts], dtype=torch.float32)
    torch.testing.assert_close(margins, expected)
    torch.testing.assert_close(margins, torch.tensor([0.5, 0.25, 1 / 6, 0.05]))
    assert torch.all(margins[1:] < margins[:-1])
    torch.testing.assert_close(dynamic_margins(torch.tensor([7, 7, 7])), torch.full((3,), 0.5))
    with pytest.raises(UserInputError):
        dynamic_margins([3, 0])


def test_arcface_dynamic_margin_per_class():
    head = hand_made_head("arcface", dynamic_margin=True, class_counts=[1, 16, 10000])
    torch.testing.assert_close(head.margins, dynamic_margins([1, 16, 10000]))
    a = 0.4
    logits = head(torch.tensor([unit(a), unit(a)]), torch.tensor([0, 2]))
    m0, m2 = head.margins.tolist()[0], head.margins.tolist()[2]
    assert m0 == pytest.approx(0.5) and m2 == pytest.approx(0.05)
    assert logits[0, 0].item() == pytest.approx(S * math.cos(a + m0), abs=1e-4)
    assert logits[1, 2].item() == pytest.approx(S * math.cos(math.pi - a + m2), abs=1e-4)
    with pytest.raises(UserInputError, match="class counts"):
        create_head("arcface", 2, 3, dynamic_margin=True)


def test_softmax_head_ignores_labels():
    head = create_head("softmax", embedding_size=4, num_classes=3)
    emb = torch.randn(2, 4)
    expected = emb @ head.fc.weight.T + head.fc.bias
    torch.testing.assert_close(head(emb, torch.tensor([0, 1])), expected)
    torch.testing.assert_close(head(emb, None), expected)


def test_adacos_scale_update():
    head = hand_made_head("adacos")
    s0 = math.sqrt(2) * math.log(3 - 1)
    assert head.scale.item() == pytest.approx(s0)
    emb = torch.tensor([unit(0.2), unit(1.2), unit(2.0)])
    labels = torch.tensor([0, 1, 2])
    cos = torch.tensor([[math.cos(e - c) for c in (0.0, math.pi / 2, math.pi)] for e in (0.2, 1.2, 2.0)])
    b_avg = sum(math.exp(s0 * cos[i, j]) for i in range(3) for j in range(3) if j != i) / 3
    theta_med = sorted([0.2, abs(1.2 - math.pi / 2), math.pi - 2.0])[1]
    s1 = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))
    head.train()
    logits = head(emb, labels)
    assert head.scale.item() == pytest.approx(s1, rel=1e-5)
    torch.testing.assert_close(logits, s1 * cos, atol=1e-4, rtol=0)
    head.eval()
    head(emb, labels)
    assert head.scale.item() == pytest.approx(s1, rel=1e-5)
    with pytest.raises(UserInputError, match="at least 3 classes"):
        create_head("adacos", 2, 2)


def test_create_head_rejects_unknown_names_and_options():
    with pytest.raises(UserInputError, match="unknown head 'sphereface'"):
        create_head("sphereface", 4, 3)
    with pytest.raises(UserInputError, match="takes no option margin"):
        create_head("softmax", 4, 3, margin=0.3)
    assert isinstance(create_head("softmax", 4, 3, class_counts=[1, 2, 3]), torch.nn.Module)


# --- losses ----------------------------------------------------------------------------


def test_class_weights_inverse_log():
    # 1/log(n + 1) for n = 1, 3, 7 is 1/log 2 * (1, 1/2, 1/3); the mean is 11/18 of 1/log 2.
    weights = class_weights_inverse_log([1, 3, 7])
    torch.testing.assert_close(weights, torch.tensor([18 / 11, 9 / 11, 6 / 11]))
    assert weights.mean().item() == pytest.approx(1.0)
    with pytest.raises(UserInputError):
        class_weights_inverse_log([2, 0])


def test_create_loss_weighted_smoothed_cross_entropy():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 1])
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = create_loss("ce", class_weights=weights, label_smoothing=0.1)
    expected = F.cross_entropy(logits, labels, weight=weights, label_smoothing=0.1)
    torch.testing.assert_close(loss(logits, labels), expected)
    torch.testing.assert_close(create_loss()(logits, labels), F.cross_entropy(logits, labels))
    with pytest.raises(UserInputError, match="unknown loss 'focal'"):
        create_loss("focal")


# --- backbone, neck, model -------------------------------------------------------------


def test_create_backbone_gives_a_feature_map():
    model, channels = create_backbone(BACKBONE)
    assert channels == 96
    assert model.training  # the shape probe leaves the mode as it was
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 96, 2, 2)


def test_create_backbone_errors():
    with pytest.raises(UserInputError, match="unknown timm backbone 'resnet_18'.*resnet18"):
        create_backbone("resnet_18")
    with pytest.raises(UserInputError, match="'test_vit'.*conv-like"):
        create_backbone("test_vit")
    with pytest.raises(UserInputError, match="never downloaded"):
        create_backbone(BACKBONE, pretrained=True)


def test_neck_layers():
    plain = Neck(8, 4)
    kinds = [type(layer).__name__ for layer in plain.layers]
    assert kinds == ["Linear", "BatchNorm1d"] and plain.layers[0].bias is None
    full = Neck(8, 4, activation="prelu", dropout=0.2)
    assert [type(layer).__name__ for layer in full.layers] == ["Dropout", "Linear", "BatchNorm1d", "PReLU"]
    assert full(torch.randn(3, 8)).shape == (3, 4)
    with pytest.raises(UserInputError, match="relu"):
        Neck(8, 4, activation="relu")


@pytest.mark.parametrize("head", sorted(HEADS.names()))
def test_landmark_model_forward_shapes(head):
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=BACKBONE, embedding_size=16, head=head), num_classes=5)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 4])
    out = model(images, labels)
    assert out["embedding"].shape == (4, 16) and out["logits"].shape == (4, 5)
    assert torch.isfinite(out["logits"]).all()
    out["logits"].logsumexp(dim=1).sum().backward()
    assert model.pooling.p.grad is not None
    model.eval()
    assert model(images)["logits"].shape == (4, 5)


def test_embed_pool_features_and_multiscale():
    model = create_model(ModelConfig(backbone=BACKBONE, embedding_size=16), num_classes=5).eval()
    images = torch.randn(3, 3, 64, 64)
    emb = model.embed(images)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    pooled = model.pool_features(images)
    assert pooled.shape == (3, 96) and model.pooling_p == pytest.approx(3.0)
    torch.testing.assert_close(model.embed_pooled(power_mean([pooled, pooled], model.pooling_p)), emb)
    torch.testing.assert_close(F.normalize(model(images)["embedding"]), emb)


def test_create_model_heads_options():
    counts = [1, 16, 81, 10000]
    config = ModelConfig(backbone=BACKBONE, embedding_size=8, head="subcenter_arcface", dynamic_margin=True)
    model = create_model(config, num_classes=4, class_counts=counts)
    assert model.head.subcenters == 3 and model.head.weight.shape == (12, 8)
    torch.testing.assert_close(model.head.margins, dynamic_margins(counts))
    fixed = create_model(ModelConfig(backbone=BACKBONE, embedding_size=8, margin=0.2), num_classes=4)
    torch.testing.assert_close(fixed.head.margins, torch.full((4,), 0.2))
    # plain ArcFace has one centre per class (it once got the sub-centre head's 3)
    assert fixed.head.subcenters == 1 and fixed.head.weight.shape == (4, 8)
    two = create_model(ModelConfig(backbone=BACKBONE, embedding_size=8, head="subcenter_arcface", subcenters=2), 4)
    assert two.head.weight.shape == (8, 8)
    avg = create_model(ModelConfig(backbone=BACKBONE, embedding_size=8, pooling="avg", head="softmax"), num_classes=4)
    assert avg.pooling_p == 1.0
    with pytest.raises(UserInputError, match="no dynamic margins"):
        create_model(ModelConfig(backbone=BACKBONE, head="cosface", dynamic_margin=True), 4, counts)


def batchnorm_stats(model):
    return [
        (m.running_mean.clone(), m.running_var.clone())
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]


def test_freeze_batchnorm_keeps_running_stats():
    model = create_model(ModelConfig(backbone=BACKBONE, embedding_size=8), num_classes=3).train()
    images = torch.randn(4, 3, 64, 64) * 3 + 1
    before = batchnorm_stats(model)
    model(images)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(before, batchnorm_stats(model)))

    before = batchnorm_stats(model)
    assert freeze_batchnorm(model) == len(before)
    model(images, torch.tensor([0, 1, 2, 0]))
    after = batchnorm_stats(model)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(before, after))
    assert model.training and model.neck.layers[0].weight.requires_grad
    assert not model.neck.layers[1].weight.requires_grad
