"""Classification heads: embeddings ``B x D`` (and labels while training) -> logits ``B x C``.

Every head is called as ``head(embeddings, labels)``. With labels, margin heads add their
margin to each row's target class; with ``labels=None`` (inference, or a check of what
the classifier thinks) they return the plain logits: ``s * cos(theta)`` for cosine heads.
Cross-entropy on the returned logits is the training loss in every case.

Notation: ``cos(theta_ij)`` is the cosine between embedding ``i`` and the weight row of
class ``j``, both L2-normalised; ``y_i`` is the label of row ``i``; ``s`` the scale and
``m`` the margin (``m_j`` when margins are per class).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmkcomp.errors import UserInputError
from lmkcomp.registry import Registry

__all__ = [
    "HEADS",
    "AdaCosHead",
    "ArcFaceHead",
    "CosFaceHead",
    "SoftmaxHead",
    "create_head",
    "dynamic_margins",
    "head_options",
]

HEADS: Registry[nn.Module] = Registry("head")

# Floor of sin^2(theta) in ArcFace: d sqrt(u)/du is infinite at u = 0 (cos = +-1), and the
# unselected branch of torch.where still back-propagates 0 * inf = NaN.
_MIN_SIN_SQUARED = 1e-7


def dynamic_margins(class_counts: Tensor | Sequence[int], m_min: float = 0.05, m_max: float = 0.5) -> Tensor:
    """Per-class margins that shrink with the class size (GLDv2 2020 winners).

    ``m_c = a * n_c^(-1/4) + b`` with ``a, b`` set so the margins span exactly
    ``[m_min, m_max]``: the smallest class gets ``m_max`` and the largest ``m_min``,
    i.e. ``a = (m_max - m_min) / (n_min^(-1/4) - n_max^(-1/4))`` and
    ``b = m_max - a * n_min^(-1/4)``. When all counts are equal every margin is ``m_max``.
    Returns a float32 tensor of one margin per class.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0 or bool((counts <= 0).any()):
        raise UserInputError("class counts for dynamic margins must be non-empty and all > 0")
    if not 0 <= m_min <= m_max:
        raise UserInputError(f"dynamic margins need 0 <= margin_min <= margin_max, got {m_min}, {m_max}")
    inv_root = counts.pow(-0.25)
    low, high = inv_root.min(), inv_root.max()  # at the largest and the smallest class
    if high == low:
        return torch.full_like(counts, m_max, dtype=torch.float32)
    a = (m_max - m_min) / (high - low)
    b = m_max - a * high
    return (a * inv_root + b).float()


class _CosineClassifier(nn.Module):
    """Normalised weights with ``subcenters`` rows per class: ``cos(theta_ij)``, ``B x C``.

    Rows ``j*k .. j*k + k - 1`` of ``weight`` are the ``k`` sub-centres of class ``j``;
    the cosine of class ``j`` is the largest of its sub-centres' cosines.
    """

    def __init__(self, embedding_size: int, num_classes: int, subcenters: int = 1):
        super().__init__()
        if num_classes < 1 or subcenters < 1:
            raise UserInputError(f"need num_classes >= 1 and subcenters >= 1, got {num_classes}, {subcenters}")
        self.num_classes = num_classes
        self.subcenters = subcenters
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embedding_size))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: Tensor) -> Tensor:
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        if self.subcenters > 1:
            cos = cos.view(-1, self.num_classes, self.subcenters).amax(dim=2)
        # Rounding can leave |cos| slightly above 1, outside the domain of acos / sqrt(1 - cos^2).
        return cos.clamp(-1.0, 1.0)


