from __future__ import annotations

import sys

import pytest

from lmkcomp.errors import UserInputError
from lmkcomp.registry import Registry


def test_register_create_and_unknown_name():
    poolings = Registry("pooling")

    @poolings.register("double")
    def double(x: int = 1) -> int:
        return 2 * x

    assert poolings.create("double", x=4) == 8
    assert "double" in poolings and poolings.names() == ["double"]
    with pytest.raises(UserInputError, match="unknown pooling 'triple'; known: double"):
        poolings.create("triple")
    with pytest.raises(ValueError, match="registered twice"):
        poolings.register("double")(double)


def test_a_part_registered_by_import_path_is_imported_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_part_module.py").write_text("def triple(x=1):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_part_module", raising=False)
    parts = Registry("part")
    parts.register_path("triple", "lazy_part_module:triple")
    assert "triple" in parts and parts.names() == ["triple"]
    assert "lazy_part_module" not in sys.modules
    assert parts.create("triple", x=2) == 6
    assert "lazy_part_module" in sys.modules
    with pytest.raises(ValueError, match="registered twice"):
        parts.register_path("triple", "lazy_part_module:triple")
    with pytest.raises(ValueError, match="is not 'package.module:Name'"):
        parts.register_path("other", "lazy_part_module.triple")
