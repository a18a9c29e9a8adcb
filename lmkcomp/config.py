"""Typed configs from YAML: nested dataclasses, every key validated.

`load_config(path, TrainConfig)` reads YAML into the dataclass tree; an unknown key, a missing
required key or a value of the wrong type is a `UserInputError` naming the file and the dotted
key (e.g. ``train.yaml: model.head: ...``). `to_dict` gives the resolved config back, which is
what checkpoints store.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lmkcomp.csvfile import shown
from lmkcomp.errors import UserInputError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except UserInputError as error:
                errors.append(str(error))
        raise UserInputError(errors[0] if errors else f"{key}: unexpected value {shown(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserInputError(f"{key}: {shown(value)} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{key}: expected a list, got {shown(value)}")
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        items = [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # an object built by the caller, already checked by its class
            return value
        if not isinstance(value, dict):
            raise UserInputError(f"{key}: expected a mapping of {tp.__name__} fields, got {shown(value)}")
        return _build(tp, value, key + ".")
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise UserInputError(f"{key}: expected true or false, got {shown(value)}")
    if tp in (int, float, str) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise UserInputError(f"{key}: expected {_type_name(tp)}, got {shown(value)}")
    return value


def _build(cls: type[T], values: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserInputError(
            f"{prefix}{unknown[0]}: unknown key; {cls.__name__} accepts {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], prefix + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserInputError(f"{prefix}{name}: required key is missing")
    instance = cls(**kwargs)
    check = getattr(instance, "validate", None)
    if check is not None:
        check()
    return instance


def from_dict(cls: type[T], values: dict | None) -> T:
    """Build the dataclass `cls` from a (YAML-like) mapping, validating every key."""
    return _build(cls, values or {})


def load_config(path: str | Path, cls: type[T], overrides: dict | None = None) -> T:
    """Read a YAML file into `cls`; `overrides` (dotted keys) are applied on top."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserInputError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(values, dict):
        raise UserInputError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        apply_override(values, dotted, value)
    try:
        return _build(cls, values)
    except UserInputError as error:
        raise UserInputError(f"{path}: {error}") from None


def apply_override(values: dict, dotted: str, value: Any) -> None:
    """Set `values[a][b][c] = value` for `dotted` = "a.b.c", creating mappings on the way."""
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserInputError(f"{dotted}: {key} is not a mapping")
    node[keys[-1]] = value


def to_dict(config: Any) -> dict:
    """The config as plain YAML-able data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def typed_options(cls: type, options: dict[str, Any], kind: str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """`options` for the dataclass `cls`, each checked against its field's annotation (ints
    become floats where a float is declared); an unknown key, or one in `exclude`, is a user
    error listing the valid ones, and a value of the wrong type one naming the key.

    Ranges are the class's own business (its `__post_init__`): this only guarantees that the
    values it compares have the declared types.
    """
    hints = typing.get_type_hints(cls)
    valid = sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude)
    checked = {}
    for key, value in options.items():
        if key not in valid:
            raise UserInputError(f"unknown {kind} option {key!r}; valid options: {', '.join(valid)}")
        try:
            checked[key] = _coerce(value, hints[key], key)
        except UserInputError as error:
            raise UserInputError(f"{kind} option {error}") from None
    return checked


def preset_with_overrides(presets: dict[str, T], name: str, kind: str, **overrides: Any) -> T:
    """`presets[name]` with `overrides` replacing its fields (checked by `typed_options`); an
    unknown preset or field is a user error naming the `kind` of preset (e.g. "dataset",
    "verification")."""
    if name not in presets:
        raise UserInputError(f"unknown {kind} preset {name!r}; known: {', '.join(presets)}")
    preset = presets[name]
    return dataclasses.replace(preset, **typed_options(type(preset), overrides, kind))
