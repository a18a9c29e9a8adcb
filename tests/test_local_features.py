"""Local features: the record, the sharded store, SIFT / RootSIFT and split-wide extraction."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tracemalloc

import cv2
import numpy as np
import pytest

from lmkcomp.data import scenes, synthetic
from lmkcomp.data.images import read_image_size
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError, UserInputError
from lmkcomp.local.extract import extract_local_split
from lmkcomp.local.extractors import LOCAL_EXTRACTORS, create_local_extractor
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.sift import SiftExtractor
from lmkcomp.local.store import LocalFeatureStore, LocalFeatureWriter, shard_file


def make_ids(count: int) -> list[str]:
    return [f"{i:016x}" for i in range(count)]


def random_features(rng: np.random.Generator, count: int, dim: int = 8) -> LocalFeatures:
    descriptors = rng.normal(size=(count, dim)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return LocalFeatures(rng.uniform(0, 500, (count, 2)), descriptors, rng.uniform(1, 30, count), rng.random(count))


def write_store(directory, records, shard_size, shards=None, meta=None, method="test") -> LocalFeatureWriter:
    """Write the shards numbered in `shards` (all when None); finish only when all were written."""
    ids = make_ids(len(records))
    writer = LocalFeatureWriter(directory, ids, records[0].dim, method, meta=meta, shard_size=shard_size)
    for k, rows in writer.pending_shards():
        if shards is None or k in shards:
            writer.write_shard(k, records[rows])
    if shards is None:
        writer.finish()
    return writer


@pytest.fixture
def records() -> list[LocalFeatures]:
    rng = np.random.default_rng(0)
    # Some images without any feature, as a blank photo gives.
    counts = [0 if i % 7 == 3 else int(rng.integers(1, 40)) for i in range(23)]
    return [random_features(rng, count) for count in counts]


# --------------------------------------------------------------------------------------------
# LocalFeatures


def test_record_converts_dtypes_and_keeps_float16_descriptors():
    record = LocalFeatures(np.zeros((2, 2), np.float64), np.ones((2, 3), np.float16), [1, 2], [0.5, 0.25])
    assert record.locations.dtype == np.float32 and record.scales.dtype == np.float32
    assert record.descriptors.dtype == np.float16
    assert len(record) == 2 and record.dim == 3
    assert LocalFeatures(np.zeros((1, 2)), np.ones((1, 3), np.int64), [1], [1]).descriptors.dtype == np.float32


@pytest.mark.parametrize("locations, descriptors, scales, scores, message", [
    (np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), np.zeros(2), "locations"),
    (np.zeros((2, 2)), np.zeros((3, 4)), np.zeros(2), np.zeros(2), "descriptors"),
    (np.zeros((2, 2)), np.zeros(4), np.zeros(2), np.zeros(2), "descriptors"),
    (np.zeros((2, 2)), np.zeros((2, 4)), np.zeros(3), np.zeros(2), "scales"),
    (np.zeros((2, 2)), np.zeros((2, 4)), np.zeros(2), np.zeros((2, 1)), "scores"),
    (np.full((2, 2), np.nan), np.zeros((2, 4)), np.zeros(2), np.zeros(2), "non-finite"),
])
def test_record_rejects_inconsistent_arrays(locations, descriptors, scales, scores, message):
    with pytest.raises(ValueError, match=message):
        LocalFeatures(locations, descriptors, scales, scores)


@pytest.mark.parametrize("image_size", [(0, 10), (10,), (10.0, 20), (True, 5), "640x480"])
def test_record_rejects_a_bad_image_size(image_size):
    with pytest.raises(ValueError, match="image_size must be"):
        LocalFeatures(np.zeros((1, 2)), np.ones((1, 3)), [1], [1], image_size)


def test_empty_record_and_top_k():
    empty = LocalFeatures.empty(40)
    assert len(empty) == 0 and empty.dim == 40 and len(empty.top_k(5)) == 0

    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1], np.float32)
    record = LocalFeatures(np.arange(10).reshape(5, 2), np.eye(5), np.arange(5), scores)
    top = record.top_k(3)
    # Decreasing score; the tie 0.9 / 0.9 keeps the original order (row 1 before row 3).
    np.testing.assert_array_equal(top.scores, scores[[1, 3, 2]])
    np.testing.assert_array_equal(top.locations[:, 0], [2, 6, 4])
    np.testing.assert_array_equal(top.descriptors, np.eye(5)[[1, 3, 2]])
    np.testing.assert_array_equal(top.scales, [1, 3, 2])
    assert len(record.top_k(10)) == 5


# --------------------------------------------------------------------------------------------
# Store


def test_store_round_trip_over_several_shards(tmp_path, records):
    write_store(tmp_path / "lf", records, shard_size=10, meta={"split": "index", "scales": (1, 2)})
    store = LocalFeatureStore(tmp_path / "lf")
    assert store.ids == make_ids(23) and len(store) == 23
    assert store.method == "test" and store.dim == 8
    assert store.meta == {"split": "index", "scales": [1, 2]}
    assert sorted(p.name for p in (tmp_path / "lf").glob("descriptors-*.npy")) == [
        "descriptors-00000.npy", "descriptors-00001.npy", "descriptors-00002.npy"]
    assert np.load(tmp_path / "lf" / "descriptors-00000.npy").dtype == np.float16
    assert np.load(tmp_path / "lf" / "offsets-00002.npy").shape == (4,)

    for image_id, expected in zip(store.ids, records):
        got = store.get(image_id)
        assert got.descriptors.dtype == np.float16 and len(got) == len(expected)
        np.testing.assert_allclose(got.descriptors, expected.descriptors, atol=1e-3)
        np.testing.assert_array_equal(got.locations, expected.locations)
        np.testing.assert_array_equal(got.scales, expected.scales)
        np.testing.assert_array_equal(got.scores, expected.scores)
    assert make_ids(1)[0] in store and "ffffffffffffffff" not in store


def test_opening_a_store_and_looking_ids_up_holds_under_10_bytes_an_id(tmp_path):
    """Every verification or DELF recognition worker opens the stores: GLDv2 train's 4.1 M ids
    cost each worker about 590 MB as a list of str and a dict from id to row. Now the id list
    stays memory-mapped (page cache, shared) and a worker holds the order that sorts it."""
    count = 20_000
    ids = [f"{(i * 7919) % count:016x}" for i in range(count)]
    writer = LocalFeatureWriter(tmp_path / "lf", ids, 8, "test", shard_size=count)
    writer.write_shard(0, [LocalFeatures.empty(8)] * count)
    writer.finish()
    tracemalloc.start()
    store = LocalFeatureStore(tmp_path / "lf")
    assert (store.rows(ids[::-1]) == np.arange(count)[::-1]).all() and ids[7] in store and len(store.get(ids[7])) == 0
    store._open.clear()  # the shard's offsets and sizes, read by `get`: not the ids' cost
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held < 10 * count  # the old list and dict: about 130 bytes an id


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("0000000000000002", "000000000000000A"),
     "ids.txt: line 3: '000000000000000A' is not an image id (16 hexadecimal characters)"),
    (lambda text: text.rstrip("\n"), "ids.txt: line 23 does not end with a newline"),
    (lambda text: text.replace("\n", "\r\n"), "ids.txt: line 1: '0000000000000000\\r' is not an image id"),
])
def test_store_refuses_an_id_list_its_writer_would_not_write(tmp_path, records, edit, message):
    write_store(tmp_path / "lf", records, shard_size=10)
    path = tmp_path / "lf" / "ids.txt"
    path.write_text(edit(path.read_text()), newline="")
    with pytest.raises(UserInputError, match=re.escape(message)):
        LocalFeatureStore(tmp_path / "lf")


def test_store_keeps_image_sizes(tmp_path, records):
    sized = [dataclasses.replace(r, image_size=(100 + i, 50 + i)) if i % 5 else r for i, r in enumerate(records)]
    write_store(tmp_path / "lf", sized, shard_size=10)
    store = LocalFeatureStore(tmp_path / "lf")
    assert store.image_sizes
    assert [store.read(i).image_size for i in range(23)] == [None if i % 5 == 0 else (100 + i, 50 + i)
                                                             for i in range(23)]
    # Selections keep the size of their image.
    assert store.read(1).top_k(2).image_size == (101, 51)


def test_a_store_written_before_image_sizes_reads_without_them(tmp_path, records, caplog):
    """A store of the earlier layout (no `image_sizes` in the manifest, no sizes files) still
    reads, and resumes, without sizes, saying that its tolerances stay in pixels."""
    directory = tmp_path / "lf"
    write_store(directory, records, shard_size=10, shards={0, 1})
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["image_sizes"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    for path in directory.glob("sizes-*.npy"):
        path.unlink()
    write_store(directory, records, shard_size=10)
    assert not list(directory.glob("sizes-*.npy"))
    with caplog.at_level(logging.WARNING):
        store = LocalFeatureStore(directory)
    assert not store.image_sizes and store.read(22).image_size is None
    assert "written before image sizes were recorded" in caplog.text


def test_store_reads_through_memory_maps_and_evicts_old_shards(tmp_path, records):
    write_store(tmp_path / "lf", records, shard_size=10)
    store = LocalFeatureStore(tmp_path / "lf", max_open_shards=1)
    first = store.read(0)
    assert isinstance(first.descriptors.base, np.memmap) and not first.descriptors.flags.writeable
    # Reading shards in turn with a single open slot evicts each; results stay right.
    for row in (22, 1, 15, 0):
        np.testing.assert_array_equal(store.read(row).locations, records[row].locations)
    np.testing.assert_array_equal(first.locations, records[0].locations)
    with pytest.raises(IndexError):
        store.read(23)
    with pytest.raises(UserInputError, match="not in the store"):
        store.get("ffffffffffffffff")


def test_store_resumes_with_the_missing_shards(tmp_path, records):
    directory = tmp_path / "lf"
    write_store(directory, records, shard_size=10, shards={0, 2})
    with pytest.raises(UserInputError, match="shard 1 missing"):
        LocalFeatureStore(directory)

    writer = LocalFeatureWriter(directory, make_ids(23), 8, "test", shard_size=10)
    assert [k for k, _ in writer.pending_shards()] == [1]
    with pytest.raises(RuntimeError, match="shard 1"):
        writer.finish()
    written = (directory / shard_file("descriptors", 0)).stat().st_mtime_ns
    k, rows = writer.pending_shards()[0]
    assert rows == slice(10, 20)
    writer.write_shard(k, records[rows])
    writer.finish()
    assert (directory / shard_file("descriptors", 0)).stat().st_mtime_ns == written
    store = LocalFeatureStore(directory)
    np.testing.assert_array_equal(store.read(12).scores, records[12].scores)


def test_shard_without_its_offsets_file_is_pending(tmp_path, records):
    """Offsets are written last: a shard killed before them is redone, not trusted."""
    directory = tmp_path / "lf"
    write_store(directory, records, shard_size=10)
    (directory / shard_file("offsets", 1)).unlink()
    writer = LocalFeatureWriter(directory, make_ids(23), 8, "test", shard_size=10)
    assert [k for k, _ in writer.pending_shards()] == [1]


def test_missing_shard_file_is_a_clear_error(tmp_path, records):
    directory = tmp_path / "lf"
    write_store(directory, records, shard_size=10)
    (directory / shard_file("scales", 2)).unlink()
    with pytest.raises(UserInputError, match=r"shard 2 missing \(scales-00002.npy\)"):
        LocalFeatureStore(directory)


def test_unfinished_store_is_refused(tmp_path, records):
    directory = tmp_path / "lf"
    write_store(directory, records, shard_size=100, shards={0})
    with pytest.raises(UserInputError, match="not marked finished"):
        LocalFeatureStore(directory)


@pytest.mark.parametrize("change, message", [
    ({"ids": make_ids(22) + ["00000000000000ff"]}, "row 22: id 0000000000000016 on disk vs 00000000000000ff"),
    ({"ids": make_ids(24)}, "count 23 on disk vs 24"),
    ({"method": "delf"}, "method 'test' on disk vs 'delf'"),
    ({"dim": 40}, "dim 8 on disk vs 40"),
    ({"meta": {"split": "test"}}, "meta"),
    ({"shard_size": 5}, "shard_size 10 on disk vs 5"),
])
def test_writer_refuses_a_different_store(tmp_path, records, change, message):
    write_store(tmp_path / "lf", records, shard_size=10, meta={"split": "index"})
    options = {"ids": make_ids(23), "dim": 8, "method": "test", "meta": {"split": "index"}, "shard_size": 10}
    options.update(change)
    with pytest.raises(UserInputError, match=message):
        LocalFeatureWriter(tmp_path / "lf", **options)


def _files(directory) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_a_reopened_writer_writes_the_shards_of_the_writer_that_began_the_store(tmp_path, records):
    """A worker's writer (`reopen`) holds the store's ids memory-mapped; the shards and skipped
    images it records are those the driver's own writer would write, byte for byte."""
    skipped = {0: [(3, "file not found")], 1: [(7, "empty file")], 2: []}  # records 3 and 17 have no features
    driver = LocalFeatureWriter(tmp_path / "two", make_ids(23), 8, "test", {"split": "index"}, 10)
    worker = LocalFeatureWriter.reopen(tmp_path / "two")
    assert not isinstance(worker.ids, list) and worker.ids == make_ids(23)
    for k, rows in worker.pending_shards():
        worker.write_shard(k, records[rows], skipped[k])
    driver.finish()
    reference = LocalFeatureWriter(tmp_path / "three", make_ids(23), 8, "test", {"split": "index"}, 10)
    for k, rows in reference.pending_shards():
        reference.write_shard(k, records[rows], skipped[k])
    reference.finish()
    assert _files(tmp_path / "two") == _files(tmp_path / "three")
    assert [(e["row"], e["id"]) for e in LocalFeatureStore(tmp_path / "two").skipped] == \
        [(3, make_ids(23)[3]), (17, make_ids(23)[17])]


