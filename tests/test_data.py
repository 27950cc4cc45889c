import numpy as np
import pytest
from PIL import Image

from kerascomp.data import load_data
from kerascomp.errors import DataError


def test_digits_has_disjoint_stratified_splits_scaled_to_unit_range(digits):
    assert digits.input_shape == (8, 8, 1)
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert (len(digits.y_train), len(digits.y_val), len(digits.y_test)) == (1212, 135, 450)
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() == 1.0
    assert digits.scaling.scale == 1 / 16
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert set(np.unique(digits.split(split)[1])) == set(range(10))
    rows = {s: {r.tobytes() for r in digits.split(s)[0]} for s in ("train", "val", "test")}
    # digits has a few duplicate images; disjointness is about examples, so compare counts not content
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    assert len(rows["test"] & rows["val"]) <= 2


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


def test_npz_with_x_y_and_one_hot_labels_is_split(tmp_path):
    y = np.arange(100) % 4
    np.savez(tmp_path / "d.npz", x=np.random.rand(100, 6, 6, 3).astype("float32"), y=np.eye(4)[y])
    data = load_data(str(tmp_path / "d.npz"))
    assert data.num_classes == 4 and data.input_shape == (6, 6, 3)
    assert len(data.y_test) == 20
    assert data.scaling.scale == 1.0  # floats already in [0, 1] are left alone


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