@HEADS.register("softmax")
class SoftmaxHead(nn.Module):
    """Plain linear classifier ``W e + b``: the classification baseline (labels unused)."""

    def __init__(self, embedding_size: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.fc(embeddings)


@HEADS.register("arcface")
class ArcFaceHead(_CosineClassifier):
    """ArcFace (Deng et al., 2019), optionally with sub-centres and per-class margins.

    Target logit ``s * cos(theta_iy + m_y)``, other logits ``s * cos(theta_ij)``.
    ``theta + m`` beyond ``pi`` would make ``cos(theta + m)`` rise again with ``theta``
    and reward a worse angle, so where ``theta > pi - m`` (``cos theta <= th`` with
    ``th = cos(pi - m)``) the target logit is ``s * (cos theta - mm)`` with
    ``mm = sin(pi - m) * m`` instead (the usual "easy_margin=False" rule): a
    CosFace-like penalty that keeps the target logit decreasing in ``theta``.

    ``subcenters = k > 1`` gives sub-centre ArcFace (Deng et al., 2020): ``cos theta``
    of a class is the max over its ``k`` sub-centres. ``dynamic_margin=True`` uses
    :func:`dynamic_margins` of `class_counts` instead of the single `margin`.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: float = 0.3,
        scale: float = 30.0,
        subcenters: int = 1,
        dynamic_margin: bool = False,
        margin_min: float = 0.05,
        margin_max: float = 0.5,
        class_counts: Tensor | Sequence[int] | None = None,
    ):
        super().__init__(embedding_size, num_classes, subcenters)
        self.scale = scale
        if dynamic_margin:
            if class_counts is None:
                raise UserInputError("dynamic margins need the training set's class counts")
            margins = dynamic_margins(class_counts, margin_min, margin_max)
            if margins.numel() != num_classes:
                raise UserInputError(f"got {margins.numel()} class counts for {num_classes} classes")
        else:
            if not 0 <= margin < math.pi:
                raise UserInputError(f"ArcFace margin must be in [0, pi), got {margin}")
            margins = torch.full((num_classes,), float(margin))
        # A buffer, so the margins travel with the state dict and the device.
        self.register_buffer("margins", margins)

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        labels = labels.view(-1, 1)
        m = self.margins[labels].to(cos.dtype)
        cos_y = cos.gather(1, labels)
        sin_y = (1.0 - cos_y.square()).clamp(min=_MIN_SIN_SQUARED).sqrt()
        cos_y_plus_m = cos_y * torch.cos(m) - sin_y * torch.sin(m)
        th = torch.cos(math.pi - m)
        mm = torch.sin(math.pi - m) * m
        target = torch.where(cos_y > th, cos_y_plus_m, cos_y - mm)
        return self.scale * cos.scatter(1, labels, target)


# Sub-centre ArcFace is ArcFace with k sub-centres; the winners used k = 3.
HEADS.register("subcenter_arcface")(functools.partial(ArcFaceHead, subcenters=3))


@HEADS.register("cosface")
class CosFaceHead(_CosineClassifier):
    """CosFace / large-margin cosine loss (Wang et al., 2018).

    Target logit ``s * (cos theta_iy - m)``, other logits ``s * cos theta_ij``.
    """

    def __init__(self, embedding_size: int, num_classes: int, margin: float = 0.3, scale: float = 30.0):
        super().__init__(embedding_size, num_classes)
        self.margin = margin
        self.scale = scale

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        cos = self.cosine(embeddings)
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels, self.num_classes).to(cos.dtype)
        return self.scale * cos


@HEADS.register("adacos")
class AdaCosHead(_CosineClassifier):
    """AdaCos (Zhang et al., 2019): cosine logits ``s * cos theta`` with an adaptive scale, no margin.

    ``s`` starts at ``sqrt(2) * log(C - 1)``. Each training batch with labels then sets,
    before computing its logits (no gradient through ``s``)::

        B_avg = (1/B) sum_i sum_{j != y_i} exp(s * cos theta_ij)
        s     = log(B_avg) / cos(min(pi/4, median_i theta_iy_i))

    ``s`` is a buffer: it is saved with the model and used unchanged in eval mode.
    """

    def __init__(self, embedding_size: int, num_classes: int):
        super().__init__(embedding_size, num_classes)
        if num_classes < 3:
            # With 2 classes s starts at log(1) = 0, and B_avg = exp(0) = 1 keeps it at 0.
            raise UserInputError(f"AdaCos needs at least 3 classes, got {num_classes}")
        self.register_buffer("scale", torch.tensor(math.sqrt(2.0) * math.log(num_classes - 1)))

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        cos = self.cosine(embeddings)
        if labels is not None and self.training:
            with torch.no_grad():
                cos32 = cos.float()  # exp(s * cos) overflows half precision
                is_target = F.one_hot(labels, self.num_classes).bool()
                others = torch.where(is_target, 0.0, torch.exp(self.scale * cos32))
                b_avg = others.sum(dim=1).mean()
                theta_median = torch.acos(cos32[is_target]).median()
                angle = torch.clamp(theta_median, max=math.pi / 4)
                self.scale.copy_(torch.log(b_avg) / torch.cos(angle))
        return self.scale * cos


def head_options(name: str) -> frozenset[str]:
    """Keyword options the head registered as `name` takes, beyond its two sizes."""
    params = inspect.signature(HEADS.get(name)).parameters
    return frozenset(params) - {"embedding_size", "num_classes"}


def create_head(
    name: str,
    embedding_size: int,
    num_classes: int,
    class_counts: Tensor | Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build the head registered as `name` for `num_classes` classes of `embedding_size`-d embeddings.

    `class_counts` (training images per class) goes to the heads that use it (dynamic
    margins) and is ignored by the others; an option the head does not take is a
    UserInputError that lists the ones it does.
    """
    options = head_options(name)
    unknown = sorted(set(kwargs) - options)
    if unknown:
        raise UserInputError(
            f"head {name!r} takes no option {', '.join(unknown)}; it takes: {', '.join(sorted(options)) or 'none'}"
        )
    if class_counts is not None and "class_counts" in options:
        kwargs["class_counts"] = class_counts
    return HEADS.create(name, embedding_size=embedding_size, num_classes=num_classes, **kwargs)
