"""The JSON manifests that describe the kit's on-disk artifacts (embedding stores, local-feature
stores, pair tables): each names its format and version, so a reader refuses a folder that holds
something else, or an artifact written by an incompatible version, with a clear message."""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

from lmkcomp.csvfile import shown
from lmkcomp.data.gldv2 import is_valid_id
from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write, atomic_write_bytes
from lmkcomp.idarrays import IdIndex


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


def check_store_fields(manifest: dict, path: Path, planned_shards: Callable[[int, int], list],
                       sizes: Sequence[str] = ("dim", "count", "shard_size")) -> None:
    """The fields every sharded store's manifest has: the positive integers `sizes`, a `meta`
    object, a `complete` flag, and `shards` equal to `planned_shards(count, shard_size)`."""
    for key in sizes:
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{path}: {key} must be a positive integer, got {value!r}")
    if not isinstance(manifest.get("meta"), dict):
        raise UserInputError(f"{path}: 'meta' must be a JSON object")
    if not isinstance(manifest.get("complete"), bool):
        raise UserInputError(f"{path}: 'complete' must be true or false")
    if manifest.get("shards") != planned_shards(manifest["count"], manifest["shard_size"]):
        raise UserInputError(f"{path}: 'shards' do not cut {manifest['count']} rows every {manifest['shard_size']} rows")


MANIFEST_NAME = "manifest.json"
IDS_NAME = "ids.txt"
#: the file locked while a worker rewrites the manifest of a store others are writing too
MANIFEST_LOCK_NAME = ".manifest.lock"
#: manifest key of a store's rows that hold no data because their image could not be read:
#: a list of {"row", "id", "reason"} sorted by row (absent in stores written before it existed)
SKIPPED_KEY = "skipped"


def check_ids(ids: Sequence[str]) -> None:
    """Reject an empty list, ids that are not GLDv2 ids and duplicates (rows must be unique)."""
    if not ids:
        raise UserInputError("no ids to store")
    seen: dict[str, int] = {}
    for row, image_id in enumerate(ids):
        if not isinstance(image_id, str) or not is_valid_id(image_id):
            raise UserInputError(f"row {row}: invalid image id {image_id!r}: expected 16 hexadecimal characters")
        if image_id in seen:
            raise UserInputError(f"id {image_id} appears twice, at rows {seen[image_id]} and {row}")
        seen[image_id] = row


def new_store_manifest(format_name: str, version: int, fields: dict, shards: list, meta: dict) -> dict:
    """The manifest of a sharded store not yet written: its format, `fields` (sizes, dtype,
    method...), the planned `shards`, `complete` false and the free-form `meta`."""
    return {"format": format_name, "version": version, **fields, "shards": shards, "complete": False, "meta": meta}


#: manifest key of the command that writes a store (e.g. "lmkcomp extract"), named when the
#: store is found unfinished; absent or null for stores written by library code alone
COMMAND_KEY = "command"


def refuse_incomplete(directory: Path, kind: str, manifest: dict, missing: str | None) -> None:
    """Raise UserInputError unless the store in `directory` is complete: `missing` says which
    shard is missing (e.g. "shard 1 missing"), if one is, else the manifest's `complete` flag
    decides. The message says how to finish it: every writer resumes, so rerunning the command
    that wrote it does."""
    if missing is None and manifest["complete"]:
        return
    detail = missing if missing is not None else "not marked finished"
    command = manifest.get(COMMAND_KEY)
    advice = (f"run the same {command} command again to finish it" if isinstance(command, str) and command
              else "run the command that wrote it again, with the same arguments, to finish it")
    raise UserInputError(f"{directory}: incomplete {kind} ({detail}); {advice}")


def read_ids(directory: Path, name: str = IDS_NAME) -> list[str]:
    """The ids of a store, one per line of `directory/name` (default `ids.txt`), in row order."""
    path = directory / name
    try:
        return path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable id list: {exc}") from None


