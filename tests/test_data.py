from collections import Counter

import numpy as np
import pytest
from PIL import Image

from kerascomp.data import Dataset, Scaling, load_data
from kerascomp.errors import DataError


def _examples(x, y):
    """One ``(image bytes, label)`` key per example, in a multiset."""
    return Counter((np.ascontiguousarray(image).tobytes(), int(label)) for image, label in zip(x, y))


def _assert_each_example_in_exactly_one_split(data, sources):
    """``sources`` maps a tuple of split names to the raw ``(x, y)`` they were drawn from.

    Disjoint by content, allowing for duplicates in the source: the splits together
    hold every source example exactly as often as the source does. So an image may
    sit in two splits only if the source holds it twice (sklearn's digits holds
    none twice), and no example is lost or placed in two splits.
    """
    for names, (x, y) in sources.items():
        held = sum((_examples(*data.split(n)) for n in names), Counter())
        source = _examples(data.scaling.apply(x), y)
        assert held == source, (f"{'/'.join(names)}: {sum((held - source).values())} examples placed twice, "
                                f"{sum((source - held).values())} lost")


def test_digits_has_disjoint_stratified_splits_scaled_to_unit_range(digits):
    from sklearn.datasets import load_digits

    assert digits.input_shape == (8, 8, 1)
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert (len(digits.y_train), len(digits.y_val), len(digits.y_test)) == (1212, 135, 450)
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() == 1.0
    assert digits.scaling.scale == 1 / 16
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert set(np.unique(digits.split(split)[1])) == set(range(10))
    raw = load_digits()
    _assert_each_example_in_exactly_one_split(
        digits, {("train", "val", "test"): (raw.images.astype(np.float32)[..., None], raw.target)})


def test_same_seed_gives_same_splits_other_seed_differs():
    a, b, c = load_data("digits", seed=1), load_data("digits", seed=1), load_data("digits", seed=2)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)


def test_npz_with_test_split_keeps_it_and_reads_class_names(image_npz):
    data = load_data(str(image_npz))
    assert data.input_shape == (12, 12, 1)
    assert data.class_names == ("plain", "top", "left")
    assert len(data.y_test) == 30 and len(data.y_train) + len(data.y_val) == 90
    assert data.scaling.scale == pytest.approx(1 / 255)
    assert data.x_test.max() <= 1.0
    with np.load(image_npz) as raw:  # validation comes out of train only; test is the file's own
        _assert_each_example_in_exactly_one_split(data, {("train", "val"): (raw["x_train"][..., None], raw["y_train"]),
                                                         ("test",): (raw["x_test"][..., None], raw["y_test"])})


def test_npz_with_x_y_and_one_hot_labels_is_split(tmp_path):
    y = np.arange(100) % 4
    x = np.random.default_rng(0).random((100, 6, 6, 3), dtype=np.float32)
    x[90:] = x[:10]  # ten examples twice, as real data sets have: each copy may land in its own split
    np.savez(tmp_path / "d.npz", x=x, y=np.eye(4)[y])
    data = load_data(str(tmp_path / "d.npz"))
    assert data.num_classes == 4 and data.input_shape == (6, 6, 3)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (72, 8, 20)
    assert data.scaling.scale == 1.0  # floats already in [0, 1] are left alone
    _assert_each_example_in_exactly_one_split(data, {("train", "val", "test"): (x, y)})


@pytest.mark.parametrize("content, message", [
    (b"not a zip", "cannot read .* not a NumPy .npz archive"),
    (None, "must hold x_train"),
])
def test_bad_npz_raises_data_error(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, images=np.zeros((3, 4, 4)))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_data(str(path))


def test_npz_with_mismatched_lengths_or_shapes_raises(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 4, 4)), y=np.zeros(9, int))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_data(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.zeros((10, 4)), y=np.zeros(10, int))
    with pytest.raises(DataError, match="must be images"):
        load_data(str(tmp_path / "b.npz"))


def test_missing_path_raises_data_error():
    with pytest.raises(DataError, match="not found"):
        load_data("no/such/file.npz")


def _write_images(root, classes, n, size=(10, 10)):
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(n):
            Image.fromarray(np.full(size + (3,), 40 * i + j, np.uint8)).save(root / name / f"{j}.png")


def test_image_folder_with_class_subfolders_is_read_and_resized(tmp_path):
    _write_images(tmp_path, ["cat", "dog"], 10)
    data = load_data(str(tmp_path), image_size=(6, 6))
    assert data.class_names == ("cat", "dog")
    assert data.input_shape == (6, 6, 3)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 20
    assert data.x_train.max() <= 1.0
    # every image is one flat grey level (40 * class + index), which the resize keeps
    raw_x = np.array([np.full((6, 6, 3), 40 * i + j, np.float32) for i in range(2) for j in range(10)])
    _assert_each_example_in_exactly_one_split(data, {("train", "val", "test"): (raw_x, np.repeat([0, 1], 10))})


def test_image_folder_with_train_and_test_folders_keeps_the_test_split(tmp_path):
    _write_images(tmp_path / "train", ["a", "b"], 10)
    _write_images(tmp_path / "test", ["a", "b"], 3)
    data = load_data(str(tmp_path), color_mode="grayscale")
    assert len(data.y_test) == 6 and data.input_shape == (10, 10, 1)


def test_empty_folder_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        load_data(str(tmp_path))
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_data(str(tmp_path))


def test_tfds_offline_fails_with_clear_message(monkeypatch):
    import sys
    import types

    class Builder:
        def download_and_prepare(self):
            raise ConnectionError("Failed to resolve host\nmore detail")

    fake = types.SimpleNamespace(builder=lambda name: Builder())
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(DataError, match=r"could not download tfds dataset 'mnist' \(offline\?"):
        load_data("tfds:mnist")


def test_as_tf_batches_the_requested_split(digits):
    batches = list(digits.as_tf("val", batch_size=64))
    assert [int(b[0].shape[0]) for b in batches] == [64, 64, 7]


def test_a_dataset_from_numpy_arrays_or_tf_data_is_split_and_checked_as_a_file_is():
    """Building a Dataset from arrays needed all three splits and a Scaling; tf.data was not accepted."""
    from kerascomp.backend import tf

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (200, 8, 8), dtype=np.uint8), np.arange(200) % 4
    data = Dataset.from_arrays(x, y, val_fraction=0.2, test=(x[:40], y[:40]))
    assert (data.input_shape, data.num_classes, len(data.y_val), len(data.y_test)) == ((8, 8, 1), 4, 40, 40)
    assert data.scaling == Scaling(1 / 255) and 0 <= data.x_train.min() and data.x_train.max() <= 1
    for dataset in (tf.data.Dataset.from_tensor_slices((x / 255, y)).batch(32),
                    tf.data.Dataset.from_tensor_slices((x / 255, y))):
        from_tf = Dataset.from_tf_dataset(dataset, seed=1)
        assert from_tf.input_shape == (8, 8, 1) and len(from_tf.y_train) + len(from_tf.y_val) + len(from_tf.y_test) == 200
    with pytest.raises(DataError, match="x must be images"):
        Dataset.from_arrays(np.zeros(5), np.zeros(5))
    with pytest.raises(DataError, match="200 images but 3 labels"):
        Dataset.from_arrays(x, y[:3])