def test_reopening_a_writer_refuses_an_id_list_the_manifest_does_not_count(tmp_path, records):
    write_store(tmp_path / "lf", records, shard_size=10, shards={0})
    path = tmp_path / "lf" / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in make_ids(22)))
    with pytest.raises(UserInputError, match="ids.txt: 22 ids, but the manifest counts 23 images"):
        LocalFeatureWriter.reopen(tmp_path / "lf")


def test_writer_checks_its_input(tmp_path, records):
    writer = LocalFeatureWriter(tmp_path / "lf", make_ids(23), 8, "test", shard_size=10)
    with pytest.raises(ValueError, match="9 records, expected 10"):
        writer.write_shard(0, records[:9])
    with pytest.raises(ValueError, match="4-dimensional"):
        writer.write_shard(2, [LocalFeatures.empty(4)] * 3)
    with pytest.raises(ValueError, match="overflow float16"):
        writer.write_shard(2, [LocalFeatures.empty(8), random_features(np.random.default_rng(1), 2),
                               LocalFeatures(np.zeros((1, 2)), np.full((1, 8), 1e6), [1], [1])])
    with pytest.raises(IndexError):
        writer.write_shard(3, [])
    with pytest.raises(UserInputError, match="appears twice"):
        LocalFeatureWriter(tmp_path / "other", make_ids(2) * 2, 8, "test")
    with pytest.raises(UserInputError, match="invalid image id"):
        LocalFeatureWriter(tmp_path / "other", ["not-an-id"], 8, "test")
    assert json.loads((tmp_path / "lf" / "manifest.json").read_text())["shards"] == [10, 10, 3]


