"""The JSON manifests that describe the kit's on-disk artifacts (embedding stores, local-feature
stores, pair tables): each names its format and version, so a reader refuses a folder that holds
something else, or an artifact written by an incompatible version, with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

from lmkcomp.errors import UserInputError


def read_manifest(directory: Path, filename: str, format_name: str, version: int, kind: str) -> dict:
    """The manifest `directory/filename`, checked to be a `format_name` manifest of `version`.

    `kind` names the artifact in messages, with its article (e.g. "an embedding store").
    """
    path = directory / filename
    if not path.is_file():
        raise UserInputError(f"{directory}: not {kind} (no {filename})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise UserInputError(f"{path}: not the manifest of {kind}")
    if manifest.get("version") != version:
        raise UserInputError(f"{path}: format version {manifest.get('version')!r}; this lmkcomp reads version {version}")
    return manifest


def check_store_fields(manifest: dict, path: Path) -> None:
    """The fields every sharded store's manifest has: positive `dim`, `count`, `shard_size`,
    a `meta` object and a `complete` flag."""
    for key in ("dim", "count", "shard_size"):
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{path}: {key} must be a positive integer, got {value!r}")
    if not isinstance(manifest.get("meta"), dict):
        raise UserInputError(f"{path}: 'meta' must be a JSON object")
    if not isinstance(manifest.get("complete"), bool):
        raise UserInputError(f"{path}: 'complete' must be true or false")
