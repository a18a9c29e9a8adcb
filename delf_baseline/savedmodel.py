"""Local features from an official DELF / DELG TensorFlow SavedModel, in the kit's format.

Process isolation. On this platform a process that imports TensorFlow and then torchvision
aborts ("LLVM ERROR: inconsistency in registered CommandLine options"), and the reverse order
is fragile. So TensorFlow is imported only when an extractor loads its model, this module's
import path pulls in neither torch nor timm, and the way to run it from a process that has
torch loaded is a child process: `python -m delf_baseline.savedmodel ...` (see `main`), or
`run_in_subprocess` from Python.

The models. Both export kinds of the DELF project (github.com/tensorflow/models,
research/delf) are read:

- TF2 exports (`export_local_model.py`, and DELG's `export_local_and_global_model.py`):
  signature `serving_default` with inputs `input_image` (uint8, H x W x 3), `input_scales`
  (float32, S: the image pyramid), `input_max_feature_num` (int32 scalar) and
  `input_abs_thres` (float32 scalar: minimum attention score), plus for DELG
  `input_global_scales_ind` (int32, G); outputs `boxes`, `features`, `scales`, `scores`
  (and DELG's `global_descriptors`, not used here).
- TF1 exports (the older DELF releases, which the official extractor loads without
  `is_tf2_exported`, e.g. `delf_v1_20171026`): no signature; the same tensors by graph name (`input_image:0`, `input_scales:0`, `input_abs_thres:0`,
  `input_max_feature_num:0` -> `boxes:0`, `features:0`, `scales:0`, `scores:0`), reached
  by pruning the loaded graph.

The outputs: `boxes` N x 4 receptive-field boxes (ymin, xmin, ymax, xmax) in pixels of the
image given to the model (the model maps every pyramid level back to it), `features` N x D
raw descriptors, `scores` N x 1 attention, `scales` N the inverse pyramid scale. The model
keeps the features with attention >= `input_abs_thres` at every level and at most
`input_max_feature_num` of them.

The post-processing is DELF's (`postprocess`): keypoint = box centre, descriptors
L2-normalised, then optionally projected by PCA and L2-normalised again. The settings of
the official configs (the defaults are DELF's: 7-level pyramid `OFFICIAL_SCALES`, 1000
features, threshold 100, no downscale):

- DELF `delf_v1_20171026`: defaults, `pca=load_pca(".../pca")` (1024 -> 40 dimensions);
  `delf_gld_20190411`: the same with `load_pca(".../pca", dim=128)`.
- DELF trained on GLDv2 with the TF2 code: defaults, no PCA, 128-d descriptors.
- DELG local features (`r50delg_gldv2clean`): `score_threshold=454.6`,
  `max_image_size=1024`, no PCA, 128-d descriptors (`descriptor_dim`'s default).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from delf_baseline.pca import OFFICIAL_PCA_DIM, PcaProjection, load_pca
from lmkcomp.commands.args import data_options, quiet_options, shard_options, workers_options
from lmkcomp.checks import positive_int
from lmkcomp.data.images import fit_within
from lmkcomp.errors import UserInputError
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.store import LocalFeatureStore

log = logging.getLogger(__name__)

#: the image pyramid of official DELF and DELG extraction
OFFICIAL_SCALES = (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)
#: raw descriptor dimension of DELG and of TF2 DELF exports (their autoencoder's output)
DEFAULT_DESCRIPTOR_DIM = 128
#: images with a side below this many pixels (after any downscale) get no features, as in
#: the official extractor: the network's feature map would be empty
MIN_SIDE = 10

SIGNATURE_KEY = "serving_default"
IMAGE_INPUT = "input_image"
SCALES_INPUT = "input_scales"
MAX_FEATURES_INPUT = "input_max_feature_num"
THRESHOLD_INPUT = "input_abs_thres"
GLOBAL_SCALES_INPUT = "input_global_scales_ind"
LOCAL_INPUTS = (IMAGE_INPUT, SCALES_INPUT, MAX_FEATURES_INPUT, THRESHOLD_INPUT)
#: the outputs read; `scales` (the inverse pyramid scale) is implied by the box size
USED_OUTPUTS = ("boxes", "features", "scores")
#: TF1 graph tensors, in the order the pruned function takes and returns them
TF1_FEEDS = ("input_image:0", "input_scales:0", "input_abs_thres:0", "input_max_feature_num:0")
TF1_FETCHES = ("boxes:0", "features:0", "scores:0")

MODULE = "delf_baseline.savedmodel"
EXIT_USER_ERROR = 2
ERROR_PREFIX = f"{MODULE}: error: "

_EPS = 1e-12

#: one image (uint8 H x W x 3) -> the model's boxes, features and scores as numpy arrays
ModelFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), _EPS)


def postprocess(boxes: np.ndarray, features: np.ndarray, scores: np.ndarray,
                image_size: tuple[int, int], model_input_size: tuple[int, int],
                max_features: int, pca: PcaProjection | None = None) -> LocalFeatures:
    """DELF's post-processing of one model output, as features of the original image.

    - `boxes`: N x 4 (ymin, xmin, ymax, xmax) in pixels of the image the model was given,
      whose (width, height) is `model_input_size`; the original image's is `image_size`.
    - `features`: N x D raw descriptors; `scores`: N (or N x 1) attention scores.

    Output rows are sorted by decreasing score (ties keep model order), at most
    `max_features`. Locations are the box centres mapped to original pixels with the kit's
    convention (pixel centres at integer coordinates: `x = (x' + 0.5) * W / W' - 0.5`);
    without a downscale they are the model's centres unchanged. Scales are the box side in
    original pixels (geometric mean of its width and height). Descriptors are
    L2-normalised, then with `pca` projected and L2-normalised again. Raises ValueError
    for arrays of inconsistent shapes.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    features = np.asarray(features, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    count = scores.shape[0]
    if boxes.shape != (count, 4) or features.ndim != 2 or features.shape[0] != count:
        raise ValueError(f"inconsistent model outputs: boxes {boxes.shape}, features {features.shape}, "
                         f"scores ({count},)")
    order = np.argsort(-scores, kind="stable")[:max_features]
    boxes, features, scores = boxes[order], features[order], scores[order]
    (width, height), (input_width, input_height) = image_size, model_input_size
    factor_x, factor_y = width / input_width, height / input_height
    centre_x = (boxes[:, 1] + boxes[:, 3]) / 2
    centre_y = (boxes[:, 0] + boxes[:, 2]) / 2
    locations = np.stack([(centre_x + 0.5) * factor_x - 0.5, (centre_y + 0.5) * factor_y - 0.5], axis=1)
    sides = np.sqrt(np.abs((boxes[:, 3] - boxes[:, 1]) * factor_x * (boxes[:, 2] - boxes[:, 0]) * factor_y))
    descriptors = _l2_normalise(features)
    if pca is not None:
        descriptors = _l2_normalise(pca.apply(descriptors))
    return LocalFeatures(locations.astype(np.float32), descriptors.astype(np.float32),
                         sides.astype(np.float32), scores)


@dataclass(frozen=True)
class DelfSavedModelExtractor:
    """Local features of an exported DELF / DELG model (see the module docstring).

    - `model_dir`: the SavedModel folder (holding `saved_model.pb`).
    - `scales`: the image pyramid; `max_features`: features kept per image;
      `score_threshold`: minimum attention score (the model's `input_abs_thres`).
    - `pca`: projection applied after L2 normalisation (official DELF: `load_pca`, 40-d);
      None keeps the raw descriptors (DELG).
    - `max_image_size`: when the image's long side exceeds it, the model gets a copy
      downscaled (Pillow bilinear, as the official extractor) to that long side; locations
      and scales are mapped back to the given image. None: full resolution.
    - `method`: the store's method name (e.g. "delg-tf" for a DELG model).
    - `descriptor_dim`: the model's raw descriptor dimension; default `pca.input_dim` with
      a PCA, else 128. Checked against every model output.

    Construction checks the options and that `model_dir` holds a SavedModel, without
    importing TensorFlow; the model is loaded on the first `extract` in each process (never
    in a process with torchvision loaded, see the module docstring).
    """

    model_dir: str | Path
    scales: Sequence[float] = OFFICIAL_SCALES
    max_features: int = 1000
    score_threshold: float = 100.0
    pca: PcaProjection | None = None
    max_image_size: int | None = None
    method: str = "delf-tf"
    descriptor_dim: int | None = None
    _model_fn: ModelFn | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        model_dir = Path(self.model_dir)
        if not model_dir.is_dir():
            raise UserInputError(f"{model_dir}: SavedModel folder not found")
        if not any((model_dir / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise UserInputError(f"{model_dir}: not a TensorFlow SavedModel folder (no saved_model.pb)")
        try:
            scales = tuple(float(scale) for scale in self.scales)
        except (TypeError, ValueError):
            raise UserInputError(f"scales must be numbers, got {self.scales!r}") from None
        if not scales or not all(np.isfinite(scale) and scale > 0 for scale in scales):
            raise UserInputError(f"scales must be positive and finite, at least one, got {self.scales!r}")
        max_features = positive_int("max_features", self.max_features)
        if isinstance(self.score_threshold, bool) or not isinstance(self.score_threshold, (int, float)) \
                or not np.isfinite(self.score_threshold):
            raise UserInputError(f"score_threshold must be a finite number, got {self.score_threshold!r}")
        if self.max_image_size is not None and (isinstance(self.max_image_size, bool) or not isinstance(
                self.max_image_size, int) or self.max_image_size < MIN_SIDE):
            raise UserInputError(f"max_image_size must be an integer of at least {MIN_SIDE} or None, "
                                 f"got {self.max_image_size!r}")
        if not isinstance(self.method, str) or not self.method:
            raise UserInputError(f"method must be a non-empty string, got {self.method!r}")
        if self.pca is not None and not isinstance(self.pca, PcaProjection):
            raise UserInputError(f"pca must be a PcaProjection (see load_pca) or None, got {type(self.pca).__name__}")
        descriptor_dim = self.descriptor_dim
        if descriptor_dim is not None:
            descriptor_dim = positive_int("descriptor_dim", descriptor_dim)
            if self.pca is not None and descriptor_dim != self.pca.input_dim:
                raise UserInputError(f"descriptor_dim {descriptor_dim} differs from the PCA's input "
                                     f"dimension {self.pca.input_dim}")
        # Frozen dataclass: the normalised values replace the given ones once, here.
        object.__setattr__(self, "model_dir", model_dir)
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "max_features", max_features)
        object.__setattr__(self, "descriptor_dim", descriptor_dim)
        object.__setattr__(self, "score_threshold", float(self.score_threshold))

    def __getstate__(self) -> dict[str, Any]:
        # A loaded TensorFlow model does not pickle; each worker process loads its own.
        return {**self.__dict__, "_model_fn": None}

    @property
    def raw_dim(self) -> int:
        """Dimension of the model's descriptors, before any PCA."""
        if self.descriptor_dim is not None:
            return self.descriptor_dim
        return self.pca.input_dim if self.pca is not None else DEFAULT_DESCRIPTOR_DIM

    @property
    def dim(self) -> int:
        """Dimension of the stored descriptors: the PCA's output, else the raw dimension."""
        return self.pca.dim if self.pca is not None else self.raw_dim

    def settings(self) -> dict[str, Any]:
        pca = None if self.pca is None else {
            "input_dim": self.pca.input_dim, "dim": self.pca.dim, "fingerprint": self.pca.fingerprint()}
        return {
            "method": self.method,
            "model_dir": str(Path(self.model_dir).resolve()),
            "scales": list(self.scales),
            "max_features": self.max_features,
            "score_threshold": self.score_threshold,
            "max_image_size": self.max_image_size,
            "descriptor_dim": self.raw_dim,
            "pca": pca,
        }

    def extract(self, image_rgb: np.ndarray) -> LocalFeatures:
        """Features of an H x W x 3 uint8 RGB image, locations in its pixels.

        Raises ValueError for another array and UserInputError for a model that cannot be
        loaded or returns descriptors of another dimension than `raw_dim`.
        """
        if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB array, got shape {image_rgb.shape} "
                             f"dtype {image_rgb.dtype}")
        height, width = image_rgb.shape[:2]
        model_input = image_rgb
        if self.max_image_size is not None and max(height, width) > self.max_image_size:
            size = fit_within((width, height), self.max_image_size)
            model_input = np.asarray(Image.fromarray(image_rgb).resize(size, Image.Resampling.BILINEAR))
        input_height, input_width = model_input.shape[:2]
        if min(input_height, input_width) < MIN_SIDE:
            return LocalFeatures.empty(self.dim)
        boxes, features, scores = self._model()(model_input)
        if features.ndim != 2 or features.shape[1] != self.raw_dim:
            raise UserInputError(f"{self.model_dir}: the model returns descriptors of shape {features.shape}, "
                                 f"expected N x {self.raw_dim} (set descriptor_dim, or a PCA of that input dim)")
        return postprocess(boxes, features, scores, (width, height), (input_width, input_height),
                           self.max_features, self.pca)

    def _model(self) -> ModelFn:
        if self._model_fn is None:
            object.__setattr__(self, "_model_fn", load_model_fn(
                self.model_dir, self.scales, self.max_features, self.score_threshold))
        return self._model_fn


# --------------------------------------------------------------------------------------------
# Loading a model (the only place TensorFlow is imported)


def load_model_fn(model_dir: str | Path, scales: Sequence[float], max_features: int,
                  score_threshold: float) -> ModelFn:
    """The exported model in `model_dir` as a function image -> (boxes, features, scores),
    its other inputs fixed. TF2 exports are called through `serving_default`, TF1 exports
    through their pruned graph. Raises UserInputError for a folder that does not load or
    is not a DELF / DELG local-feature export.
    """
    # Imported here, never at module level: see the module docstring.
    import tensorflow as tf

    try:
        model = tf.saved_model.load(str(model_dir))
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise UserInputError(f"{model_dir}: cannot load the SavedModel: {_first_line(exc)}") from None
    scales_tensor = tf.constant(list(scales), dtype=tf.float32)
    max_features_tensor = tf.constant(max_features, dtype=tf.int32)
    threshold_tensor = tf.constant(score_threshold, dtype=tf.float32)

    signature = dict(model.signatures).get(SIGNATURE_KEY)
    inputs = set(signature.structured_input_signature[1]) if signature is not None else set()
    if set(LOCAL_INPUTS) <= inputs:
        unknown = sorted(inputs - set(LOCAL_INPUTS) - {GLOBAL_SCALES_INPUT})
        missing = sorted(set(USED_OUTPUTS) - set(signature.structured_outputs))
        if unknown or missing:
            raise UserInputError(f"{model_dir}: signature {SIGNATURE_KEY!r} is not a DELF/DELG local-feature one "
                                 f"(unknown inputs {unknown}, missing outputs {missing})")
        arguments = {SCALES_INPUT: scales_tensor, MAX_FEATURES_INPUT: max_features_tensor,
                     THRESHOLD_INPUT: threshold_tensor}
        if GLOBAL_SCALES_INPUT in inputs:
            # DELG also computes global descriptors, which are not kept here; every pyramid
            # level is the official default when a config names none.
            arguments[GLOBAL_SCALES_INPUT] = tf.range(len(scales), dtype=tf.int32)

        def run_signature(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            outputs = signature(**{IMAGE_INPUT: tf.constant(image)}, **arguments)
            return tuple(outputs[name].numpy() for name in USED_OUTPUTS)

        return run_signature

    if not hasattr(model, "prune"):
        raise UserInputError(f"{model_dir}: no {SIGNATURE_KEY!r} signature with inputs {', '.join(LOCAL_INPUTS)} "
                             f"(found {sorted(inputs) or 'none'}); not a DELF/DELG local-feature export")
    try:
        pruned = model.prune(feeds=list(TF1_FEEDS), fetches=list(TF1_FETCHES))
    except (KeyError, ValueError) as exc:
        raise UserInputError(f"{model_dir}: a TF1 SavedModel without the DELF tensors "
                             f"({', '.join(TF1_FEEDS + TF1_FETCHES)}): {_first_line(exc)}") from None

    def run_pruned(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outputs = pruned(tf.constant(image), scales_tensor, threshold_tensor, max_features_tensor)
        return tuple(output.numpy() for output in outputs)

    return run_pruned


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Command line, and running it as a child process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=MODULE, parents=[data_options(), shard_options(1000, "images per store shard"),
                              workers_options("processes, each loading the model (TensorFlow already uses every core)"),
                              quiet_options()],
        description="Extract the local features of a split with an exported DELF/DELG TensorFlow model "
                    "into a local-feature store (resumable). Runs TensorFlow in this process only.")
    parser.add_argument("--model", required=True, help="SavedModel folder (holding saved_model.pb)")
    parser.add_argument("--split", required=True, help="split to extract: train, index or test")
    parser.add_argument("--out", required=True, help="local-feature store folder (resumed when present)")
    parser.add_argument("--pca", help="PCA: folder with the official mean.datum and pca_proj_mat.datum, "
                                      "or .npz with 'mean' (D) and 'projection' (K x D); default: none (DELG)")
    parser.add_argument("--pca-dim", type=int, default=OFFICIAL_PCA_DIM,
                        help="PCA output dimension: the first rows of the projection (default: %(default)s)")
    parser.add_argument("--descriptor-dim", type=int,
                        help="the model's raw descriptor dimension (default: the PCA's input, else 128)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(OFFICIAL_SCALES),
                        help="image pyramid (default: %(default)s)")
    parser.add_argument("--max-features", type=int, default=1000)
    parser.add_argument("--score-threshold", type=float, default=100.0,
                        help="minimum attention score (DELF: 100; DELG r50 gldv2clean: 454.6)")
    parser.add_argument("--max-image-size", type=int,
                        help="downscale images whose long side exceeds this (DELG: 1024; default: none)")
    parser.add_argument("--method", default="delf-tf", help="method name recorded in the store")
    parser.add_argument("--skip-bad", action="store_true", help="store unreadable images with no features")
    parser.add_argument("--verbose", action="store_true")
    return parser


def _extract(args: argparse.Namespace) -> int:
    # Imported here so that `--help` and argument errors answer without loading pandas.
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.local.extract import extract_local_split
    from lmkcomp.manifest import describe_skipped

    pca = load_pca(args.pca, args.pca_dim) if args.pca is not None else None
    extractor = DelfSavedModelExtractor(
        args.model, scales=args.scales, max_features=args.max_features, score_threshold=args.score_threshold,
        pca=pca, max_image_size=args.max_image_size, method=args.method, descriptor_dim=args.descriptor_dim)
    data = LandmarkData(args.data, args.layout)
    store = extract_local_split(data, args.split, args.out, extractor, shard_size=args.shard_size,
                                workers=args.workers, progress=not args.quiet, skip_bad=args.skip_bad,
                                command=f"python -m {MODULE}")
    print(f"{args.out}: {extractor.method} local features ({extractor.dim}-d) of {len(store)} {args.split} images")
    skipped = describe_skipped(store.directory, store.skipped)
    if skipped is not None:
        print(skipped)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m delf_baseline.savedmodel`: extract a split; user errors -> one line, exit 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _extract(args)
    except UserInputError as error:
        print(f"{ERROR_PREFIX}{error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{MODULE}: interrupted", file=sys.stderr)
        return 130


def run_in_subprocess(model_dir: str | Path, data: str | Path, split: str, out: str | Path, *,
                      layout: str = "gldv2", pca: str | Path | None = None, pca_dim: int = OFFICIAL_PCA_DIM,
                      descriptor_dim: int | None = None, scales: Sequence[float] = OFFICIAL_SCALES,
                      max_features: int = 1000, score_threshold: float = 100.0,
                      max_image_size: int | None = None, method: str = "delf-tf", shard_size: int = 1000,
                      workers: int = 1, skip_bad: bool = False) -> LocalFeatureStore:
    """Run `python -m delf_baseline.savedmodel` with these options in a child process (the
    safe way from a process that has torch loaded) and return the finished store.

    The child's output is captured (no progress bar). Raises UserInputError with the child's
    error line (or its last stderr line) when it fails.
    """
    argv = ["--model", str(model_dir), "--data", str(data), "--layout", layout, "--split", split,
            "--out", str(out), "--pca-dim", str(pca_dim), "--scales", *map(str, scales),
            "--max-features", str(max_features), "--score-threshold", repr(float(score_threshold)),
            "--method", method, "--shard-size", str(shard_size), "--workers", str(workers), "--quiet"]
    if pca is not None:
        argv += ["--pca", str(pca)]
    if descriptor_dim is not None:
        argv += ["--descriptor-dim", str(descriptor_dim)]
    if max_image_size is not None:
        argv += ["--max-image-size", str(max_image_size)]
    if skip_bad:
        argv.append("--skip-bad")
    # The child must run this very code, installed or not: put its root first on the path.
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", MODULE, *argv], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        ours = [line[len(ERROR_PREFIX):] for line in lines if line.startswith(ERROR_PREFIX)]
        reason = ours[-1] if ours else lines[-1] if lines else "no message"
        raise UserInputError(f"DELF extraction failed (exit code {result.returncode}): {reason}")
    log.info("%s", result.stdout.strip())
    return LocalFeatureStore(out)


if __name__ == "__main__":
    # Run the copy imported under the package name, not this `__main__` one, so that the
    # extractor pickled for worker processes names `delf_baseline.savedmodel`.
    from delf_baseline.savedmodel import main as _main

    raise SystemExit(_main())