# --------------------------------------------------------------------------------------------
# SIFT and RootSIFT


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    scene = scenes.make_landmark(np.random.default_rng(5))
    return scenes.render_photo(scene, np.random.default_rng(6), 256)


def test_registry_builds_sift_and_rootsift():
    assert {"sift", "rootsift"} <= set(LOCAL_EXTRACTORS.names())
    sift = create_local_extractor("sift", max_features=300)
    assert (sift.method, sift.dim, sift.max_features) == ("sift", 128, 300)
    assert create_local_extractor("rootsift").method == "rootsift"
    assert sift.settings() == {"method": "sift", "max_features": 300, "max_side": 1024, "contrast_threshold": 0.04}
    with pytest.raises(UserInputError, match="unknown local feature 'surf'"):
        create_local_extractor("surf")
    with pytest.raises(UserInputError, match="max_features"):
        create_local_extractor("sift", max_features=0)


def test_sift_detects_large_photos_at_a_1024_px_long_side(photo):
    """By default a 2048 px photo gives the features of its 1024 px copy, in its own pixels
    (pixel-doubled, so that the area downscale gives back the 1024 px copy exactly)."""
    medium = cv2.resize(photo, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    large = np.repeat(np.repeat(medium, 2, axis=0), 2, axis=1)
    at_1024, at_2048 = SiftExtractor().extract(medium), SiftExtractor().extract(large)
    assert len(at_2048) == len(at_1024) > 100 and at_2048.image_size == (2048, 2048)
    np.testing.assert_allclose(at_2048.locations, (at_1024.locations + 0.5) * 2 - 0.5, atol=1e-3)
    np.testing.assert_array_equal(at_2048.descriptors, at_1024.descriptors)


def test_sift_keeps_the_strongest_features_deterministically(photo):
    extractor = SiftExtractor(max_features=60)
    features = extractor.extract(photo)
    assert len(features) == 60
    assert np.all(np.diff(features.scores) <= 0)
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    everything = SiftExtractor(max_features=100_000).extract(photo)
    assert len(everything) > 60
    np.testing.assert_array_equal(features.scores, np.sort(everything.scores)[::-1][:60])
    again = extractor.extract(photo)
    for name in ("locations", "descriptors", "scales", "scores"):
        np.testing.assert_array_equal(getattr(again, name), getattr(features, name))


def test_sift_maps_downscaled_keypoints_back_to_original_pixels(photo):
    # Grey in all three channels, so that downscaling before or after the grey conversion
    # gives the same pixels and both paths below see the very same image.
    photo = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    height, width = photo.shape[:2]
    big = cv2.resize(photo, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    mapped = SiftExtractor(max_side=max(width, height)).extract(big)
    small = SiftExtractor().extract(cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA))
    assert len(mapped) == len(small) > 20
    np.testing.assert_allclose(mapped.locations, (small.locations + 0.5) * 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(mapped.scales, small.scales * 2, rtol=1e-6)
    np.testing.assert_array_equal(mapped.descriptors, small.descriptors)
    assert mapped.locations[:, 0].max() > width and mapped.locations[:, 1].max() > height


def test_rootsift_is_the_hellinger_map_of_sift(photo):
    sift = SiftExtractor(max_features=200).extract(photo)
    root = SiftExtractor(root=True, max_features=200).extract(photo)
    np.testing.assert_array_equal(root.locations, sift.locations)
    assert np.all(root.descriptors >= 0)
    np.testing.assert_allclose(np.linalg.norm(root.descriptors, axis=1), 1.0, atol=1e-5)
    expected = np.sqrt(sift.descriptors / sift.descriptors.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(root.descriptors, expected, atol=1e-5)


def test_sift_input_checks_and_blank_images():
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        SiftExtractor().extract(np.zeros((32, 32), np.uint8))
    blank = SiftExtractor().extract(np.full((64, 64, 3), 128, np.uint8))
    assert len(blank) == 0 and blank.dim == 128


# --------------------------------------------------------------------------------------------
# Split-wide extraction


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> LandmarkData:
    root = tmp_path_factory.mktemp("tiny128")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=128), seed=1, progress=False)
    return LandmarkData(root)


class CountingSift(SiftExtractor):
    """SIFT that counts the images it extracted (in-process runs only)."""

    calls: list  # class-level: frozen dataclasses cannot be mutated per instance

    def extract(self, image_rgb):
        CountingSift.calls.append(image_rgb.shape)
        return super().extract(image_rgb)


def test_extract_local_split_fills_a_store(dataset, tmp_path):
    store = extract_local_split(dataset, "index", tmp_path / "sift", SiftExtractor(max_features=50, max_side=64),
                                shard_size=16, progress=False)
    ids = dataset.split_ids("index")
    assert store.ids == ids and store.method == "sift" and store.dim == 128
    assert store.meta == {"split": "index", "settings": {"method": "sift", "max_features": 50, "max_side": 64,
                                                          "contrast_threshold": 0.04}}
    largest_x = 0.0
    for image_id in ids:
        features = store.get(image_id)
        width, height = read_image_size(dataset.image_path("index", image_id))
        assert len(features) <= 50
        assert np.all(features.locations >= 0)
        assert np.all(features.locations[:, 0] <= width - 1) and np.all(features.locations[:, 1] <= height - 1)
        np.testing.assert_allclose(np.linalg.norm(features.descriptors.astype(np.float32), axis=1), 1.0, atol=2e-3)
        largest_x = max(largest_x, float(features.locations[:, 0].max(initial=0)))
        # The store keeps each image's size, which verification measures tolerances against.
        assert features.image_size == (width, height)
    # Detected at long side 64, reported in the 128 px originals.
    assert largest_x > 64
    assert sum(len(store.get(i)) for i in ids) > 10 * len(ids)


def test_extract_local_split_rootsift(dataset, tmp_path):
    ids = dataset.split_ids("test")[:12]
    store = extract_local_split(dataset, "test", tmp_path / "root", create_local_extractor("rootsift"), ids=ids,
                                progress=False)
    assert store.method == "rootsift"
    for image_id in ids:
        descriptors = store.get(image_id).descriptors.astype(np.float32)
        assert np.all(descriptors >= 0)
        np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=2e-3)


