"""DELF / DELG SavedModel extraction: PCA files, post-processing, and the command run on
small models that have the official export signatures.

TensorFlow is never imported in this process: models are built, and features extracted, in
child processes (TensorFlow beside torchvision aborts the process on this platform).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from delf_baseline.pca import PcaProjection, load_pca, read_datum
from delf_baseline.savedmodel import (
    MODULE,
    OFFICIAL_SCALES,
    DelfSavedModelExtractor,
    postprocess,
    run_in_subprocess,
)
from lmkcomp.data import synthetic
from lmkcomp.data.images import fit_within, read_image_size
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.local.extractors import create_local_extractor
from lmkcomp.local.store import LocalFeatureStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Quiet TensorFlow's start-up logging in the children; errors still show.
CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
HEAVY_MODULES = ("torch", "torchvision", "timm", "tensorflow")

# Builds three models in a TensorFlow-only child process, each with an official interface:
# - pyramid: export_local_model.py's signature; a fixed random 8x8 patch embedding on every
#   pyramid level (16-d features, attention 100 * softplus of one more channel), the patch as
#   receptive box mapped back by the level's scale, features kept at attention >= threshold,
#   the best input_max_feature_num of all levels;
# - delg: export_local_and_global_model.py's signature; one fixed box (ymin, xmin, ymax,
#   xmax) = (10, 20, 30, 60) whose descriptor echoes the inputs: (threshold, max features,
#   number of scales, image height, image width, 1);
# - tf1: a TF1 graph export (no signature) with the DELF tensor names; one feature per
#   pyramid level: the whole image as box, descriptor (scale, threshold, 1), score 10 * scale;
# - other: a TF2 export whose signature is not DELF's.
BUILD_MODELS = r'''
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

DEPTH, STRIDE = 16, 8


def local_specs():
    return [tf.TensorSpec([None, None, 3], tf.uint8, name="input_image"),
            tf.TensorSpec([None], tf.float32, name="input_scales"),
            tf.TensorSpec((), tf.int32, name="input_max_feature_num"),
            tf.TensorSpec((), tf.float32, name="input_abs_thres")]


class PyramidDelf(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(0.0, 0.05, (STRIDE, STRIDE, 3, DEPTH + 1)).astype(np.float32))

    @tf.function(input_signature=local_specs())
    def ExtractFeatures(self, input_image, input_scales, input_max_feature_num, input_abs_thres):
        image = (tf.cast(input_image, tf.float32)[None] - 128.0) / 128.0
        size = tf.cast(tf.shape(input_image)[:2], tf.float32)
        boxes, features = tf.zeros([0, 4]), tf.zeros([0, DEPTH])
        scales, scores = tf.zeros([0]), tf.zeros([0])
        for i in tf.range(tf.size(input_scales)):
            tf.autograph.experimental.set_loop_options(shape_invariants=[
                (boxes, tf.TensorShape([None, 4])), (features, tf.TensorShape([None, DEPTH])),
                (scales, tf.TensorShape([None])), (scores, tf.TensorShape([None]))])
            scale = input_scales[i]
            level = tf.image.resize(image, tf.cast(tf.round(size * scale), tf.int32))
            fmap = tf.nn.conv2d(level, self.kernel, strides=STRIDE, padding="VALID")[0]
            y, x = tf.meshgrid(tf.range(tf.shape(fmap)[0]), tf.range(tf.shape(fmap)[1]), indexing="ij")
            corner = tf.cast(tf.reshape(tf.stack([y, x], -1), [-1, 2]) * STRIDE, tf.float32)
            level_boxes = tf.concat([corner, corner + (STRIDE - 1)], 1) / scale
            attention = 100.0 * tf.nn.softplus(tf.reshape(fmap[..., 0], [-1]))
            keep = tf.reshape(tf.where(attention >= input_abs_thres), [-1])
            boxes = tf.concat([boxes, tf.gather(level_boxes, keep)], 0)
            features = tf.concat([features, tf.gather(tf.reshape(fmap[..., 1:], [-1, DEPTH]), keep)], 0)
            scales = tf.concat([scales, tf.fill([tf.size(keep)], 1.0 / scale)], 0)
            scores = tf.concat([scores, tf.gather(attention, keep)], 0)
        top = tf.math.top_k(scores, tf.minimum(input_max_feature_num, tf.size(scores)))
        return {"boxes": tf.gather(boxes, top.indices), "features": tf.gather(features, top.indices),
                "scales": tf.gather(scales, top.indices), "scores": top.values[:, None]}


class OneBoxDelg(tf.Module):
    @tf.function(input_signature=local_specs() + [tf.TensorSpec([None], tf.int32, name="input_global_scales_ind")])
    def ExtractFeatures(self, input_image, input_scales, input_max_feature_num, input_abs_thres,
                        input_global_scales_ind):
        size = tf.cast(tf.shape(input_image)[:2], tf.float32)
        echo = tf.concat([[input_abs_thres, tf.cast(input_max_feature_num, tf.float32),
                           tf.cast(tf.size(input_scales), tf.float32)], size, [1.0]], 0)
        return {"boxes": tf.constant([[10.0, 20.0, 30.0, 60.0]]), "features": echo[None],
                "scales": tf.ones([1]), "scores": tf.constant([[7.0]]),
                "global_descriptors": tf.zeros([tf.size(input_global_scales_ind), 4])}


class Other(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": 2.0 * x}


def save_tf1(path):
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [None, None, 3], name="input_image")
        scales = tf.compat.v1.placeholder(tf.float32, [None], name="input_scales")
        tf.compat.v1.placeholder(tf.int32, [], name="input_max_feature_num")
        threshold = tf.compat.v1.placeholder(tf.float32, [], name="input_abs_thres")
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        ones = tf.ones_like(scales)
        tf.identity(tf.tile(tf.concat([[0.0, 0.0], size - 1.0], 0)[None], [tf.size(scales), 1]), name="boxes")
        tf.identity(tf.stack([scales, threshold * ones, ones], 1), name="features")
        tf.identity(1.0 / scales, name="scales")
        tf.identity(10.0 * scales[:, None], name="scores")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING])
            builder.save()


out = Path(sys.argv[1])
# Saved like the official exporters: no explicit signatures, so the one input-signed
# tf.function becomes `serving_default`.
tf.saved_model.save(PyramidDelf(), str(out / "pyramid"))
tf.saved_model.save(OneBoxDelg(), str(out / "delg"))
save_tf1(out / "tf1")
tf.saved_model.save(Other(), str(out / "other"))
'''

# Runs the command several times in one child (one TensorFlow start-up) and reports the exit
# codes and which heavy modules the extractions imported.
EXTRACT_ALL = r'''
import json, sys
from delf_baseline.savedmodel import main
codes = [main(json.loads(argv)) for argv in sys.argv[1:]]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "tensorflow"))
print(json.dumps({"codes": codes, "heavy": heavy}))
'''


def run_python(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=CHILD_ENV, capture_output=True,
                          text=True, timeout=timeout, check=False)


def expect_ok(completed: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def image_sizes(data: LandmarkData, split: str, ids: list[str]) -> list[tuple[int, int]]:
    return [read_image_size(data.image_path(split, image_id)) for image_id in ids]


def ratios(descriptors: np.ndarray) -> np.ndarray:
    """Each row divided by its last entry: undoes the L2 normalisation of an echo vector."""
    descriptors = descriptors.astype(np.float64)
    return descriptors / descriptors[:, -1:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> LandmarkData:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=96), seed=0, progress=False)
    return LandmarkData(root)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models")
    # From a file, not `-c`: AutoGraph reads the source of the functions it converts.
    script = out / "build_models.py"
    script.write_text(BUILD_MODELS)
    expect_ok(run_python([str(script), str(out)]))
    return out


@pytest.fixture(scope="module")
def pca_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    directions, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    path = tmp_path_factory.mktemp("pca") / "pca.npz"
    np.savez(path, mean=0.1 * rng.normal(size=16), projection=directions[:8])
    return path


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """A folder that passes the extractor's checks; loading it would fail."""
    (tmp_path / "saved_model.pb").write_bytes(b"")
    return tmp_path


