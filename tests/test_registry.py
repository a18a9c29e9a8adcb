from __future__ import annotations

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