def test_extract_local_split_in_worker_processes_matches_one_process(dataset, tmp_path):
    ids = dataset.split_ids("train")[:20]
    extractor = SiftExtractor(max_features=80)
    one = extract_local_split(dataset, "train", tmp_path / "one", extractor, ids=ids, shard_size=8, progress=False)
    two = extract_local_split(dataset, "train", tmp_path / "two", extractor, ids=ids, shard_size=8, workers=2,
                              progress=False)
    for image_id in ids:
        a, b = one.get(image_id), two.get(image_id)
        np.testing.assert_array_equal(a.locations, b.locations)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)


def test_extract_local_split_resumes_only_missing_shards(dataset, tmp_path):
    ids = dataset.split_ids("train")[:20]
    CountingSift.calls = []
    extract_local_split(dataset, "train", tmp_path / "lf", CountingSift(max_features=30), ids=ids, shard_size=8,
                        progress=False)
    assert len(CountingSift.calls) == 20
    (tmp_path / "lf" / shard_file("offsets", 1)).unlink()
    CountingSift.calls = []
    store = extract_local_split(dataset, "train", tmp_path / "lf", CountingSift(max_features=30), ids=ids,
                                shard_size=8, progress=False)
    assert len(CountingSift.calls) == 8
    assert len(store) == 20
    with pytest.raises(UserInputError, match="meta"):
        extract_local_split(dataset, "train", tmp_path / "lf", CountingSift(max_features=31), ids=ids, shard_size=8,
                            progress=False)


def test_extract_local_split_bad_images(dataset, tmp_path, caplog):
    missing = "ffffffffffffffff"
    ids = dataset.split_ids("test")[:3] + [missing]
    with pytest.raises(ImageLoadError, match=f"{missing}.jpg: cannot load image: file not found"):
        extract_local_split(dataset, "test", tmp_path / "strict", SiftExtractor(), ids=ids, progress=False)
    with caplog.at_level(logging.WARNING, logger="lmkcomp.local.extract"):
        store = extract_local_split(dataset, "test", tmp_path / "lenient", SiftExtractor(), ids=ids,
                                    progress=False, skip_bad=True)
    assert len(store.get(missing)) == 0 and store.get(missing).dim == 128
    assert any(f"{missing}.jpg" in message for message in caplog.messages)
    # the store, not a log line, says which images were skipped
    assert store.skipped == [{"row": 3, "id": missing, "reason": "file not found"}]
