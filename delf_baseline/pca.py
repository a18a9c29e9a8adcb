"""The PCA that official DELF applies to its local descriptors, read from the released files.

Official DELF (delf_config_example.pbtxt) maps each L2-normalised 1024-d descriptor `x` to
`y = P[:K] (x - m)` with `K = 40` (`delf_gld_20190411`'s config: 128) and no whitening,
then L2-normalises `y` again. The mean `m` (D) and the matrix `P` (D x D, one principal
direction per row, strongest first) ship as `mean.datum` and `pca_proj_mat.datum` in
DatumProto format. This module reads those files directly (it decodes the protobuf wire
format itself, so neither the `delf` package nor its generated protobuf code is needed), and
also a plain `.npz` holding `mean` (D) and `projection` (K x D). Whitening (the official
`pca_variances` file) is not supported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from lmkcomp.errors import UserInputError

#: file names of the official PCA parameters inside their folder (e.g. `delf_gld_20190411/pca/`)
OFFICIAL_MEAN_FILE = "mean.datum"
OFFICIAL_PROJECTION_FILE = "pca_proj_mat.datum"
#: output dimension of official DELF local descriptors (delf_config_example.pbtxt)
OFFICIAL_PCA_DIM = 40

# Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# DatumProto field numbers: shape (DatumShape {repeated int64 dim = 1}) and
# float_list (FloatList {repeated float value = 1}); repeated fields may come packed or not.
_DATUM_SHAPE, _DATUM_FLOAT_LIST, _REPEATED_VALUE = 1, 2, 1


@dataclass(frozen=True, eq=False)
class PcaProjection:
    """`y = projection @ (x - mean)` for each descriptor `x`: D -> K dimensions.

    `mean`: D float32; `projection`: K x D float32, K <= D, one output direction per row.
    Construction converts both to float32 and raises UserInputError for wrong shapes or
    non-finite values.
    """

    mean: np.ndarray
    projection: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32)
        projection = np.asarray(self.projection, dtype=np.float32)
        if mean.ndim != 1 or mean.size < 1:
            raise UserInputError(f"PCA mean must be a non-empty vector, got shape {mean.shape}")
        if projection.ndim != 2 or projection.shape[1] != mean.size or not 1 <= projection.shape[0] <= mean.size:
            raise UserInputError(f"PCA projection must be K x {mean.size} with 1 <= K <= {mean.size}, "
                                 f"got shape {projection.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(projection).all()):
            raise UserInputError("PCA mean or projection holds non-finite values")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "projection", projection)

    @property
    def input_dim(self) -> int:
        """D, the dimension of the descriptors it takes."""
        return self.mean.size

    @property
    def dim(self) -> int:
        """K, the dimension of the descriptors it returns."""
        return self.projection.shape[0]

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        """N x D descriptors -> N x K float32 projections (not normalised)."""
        return (np.asarray(descriptors, dtype=np.float32) - self.mean) @ self.projection.T

    def fingerprint(self) -> str:
        """First 16 hex digits of the SHA-256 of mean and projection: names the parameters
        in a store's settings, whatever file they came from."""
        digest = hashlib.sha256(self.mean.tobytes())
        digest.update(self.projection.tobytes())
        return digest.hexdigest()[:16]


