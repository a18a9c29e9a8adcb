"""The modified Center loss (landmark classes only), per-part learning rates and the step schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmkcomp.errors import UserInputError
from lmkcomp.models import ModelConfig, create_model
from lmkcomp.models.losses import LOSSES, CenterLoss, create_loss
from lmkcomp.train.config import OptimConfig, PartLearningRates
from lmkcomp.train.optim import PARTS, create_optimizer, lr_factor, part_learning_rates, part_parameters


def center_loss(center_weight: float, centers: list[list[float]]) -> CenterLoss:
    loss = create_loss("center", num_centers=len(centers), embedding_size=len(centers[0]), center_weight=center_weight)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor(centers))
    return loss


def test_center_term_pulls_landmark_embeddings_and_ignores_the_non_landmark_class():
    # two landmark classes with centers (0, 0) and (1, 1); class 2 is the non-landmark class
    loss = center_loss(0.5, [[0.0, 0.0], [1.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [3.0, 1.0], [2.0, 2.0]], requires_grad=True)
    logits = torch.zeros(3, 3, requires_grad=True)  # a leaf: x gets gradient from the center term only
    value = loss(logits, torch.tensor([0, 1, 2]), x)
    value.backward()
    # CE of uniform logits is log 3; center term (lambda / 2m) * (1 + 4) with lambda = 0.5, m = 3
    assert value.item() == pytest.approx(math.log(3) + 0.5 / 6 * 5)
    # d/dx_i = (lambda / m) (x_i - c_y): toward the center; zero for the non-landmark row
    torch.testing.assert_close(x.grad, torch.tensor([[1 / 6, 0.0], [1 / 3, 0.0], [0.0, 0.0]]))
    # centers: Wen et al.'s sum (c_j - x_i) / (1 + n_j), n_j = 1 for both classes
    torch.testing.assert_close(loss.centers.grad, torch.tensor([[-0.5, 0.0], [-1.0, 0.0]]))


def test_center_update_counts_the_rows_of_each_class_and_skips_absent_classes():
    loss = center_loss(0.5, [[0.0, 0.0], [1.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 5.0]])
    loss(torch.zeros(3, 3), torch.tensor([0, 0, 2]), x).backward()
    # class 0: ((0 - 1) + (0 - 3)) / (1 + 2); class 1 is absent; the non-landmark row moves nothing
    torch.testing.assert_close(loss.centers.grad, torch.tensor([[-4 / 3, 0.0], [0.0, 0.0]]))


def test_lambda_scales_the_center_term_and_the_embedding_gradient_but_not_the_center_update():
    torch.manual_seed(0)
    x0, logits, labels = torch.randn(6, 4), torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 1])
    centers = torch.randn(4, 4).tolist()
    results = []
    for weight in (1e-3, 1e-2):
        loss = center_loss(weight, centers)
        x = x0.clone().requires_grad_(True)
        value = loss(logits, labels, x)
        value.backward()
        results.append((value.item() - F.cross_entropy(logits, labels).item(), x.grad, loss.centers.grad))
    (term_a, grad_a, update_a), (term_b, grad_b, update_b) = results
    assert term_a > 0 and term_b == pytest.approx(10 * term_a, rel=1e-5)
    torch.testing.assert_close(grad_b, 10 * grad_a)
    torch.testing.assert_close(update_b, update_a)
    assert grad_a[4].abs().sum() == 0  # label 4 = num_centers: the non-landmark class


def test_loss_registry_and_options():
    assert {"ce", "center"} <= set(LOSSES.names())
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    # cross-entropy takes (and ignores) the embeddings too
    torch.testing.assert_close(create_loss("ce")(logits, labels, torch.randn(4, 2)), F.cross_entropy(logits, labels))
    with pytest.raises(UserInputError, match="loss 'ce' takes no option center_weight"):
        create_loss("ce", center_weight=1.0)
    with pytest.raises(UserInputError, match="lambda"):
        create_loss("center", num_centers=2, embedding_size=2, center_weight=-1.0)


def small_model(num_classes: int = 5):
    return create_model(ModelConfig(backbone="test_resnet", embedding_size=8, head="softmax"), num_classes)


def test_part_learning_rates_layer_defaults_config_and_stage_override():
    optim = OptimConfig(lr=0.1, head_lr_scale=10.0, part_lr=PartLearningRates(backbone=1e-3, centers=0.5))
    assert part_learning_rates(optim) == pytest.approx(
        {"backbone": 1e-3, "embedding": 0.1, "classifier": 1.0, "centers": 0.5})
    later = PartLearningRates(backbone=1e-4, embedding=1e-4, classifier=1e-2)
    assert part_learning_rates(optim, later) == pytest.approx(
        {"backbone": 1e-4, "embedding": 1e-4, "classifier": 1e-2, "centers": 0.5})


def test_optimizer_groups_each_part_and_covers_every_learning_parameter_once():
    model, loss = small_model(), center_loss(5e-5, [[0.0] * 8] * 4)
    rates = {"backbone": 1e-3, "embedding": 1e-2, "classifier": 2e-2, "centers": 0.5}
    optimizer = create_optimizer(OptimConfig(weight_decay=5e-3, momentum=0.9), model, loss, rates)
    groups = optimizer.param_groups
    assert list(dict.fromkeys(group["part"] for group in groups)) == list(PARTS)
    assert all(group["lr"] == rates[group["part"]] for group in groups)
    expected = part_parameters(model, loss)
    for part in PARTS:
        members = [id(p) for group in groups if group["part"] == part for p in group["params"]]
        assert sorted(members) == sorted(id(p) for p in expected[part] if p.requires_grad)
    everything = [id(p) for group in groups for p in group["params"]]
    learning = [p for p in [*model.parameters(), *loss.parameters()] if p.requires_grad]
    assert sorted(everything) == sorted(id(p) for p in learning)
    assert expected["embedding"] == list(model.neck.parameters()) and expected["centers"] == [loss.centers]
    # weights decay; batch-norm scales, biases and GeM's p do not; the neck's fixed shift is not listed
    for group in groups:
        if group["part"] == "centers":
            assert group["weight_decay"] == 0.0 and group["momentum"] == 0.0
        else:
            dims = {p.ndim for p in group["params"]}
            assert group["weight_decay"] == (5e-3 if min(dims) > 1 else 0.0), (group["part"], dims)
            assert group["momentum"] == 0.9
    assert id(model.neck.layers[1].bias) not in everything
    # plain cross-entropy has no centers: no empty group
    ce_optimizer = create_optimizer(OptimConfig(name="adamw"), model, create_loss("ce"), rates)
    assert [group["part"] for group in ce_optimizer.param_groups] == ["backbone", "backbone", "embedding", "embedding",
                                                                      "classifier", "classifier"]


def test_an_sgd_step_is_wens_center_update():
    model, loss = small_model(), center_loss(5e-5, [[0.0, 0.0], [1.0, 1.0]])
    rates = {"backbone": 0.1, "embedding": 0.1, "classifier": 0.1, "centers": 0.5}
    optimizer = create_optimizer(OptimConfig(weight_decay=5e-3, momentum=0.9), model, loss, rates)
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0]])
    for _ in range(2):  # the second step would differ with momentum
        before = loss.centers.detach().clone()
        optimizer.zero_grad()
        loss(torch.zeros(3, 3), torch.tensor([0, 0, 1]), x).backward()
        optimizer.step()
        delta = torch.stack([((before[0] - x[0]) + (before[0] - x[1])) / 3, (before[1] - x[2]) / 2])
        torch.testing.assert_close(loss.centers.detach(), before - 0.5 * delta)


def test_step_schedule_decays_at_the_milestones_after_warmup():
    factor = lr_factor(OptimConfig(schedule="step", step_milestones=(0.4, 0.8), step_gamma=0.1), 2, 10)
    values = [factor(step) for step in range(10)]
    assert values == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    cosine = lr_factor(OptimConfig(min_lr_ratio=0.0), 0, 10)
    assert cosine(0) == pytest.approx(1.0) and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
