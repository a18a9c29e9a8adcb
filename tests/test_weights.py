from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lmkcomp.errors import UserInputError
from lmkcomp.models import create_backbone, load_weights


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), key


class _Payload:
    """Pickles to a call that writes `marker`: loading it would run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state_dict"])
def test_torch_checkpoint_with_ddp_prefix(tmp_path, wrapper):
    source = tiny()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    target = tiny()
    report = load_weights(target, path)
    assert_same_state(source, target)
    assert report.clean and len(report.loaded) == len(source.state_dict())


def test_safetensors_with_compile_and_ddp_prefixes(tmp_path):
    source = tiny()
    path = tmp_path / "ckpt.safetensors"
    save_file({f"module._orig_mod.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = tiny()
    assert load_weights(target, path).clean
    assert_same_state(source, target)


def test_report_missing_unexpected_and_mismatched(tmp_path, caplog):
    source = tiny()
    state = dict(source.state_dict())
    del state["1.bias"]
    state["head.weight"] = torch.zeros(2)
    state["2.weight"] = torch.zeros(5, 3)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    target = tiny()
    kept = target[2].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="lmkcomp.models.weights"):
        report = load_weights(target, path)
    assert report.missing == ["1.bias"]
    assert report.unexpected == ["head.weight"]
    assert report.mismatched == [("2.weight", (5, 3), (2, 3))]
    assert "0.weight" in report.loaded and not report.clean
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[2].weight, kept)  # skipped, not loaded
    summary = report.summary()
    for part in ("1 missing (1.bias)", "1 unexpected (head.weight)", "2.weight: checkpoint (5, 3) vs model (2, 3)"):
        assert part in summary
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and summary in caplog.text

    with pytest.raises(UserInputError, match="1.bias"):
        load_weights(tiny(), path, strict=True)


def test_clean_load_logs_info(tmp_path, caplog):
    path = tmp_path / "ok.pt"
    torch.save(tiny().state_dict(), path)
    with caplog.at_level(logging.INFO, logger="lmkcomp.models.weights"):
        load_weights(tiny(), path)
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserInputError, match="nope.pth: weights file not found"):
        load_weights(tiny(), missing)
    for name, message in (("garbage.pth", "unreadable weights file"), ("garbage.safetensors", "cannot load weights")):
        bad = tmp_path / name
        bad.write_bytes(b"not a checkpoint")
        with pytest.raises(UserInputError, match=f"{name}: {message}"):
            load_weights(tiny(), bad)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(UserInputError, match="list.pt: not a state dict"):
        load_weights(tiny(), listing)


def test_pickled_objects_are_refused_not_run(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    torch.save({"weight": _Payload(marker)}, path)
    with pytest.raises(UserInputError, match="evil.pt: weights file holds pickled objects that are not plain tensors"):
        load_weights(tiny(), path)
    assert not marker.exists()


def test_backbone_pretrained_path(tmp_path):
    source, _ = create_backbone("test_resnet")
    path = tmp_path / "backbone.pth"
    torch.save({"model": source.state_dict()}, path)
    target, _ = create_backbone("test_resnet", pretrained_path=str(path))
    assert_same_state(source, target)


def test_model_starts_from_a_training_run_with_another_head_and_class_count(tmp_path, caplog):
    from lmkcomp.models import create_model
    from lmkcomp.models.model import ModelConfig
    from lmkcomp.train.checkpoint import save_checkpoint

    # a v1-style run: softmax over 7 classes, saved the way the trainer saves its checkpoints
    pretrained = create_model(ModelConfig(backbone="test_resnet", embedding_size=16, head="softmax"), 7)
    with torch.no_grad():
        for tensor in pretrained.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    path = tmp_path / "checkpoint-last.pt"
    save_checkpoint(path, {"model": pretrained.state_dict(), "loss": {}, "landmark_ids": list(range(7))})

    config = ModelConfig(backbone="test_resnet", embedding_size=16, head="arcface", pretrained=str(path))
    with caplog.at_level(logging.WARNING):
        model = create_model(config, 12)
    for part in ("backbone", "pooling"):
        assert_same_state(getattr(pretrained, part), getattr(model, part))
    # the neck starts afresh unless asked for
    assert not torch.equal(model.neck.layers[0].weight, pretrained.neck.layers[0].weight)
    assert torch.equal(model.neck.layers[1].running_mean, torch.zeros(16))
    assert model.head.weight.shape[0] == 12  # a head for the new classes
    # the report names what was left out (the old head and neck) and finds nothing missing
    report = model.pretrained_report
    assert report.clean and not report.unexpected and len(report.loaded) == len(model.backbone.state_dict()) + 1
    assert set(report.left_out) == {key for key in pretrained.state_dict() if key.startswith(("neck.", "head."))}
    assert "left out, their parts start afresh" in report.summary()

    with_neck = create_model(ModelConfig(backbone="test_resnet", embedding_size=16, head="arcface",
                                         pretrained=str(path), pretrained_neck=True), 12)
    assert_same_state(pretrained.neck, with_neck.neck)

    # another backbone: a part half transferred is an error rather than a silent random start
    with pytest.raises(UserInputError, match="backbone/pooling do not fit this model"):
        create_model(ModelConfig(backbone="resnet18", embedding_size=16, pretrained=str(path)), 3)


def test_model_starts_from_plain_backbone_weights(tmp_path):
    from lmkcomp.models import create_model
    from lmkcomp.models.model import ModelConfig

    source, _ = create_backbone("test_resnet")
    path = tmp_path / "imagenet.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model(ModelConfig(backbone="test_resnet", embedding_size=16, pretrained=str(path)), 4)
    assert_same_state(source, model.backbone)