def open_ids(directory: Path, name: str = IDS_NAME, count: int | None = None) -> IdIndex:
    """The ids of a store, `directory/name` (default `ids.txt`) memory-mapped as an `IdIndex`:
    for the readers of big stores, and the workers that write some of a store's shards, which
    look ids up or name them but need no list of str. The file must be as the writers write it,
    one GLDv2 id a line, each line ending in a newline, and hold `count` ids (the manifest's
    count of rows) when `count` is given. Writer workers (`reopen`) open ids this way and trust the
    list the driver checked: as a list of str, checked again, GLDv2 train's 4.1 M ids cost every
    worker about 300 MB held and 700 MB at its peak; mapped, 8 bytes an id."""
    path = directory / name
    try:
        ids = IdIndex.open(path)
        if ids is not None:
            if count is not None and len(ids) != count:
                raise UserInputError(f"{path}: {len(ids)} ids, but the manifest counts {count} images")
            return ids
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise UserInputError(f"{path}: unreadable id list: {exc}") from None
    # Not lines of ids: name the first line that is not an id, else the last line's missing newline.
    for number, line in enumerate(lines[:-1], 1):
        text = line.decode("ascii", "replace")
        if not is_valid_id(text):
            raise UserInputError(f"{path}: line {number}: {shown(text)} is not an image id "
                                 "(16 hexadecimal characters)")
    raise UserInputError(f"{path}: line {len(lines)} does not end with a newline")


def reopen_writer(cls: type, directory: Path, manifest: dict, *fields: str):
    """A writer of class `cls` for the store begun in `directory` (its `manifest` already read),
    made without its constructor's creation and checks: `_settings(directory, ids, *settings)`
    with the ids mapped (`open_ids`, counted) and the manifest's `fields` as the settings. How a
    worker writes some shards of a store its driver created or checked."""
    writer = cls.__new__(cls)
    writer._settings(directory, open_ids(directory, count=manifest["count"]), *(manifest[name] for name in fields))
    return writer