def load_pca(path: str | Path, dim: int | None = OFFICIAL_PCA_DIM) -> PcaProjection:
    """The PCA stored at `path`, keeping its first `dim` output directions (all when None).

    `path` is either a folder holding the official `mean.datum` and `pca_proj_mat.datum`,
    or a `.npz` file with arrays `mean` (D) and `projection` (K x D). Raises UserInputError
    for a missing or malformed file and for a `dim` above the number of directions stored.
    """
    path = Path(path)
    if path.is_dir():
        mean = read_datum(path / OFFICIAL_MEAN_FILE)
        projection = read_datum(path / OFFICIAL_PROJECTION_FILE)
    elif not path.exists():
        raise UserInputError(f"{path}: PCA file not found")
    elif path.suffix == ".npz":
        mean, projection = _read_npz(path)
    else:
        raise UserInputError(f"{path}: unknown PCA format: expected a .npz file or a folder holding "
                             f"{OFFICIAL_MEAN_FILE} and {OFFICIAL_PROJECTION_FILE}")
    # The official mean is stored as a D vector; accept a 1 x D row as well.
    mean = mean.reshape(-1) if mean.ndim == 2 and 1 in mean.shape else mean
    if projection.ndim != 2:
        raise UserInputError(f"{path}: PCA projection must be a matrix, got shape {projection.shape}")
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise UserInputError(f"PCA dim must be a positive integer or None, got {dim!r}")
        if dim > projection.shape[0]:
            raise UserInputError(f"{path}: PCA has {projection.shape[0]} output directions, "
                                 f"fewer than the {dim} requested")
        projection = projection[:dim]
    try:
        return PcaProjection(mean, projection)
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in ("mean", "projection") if key not in arrays.files]
            if missing:
                raise UserInputError(f"{path}: missing array(s) {', '.join(missing)}; "
                                     "expected 'mean' (D) and 'projection' (K x D)")
            return arrays["mean"], arrays["projection"]
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: unreadable .npz: {exc}") from None


# --------------------------------------------------------------------------------------------
# DatumProto


def read_datum(path: str | Path) -> np.ndarray:
    """The float32 array stored in a DatumProto file (delf/protos/datum.proto).

    Only the `float_list` payload is supported (the one DELF writes for PCA parameters).
    Raises UserInputError for a missing file, a damaged message or values that do not fill
    the stored shape.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read DatumProto file: {exc.strerror or exc}") from None
    try:
        shape: list[int] = []
        values: list[np.ndarray] = []
        for field, wire, payload in _fields(data):
            if field == _DATUM_SHAPE and wire == _LEN:
                shape.extend(_repeated_ints(payload))
            elif field == _DATUM_FLOAT_LIST and wire == _LEN:
                values.extend(_repeated_floats(payload))
            elif field > _DATUM_FLOAT_LIST:
                raise UserInputError(f"{path}: DatumProto field {field} is not supported "
                                     "(only float_list values are)")
    except (ValueError, IndexError) as exc:
        raise UserInputError(f"{path}: not a DatumProto file: {exc}") from None
    flat = np.concatenate(values) if values else np.zeros(0, np.float32)
    if not shape or int(np.prod(shape)) != flat.size:
        raise UserInputError(f"{path}: DatumProto holds {flat.size} values for shape {shape}")
    return flat.reshape(shape)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """`(field number, wire type, payload)` of each field of a serialised message; the
    payload is an int for varints and the raw bytes otherwise."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            payload, position = _varint(data, position)
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            payload, position = data[position:position + size], position + size
        elif wire == _LEN:
            size, position = _varint(data, position)
            payload, position = data[position:position + size], position + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if position > len(data):
            raise ValueError("message truncated")
        yield field, wire, payload


def _repeated_ints(message: bytes) -> Iterator[int]:
    """Values of field 1 of `message`, an int64 field written packed or not."""
    for field, wire, payload in _fields(message):
        if field != _REPEATED_VALUE:
            continue
        if wire == _VARINT:
            yield payload
        elif wire == _LEN:
            position = 0
            while position < len(payload):
                value, position = _varint(payload, position)
                yield value
        else:
            raise ValueError(f"integer field with wire type {wire}")


def _repeated_floats(message: bytes) -> Iterator[np.ndarray]:
    """Chunks of the values of field 1 of `message`, a float field written packed or not."""
    for field, wire, payload in _fields(message):
        if field != _REPEATED_VALUE:
            continue
        if wire not in (_LEN, _I32) or len(payload) % 4:
            raise ValueError(f"float field with wire type {wire} and {len(payload)} bytes")
        # Protobuf stores floats as little-endian IEEE 754 single precision.
        yield np.frombuffer(payload, dtype="<f4").astype(np.float32)