# --------------------------------------------------------------------------------------------
# PCA files


def datum_class(packed: bool):
    """A protobuf class for delf.protos.DatumProto, built at run time (the delf package and
    its generated code are not installed)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="datum.proto", package="delf.protos", syntax="proto2")
    for name, kind in (("DatumShape", field.TYPE_INT64), ("FloatList", field.TYPE_FLOAT)):
        value = proto.message_type.add(name=name).field.add(
            name="dim" if name == "DatumShape" else "value", number=1, type=kind, label=field.LABEL_REPEATED)
        value.options.packed = packed
    datum = proto.message_type.add(name="DatumProto")
    datum.field.add(name="shape", number=1, type=field.TYPE_MESSAGE, type_name=".delf.protos.DatumShape",
                    label=field.LABEL_OPTIONAL)
    datum.field.add(name="float_list", number=2, type=field.TYPE_MESSAGE, type_name=".delf.protos.FloatList",
                    label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("delf.protos.DatumProto"))


def write_datum(path: Path, array: np.ndarray, packed: bool = True) -> None:
    datum = datum_class(packed)()
    datum.shape.dim.extend(array.shape)
    datum.float_list.value.extend(array.astype(float).flat)
    path.write_bytes(datum.SerializeToString())


@pytest.mark.parametrize("packed", [True, False])
def test_official_pca_folder_is_read_without_the_delf_package(tmp_path, packed):
    rng = np.random.default_rng(0)
    mean, matrix = rng.normal(size=12).astype(np.float32), rng.normal(size=(12, 12)).astype(np.float32)
    write_datum(tmp_path / "mean.datum", mean, packed)
    write_datum(tmp_path / "pca_proj_mat.datum", matrix, packed)
    np.testing.assert_array_equal(read_datum(tmp_path / "pca_proj_mat.datum"), matrix)
    pca = load_pca(tmp_path, dim=5)
    assert (pca.input_dim, pca.dim) == (12, 5)
    np.testing.assert_array_equal(pca.mean, mean)
    np.testing.assert_array_equal(pca.projection, matrix[:5])
    x = rng.normal(size=(3, 12)).astype(np.float32)
    np.testing.assert_allclose(pca.apply(x), (x - mean) @ matrix[:5].T, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserInputError, match="12 output directions, fewer than the 40"):
        load_pca(tmp_path)


def test_pca_file_errors(tmp_path, pca_file):
    assert load_pca(pca_file, dim=None).dim == 8
    truncated = tmp_path / "bad.datum"
    truncated.write_bytes(b"\x0a\x05\x0a\x03\x02")
    with pytest.raises(UserInputError, match="bad.datum: not a DatumProto file"):
        read_datum(truncated)
    with pytest.raises(UserInputError, match="PCA file not found"):
        load_pca(tmp_path / "nothing.npz")
    np.savez(tmp_path / "partial.npz", mean=np.zeros(4))
    with pytest.raises(UserInputError, match="missing array.*projection"):
        load_pca(tmp_path / "partial.npz")
    with pytest.raises(UserInputError, match="mean.datum: cannot read"):
        load_pca(tmp_path)
    with pytest.raises(UserInputError, match="must be K x 4"):
        PcaProjection(np.zeros(4), np.zeros((2, 5)))


# --------------------------------------------------------------------------------------------
# Post-processing and the extractor, without TensorFlow


def test_postprocess_maps_box_centres_to_original_pixels():
    boxes = np.array([[10, 20, 30, 60], [0, 0, 8, 8], [2, 2, 4, 4]], dtype=np.float32)
    features = np.array([[3, 4, 0], [0, 0, 2], [1, 1, 1]], dtype=np.float32)
    scores = np.array([[1.0], [5.0], [0.5]], dtype=np.float32)
    # The model saw a 50 x 25 copy of a 100 x 50 image: 2 original pixels per model pixel.
    features_out = postprocess(boxes, features, scores, (100, 50), (50, 25), max_features=2)
    np.testing.assert_array_equal(features_out.scores, [5.0, 1.0])
    # Centre (4, 4) -> (4.5 * 2 - 0.5) = 8.5; centre (x 40, y 20) -> (80.5, 40.5).
    np.testing.assert_allclose(features_out.locations, [[8.5, 8.5], [80.5, 40.5]])
    np.testing.assert_allclose(features_out.scales, [16.0, np.sqrt(80.0 * 40.0)], rtol=1e-6)
    np.testing.assert_allclose(features_out.descriptors, [[0, 0, 1], [0.6, 0.8, 0]], atol=1e-7)
    # Without a downscale the model's centres are kept as they are.
    same = postprocess(boxes, features, scores, (50, 25), (50, 25), max_features=3)
    np.testing.assert_allclose(same.locations, [[4, 4], [40, 20], [3, 3]])
    pca = PcaProjection(np.array([0.1, 0.0, 0.0]), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    projected = postprocess(boxes, features, scores, (50, 25), (50, 25), max_features=3, pca=pca)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = (unit - pca.mean) @ pca.projection.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(projected.descriptors, expected[[1, 0, 2]], rtol=1e-6, atol=1e-7)


def test_extractor_options_and_registry_without_tensorflow(tmp_path, fake_model, pca_file):
    with pytest.raises(UserInputError, match="missing: SavedModel folder not found"):
        DelfSavedModelExtractor(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no saved_model.pb"):
        DelfSavedModelExtractor(tmp_path / "empty")
    for bad in ({"scales": ()}, {"scales": (1.0, -0.5)}, {"max_features": 0}, {"score_threshold": float("nan")},
                {"max_image_size": 4}, {"method": ""}, {"descriptor_dim": 0}, {"pca": "pca.npz"},
                {"pca": load_pca(pca_file, dim=8), "descriptor_dim": 128}):
        with pytest.raises(UserInputError):
            DelfSavedModelExtractor(fake_model, **bad)

    delg = create_local_extractor("delf-tf", model_dir=str(fake_model), score_threshold=454.6, max_image_size=1024)
    assert isinstance(delg, DelfSavedModelExtractor)
    assert (delg.dim, delg.raw_dim, delg.scales) == (128, 128, OFFICIAL_SCALES)
    delf = DelfSavedModelExtractor(fake_model, pca=load_pca(pca_file, dim=8), max_features=np.int64(5))
    settings = json.loads(json.dumps(delf.settings()))
    assert (delf.dim, delf.raw_dim, settings["max_features"]) == (8, 16, 5)
    assert settings["pca"] == {"input_dim": 16, "dim": 8, "fingerprint": delf.pca.fingerprint()}
    assert settings["model_dir"] == str(fake_model.resolve())
    assert "tensorflow" not in sys.modules


def test_extract_downscales_and_checks_the_model_output(fake_model):
    extractor = DelfSavedModelExtractor(fake_model, max_image_size=40, descriptor_dim=2)
    seen = []

    def model_fn(image):
        seen.append(image.shape)
        return np.array([[1.0, 3.0, 5.0, 7.0]]), np.array([[0.0, 2.0]]), np.array([[9.0]])

    # A stand-in for the loaded TensorFlow model; pickling must leave it behind.
    object.__setattr__(extractor, "_model_fn", model_fn)
    features = extractor.extract(np.zeros((50, 80, 3), np.uint8))
    assert seen == [(25, 40, 3)]
    np.testing.assert_allclose(features.locations, [[(5.0 + 0.5) * 2 - 0.5, (3.0 + 0.5) * 2 - 0.5]])
    np.testing.assert_allclose(features.descriptors, [[0.0, 1.0]])
    assert len(extractor.extract(np.zeros((50, 8, 3), np.uint8))) == 0  # 6 x 40 after the downscale
    assert pickle.loads(pickle.dumps(extractor))._model_fn is None
    object.__setattr__(extractor, "descriptor_dim", 3)
    with pytest.raises(UserInputError, match=r"descriptors of shape \(1, 2\), expected N x 3"):
        extractor.extract(np.zeros((20, 20, 3), np.uint8))


def test_import_path_is_free_of_torch_and_tensorflow():
    code = ("import json, sys, delf_baseline.savedmodel, lmkcomp.local.extract, lmkcomp.data.layout, "
            "lmkcomp.data.images, lmkcomp.local.record, lmkcomp.local.store, lmkcomp.local.extractors; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r})))")
    assert json.loads(expect_ok(run_python(["-c", code])).stdout) == []


def test_missing_model_is_a_one_line_user_error(tmp_path, data):
    missing = tmp_path / "no-such-model"
    completed = run_python(["-m", MODULE, "--model", str(missing), "--data", str(data.root),
                            "--split", "test", "--out", str(tmp_path / "store")])
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [f"{MODULE}: error: {missing}: SavedModel folder not found"]
    with pytest.raises(UserInputError, match=f"exit code 2.*{re.escape(str(missing))}: SavedModel folder not found"):
        run_in_subprocess(missing, data.root, "test", tmp_path / "store")


# --------------------------------------------------------------------------------------------
# Extraction with real SavedModels, in child processes


def test_pyramid_model_with_pca_through_the_command(tmp_path, data, models, pca_file):
    out = tmp_path / "store"
    store = run_in_subprocess(models / "pyramid", data.root, "test", out, pca=pca_file, pca_dim=8,
                              scales=(0.5, 1.0), max_features=20, score_threshold=60.0)
    ids = data.split_ids("test")
    assert store.ids == ids and store.dim == 8 and store.method == "delf-tf"
    assert store.meta["settings"]["pca"]["fingerprint"] == load_pca(pca_file, dim=8).fingerprint()
    total = 0
    for image_id, (width, height) in zip(ids, image_sizes(data, "test", ids)):
        features = store.get(image_id)
        total += len(features)
        assert len(features) <= 20
        np.testing.assert_allclose(np.linalg.norm(features.descriptors.astype(np.float32), axis=1), 1.0, atol=2e-3)
        assert np.all(features.scores >= 60.0) and np.all(np.diff(features.scores) <= 0)
        x, y = features.locations.T
        assert np.all((x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5))
        # Boxes are 8-pixel patches (side 7) of the level, mapped back by 1 / scale.
        assert set(np.round(features.scales, 3)) <= {7.0, 14.0}
    assert total > len(ids)
    # The store records the settings: another extraction into it is refused, not mixed in.
    with pytest.raises(UserInputError, match="already holds a different local-feature store"):
        run_in_subprocess(models / "pyramid", data.root, "test", out, pca=pca_file, pca_dim=8,
                          scales=(0.5, 1.0), max_features=10, score_threshold=60.0)


@pytest.fixture(scope="module")
def delg_and_tf1_stores(tmp_path_factory, data, models) -> tuple[LocalFeatureStore, LocalFeatureStore, dict]:
    """Both stores, and the child's report plus its stderr; a third and a fourth run try
    models that are no DELF export (exit code 2 expected)."""
    out = tmp_path_factory.mktemp("stores")
    common = ["--data", str(data.root), "--split", "test", "--quiet"]
    delg = ["--model", str(models / "delg"), "--out", str(out / "delg"), "--max-image-size", "48",
            "--descriptor-dim", "6", "--max-features", "50", "--score-threshold", "123.5", "--method", "delg-tf"]
    tf1 = ["--model", str(models / "tf1"), "--out", str(out / "tf1"), "--descriptor-dim", "3",
           "--scales", "0.5", "1", "2", "--max-features", "2", "--score-threshold", "5"]
    (out / "broken").mkdir()
    (out / "broken" / "saved_model.pb").write_bytes(b"")
    others = [["--model", str(models / "other"), "--out", str(out / "other")],
              ["--model", str(out / "broken"), "--out", str(out / "broken-store")]]
    runs = [delg + common, tf1 + common] + [argv + common for argv in others]
    completed = expect_ok(run_python(["-c", EXTRACT_ALL, *map(json.dumps, runs)]))
    report = {**json.loads(completed.stdout.strip().splitlines()[-1]), "stderr": completed.stderr}
    return LocalFeatureStore(out / "delg"), LocalFeatureStore(out / "tf1"), report


def test_delg_signature_inputs_and_downscaled_box_centres(data, delg_and_tf1_stores):
    store = delg_and_tf1_stores[0]
    assert store.method == "delg-tf" and store.dim == 6
    for image_id, (width, height) in zip(store.ids, image_sizes(data, "test", store.ids)):
        features = store.get(image_id)
        model_width, model_height = fit_within((width, height), 48)
        factor_x, factor_y = width / model_width, height / model_height
        # The box (ymin, xmin, ymax, xmax) = (10, 20, 30, 60) has its centre at x 40, y 20.
        np.testing.assert_allclose(features.locations, [[40.5 * factor_x - 0.5, 20.5 * factor_y - 0.5]], rtol=1e-6)
        np.testing.assert_allclose(features.scales, [np.sqrt(40 * factor_x * 20 * factor_y)], rtol=1e-6)
        np.testing.assert_allclose(features.scores, [7.0])
        # The echo: threshold, max features, the 7 official scales, the downscaled size.
        np.testing.assert_allclose(ratios(features.descriptors), [[123.5, 50, 7, model_height, model_width, 1]],
                                   rtol=3e-3)


def test_tf1_export_is_run_through_its_graph_tensors(data, delg_and_tf1_stores):
    store = delg_and_tf1_stores[1]
    assert store.dim == 3
    for image_id, (width, height) in zip(store.ids, image_sizes(data, "test", store.ids)):
        features = store.get(image_id)
        # One feature per level, scores 10 * scale: the best 2 are the levels 2 and 1.
        np.testing.assert_allclose(features.scores, [20.0, 10.0])
        np.testing.assert_allclose(ratios(features.descriptors), [[2, 5, 1], [1, 5, 1]], rtol=3e-3)
        np.testing.assert_allclose(features.locations, [[(width - 1) / 2, (height - 1) / 2]] * 2)
        np.testing.assert_allclose(features.scales, [np.sqrt((width - 1) * (height - 1))] * 2, rtol=1e-6)


def test_extraction_imports_tensorflow_but_no_torch(delg_and_tf1_stores, models):
    report = delg_and_tf1_stores[2]
    assert report["codes"] == [0, 0, 2, 2]
    assert (f"{MODULE}: error: {models / 'other'}: no 'serving_default' signature with inputs input_image, "
            "input_scales, input_max_feature_num, input_abs_thres (found ['x'])") in report["stderr"]
    assert "broken: cannot load the SavedModel: " in report["stderr"]
    assert "tensorflow" in report["heavy"]
    assert not [name for name in report["heavy"] if name.split(".")[0] != "tensorflow"]