def write_manifest(directory: Path, manifest: dict) -> None:
    with atomic_write(directory / MANIFEST_NAME, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")


def create_store(directory: Path, ids: Sequence[str], manifest: dict, shard_pattern: str) -> None:
    """Start a new store: the id list, then the manifest (its presence tells a resumed run that
    ids.txt is complete). Shard files without a manifest mean a foreign or broken folder."""
    if directory.is_dir() and any(directory.glob(shard_pattern)):
        raise UserInputError(f"{directory}: holds shard files but no {MANIFEST_NAME}; "
                             "choose another folder or delete this one")
    atomic_write_bytes(directory / IDS_NAME, "".join(f"{i}\n" for i in ids).encode("ascii"))
    write_manifest(directory, manifest)


def mark_complete(directory: Path, pending: Sequence[tuple[int, object]], read: Callable[[Path], dict]) -> None:
    """Set `complete` in the manifest of the store in `directory` (read, checked, by `read`);
    `pending` (its writer's `pending_shards()`) must be empty."""
    if pending:
        raise RuntimeError(f"{directory}: cannot finish: {len(pending)} shards not written, first: shard {pending[0][0]}")
    manifest = read(directory)
    if not manifest["complete"]:
        manifest["complete"] = True
        write_manifest(directory, manifest)


def record_skipped(directory: Path, read: Callable[[Path], dict], ids: Sequence[str], rows: slice,
                   skipped: Sequence[tuple[int, str]]) -> None:
    """Record in the manifest of the store in `directory` (read, checked, by `read`) which of the
    rows `rows` of `ids` hold no data because their image could not be read: `skipped` lists
    `(row within rows, reason)`.

    Entries already recorded for those rows are replaced, so a shard written again by a resumed
    run leaves none stale; the manifest is rewritten only when the list changes. Writers call
    this before writing the shard, so a shard on disk always has its entries recorded. Workers
    writing other shards of the same store at once (a process pool, Ray tasks on a shared
    filesystem) each change only their own rows; the read-modify-write of the manifest is made
    under an exclusive lock (`MANIFEST_LOCK_NAME`, flock) so that none loses another's entries.
    """
    if _skipped_entries(read(directory), ids, rows, skipped) is None:
        return  # nothing to change for these rows: no lock, and no lock file in the store
    with open(directory / MANIFEST_LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read(directory)  # again, under the lock: another worker may have changed it
        entries = _skipped_entries(manifest, ids, rows, skipped)
        if entries is not None:
            manifest[SKIPPED_KEY] = entries
            write_manifest(directory, manifest)


def _skipped_entries(manifest: dict, ids: Sequence[str], rows: slice,
                     skipped: Sequence[tuple[int, str]]) -> list[dict] | None:
    """The manifest's skipped list with the entries of `rows` replaced by `skipped`; None when
    that is the list it already holds."""
    recorded = manifest.get(SKIPPED_KEY, [])
    kept = [entry for entry in recorded if not rows.start <= entry["row"] < rows.stop]
    added = [{"row": rows.start + row, "id": ids[rows.start + row], "reason": reason} for row, reason in skipped]
    entries = sorted(kept + added, key=lambda entry: entry["row"])
    return None if entries == recorded else entries


def read_skipped(manifest: dict, path: Path, ids: Sequence[str]) -> list[dict]:
    """The skipped rows a store's manifest (read from `path`) records, each checked to name a row
    of `ids`, that row's id and a reason; none when the manifest has no such list."""
    entries = manifest.get(SKIPPED_KEY, [])
    if not isinstance(entries, list):
        raise UserInputError(f"{path}: '{SKIPPED_KEY}' must be a list")
    for position, entry in enumerate(entries):
        row = entry.get("row") if isinstance(entry, dict) else None
        if (isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < len(ids)
                or entry.get("id") != ids[row] or not isinstance(entry.get("reason"), str)):
            raise UserInputError(f"{path}: '{SKIPPED_KEY}' entry {position} must name a row of the store, "
                                 "that row's id and a reason")
    return entries


def describe_skipped(directory: Path, skipped: Sequence[dict]) -> str | None:
    """The line a command prints about a store's skipped images; None when there are none."""
    if not skipped:
        return None
    if len(skipped) == 1:
        return f"1 image could not be read and was skipped; its id is in {directory / MANIFEST_NAME}"
    return f"{len(skipped)} images could not be read and were skipped; their ids are in {directory / MANIFEST_NAME}"


def first_difference(a: Sequence[str], b: Sequence[str]) -> int | None:
    """First row where `a` and `b` differ (a row past the end of one counts); None if equal."""
    if a == b:
        return None
    common = min(len(a), len(b))
    return next((row for row in range(common) if a[row] != b[row]), common)


def describe_store_difference(found: dict, wanted: dict, keys: Sequence[str], found_ids: Sequence[str],
                              wanted_ids: Sequence[str]) -> str | None:
    """What differs between a store on disk and the one requested (None: nothing): the first
    differing manifest key of `keys`, else the first differing `meta` key, else the first row."""
    for key in keys:
        if found[key] != wanted[key]:
            return f"{key} {found[key]!r} on disk vs {wanted[key]!r} requested"
    if found["meta"] != wanted["meta"]:
        key = next(k for k in sorted(set(found["meta"]) | set(wanted["meta"]))
                   if (k in found["meta"]) != (k in wanted["meta"]) or found["meta"].get(k) != wanted["meta"].get(k))
        return (f"meta {key!r}: {found['meta'].get(key, 'absent')!r} on disk vs "
                f"{wanted['meta'].get(key, 'absent')!r} requested")
    row = first_difference(found_ids, wanted_ids)
    if row is None:
        return None
    found_id = found_ids[row] if row < len(found_ids) else "no id"
    wanted_id = wanted_ids[row] if row < len(wanted_ids) else "no id"
    return f"row {row}: id {found_id} on disk vs {wanted_id} requested"


def first_setting_difference(found: object, wanted: object, key: str = "") -> str | None:
    """`KEY: VALUE on disk vs VALUE requested` for the first differing (nested) key, or None."""
    if isinstance(found, dict) and isinstance(wanted, dict):
        for name in [*wanted, *(name for name in found if name not in wanted)]:
            problem = first_setting_difference(found.get(name), wanted.get(name), f"{key}.{name}" if key else name)
            if problem is not None:
                return problem
        return None
    return None if found == wanted else f"{key}: {found!r} on disk vs {wanted!r} requested"


def fingerprint(payload: object, digits: int = 10) -> str:
    """The first `digits` hex digits of the SHA-256 of `payload` as sorted JSON (values JSON
    cannot hold are written with str): a short, stable name for what a work folder holds."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


def ids_sha256(ids: Sequence[str]) -> str:
    """SHA-256 of an id list, one id a line, in order: names the list in a manifest."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("ascii")).hexdigest()
