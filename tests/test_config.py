"""YAML -> typed config: every key validated, errors name the file and the dotted key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmkcomp.config import from_dict, load_config, to_dict
from lmkcomp.errors import UserInputError


@dataclass
class Inner:
    head: Literal["arcface", "cosface"] = "arcface"
    margin: float = 0.3
    scales: tuple[float, ...] = (1.0,)


@dataclass
class Outer:
    name: str
    epochs: int = 3
    pretrained: str | None = None
    amp: bool = False
    model: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserInputError("epochs: must be at least 1")


def test_nested_values_and_coercions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\nmodel:\n  head: cosface\n  margin: 1\n  scales: [0.5, 1]\n")
    config = load_config(path, Outer)
    assert config.model == Inner("cosface", 1.0, (0.5, 1.0))
    assert isinstance(config.model.margin, float) and config.epochs == 3
    assert to_dict(config) == {"name": "run", "epochs": 3, "pretrained": None, "amp": False,
                               "model": {"head": "cosface", "margin": 1.0, "scales": [0.5, 1.0]}}
    assert from_dict(Outer, to_dict(config)) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: r\nmodel:\n  hed: arcface\n", r"c\.yaml: model\.hed: unknown key; Inner accepts head, margin, scales"),
        ("name: r\nmodel:\n  head: softmaxx\n", r"c\.yaml: model\.head: 'softmaxx' is not one of 'arcface', 'cosface'"),
        ("name: r\nepochs: three\n", r"c\.yaml: epochs: expected int, got 'three'"),
        ("name: r\namp: 1\n", r"c\.yaml: amp: expected true or false"),
        ("epochs: 2\n", r"c\.yaml: name: required key is missing"),
        ("name: r\nepochs: 0\n", r"c\.yaml: epochs: must be at least 1"),
        ("name: r\nmodel: [1]\n", r"c\.yaml: model: expected a mapping"),
        ("name: [unclosed\n", r"c\.yaml:\d+: invalid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError, match=message):
        load_config(path, Outer)


def test_overrides_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: r\n")
    assert load_config(path, Outer, {"model.margin": 0.5, "epochs": 9}).model.margin == 0.5
    with pytest.raises(UserInputError, match="config file not found"):
        load_config(tmp_path / "none.yaml", Outer)


def test_a_long_wrong_value_is_shown_cut(tmp_path):
    # a config key holding a whole pasted file: the message shows its start, never all of it
    secret = "line of a private file " * 200
    path = tmp_path / "c.yaml"
    path.write_text(f"name: r\nepochs: {secret!r}\nmodel: {[secret] * 3!r}\n")
    with pytest.raises(UserInputError) as raised:
        load_config(path, Outer)
    message = str(raised.value)
    assert message.startswith(f"{path}: epochs: expected int, got 'line of a private file")
    assert message.endswith("...") and len(message) < len(str(path)) + 150
