"""jaxattack.data: built-in sample, folder and tar readers, corrupt files, tfds."""

import io
import shutil
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from jaxattack import data

CIFAR = data.cifar10_default_path()
needs_cifar = pytest.mark.skipif(CIFAR is None, reason="shared CIFAR-10 JPEGs not present")


def _write_folder(root, images, labels, names, split="test", ext="png"):
    for i, (im, y) in enumerate(zip(images, labels, strict=True)):
        d = root / split / names[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:04d}.{ext}")
    return root


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """12 lossless PNGs (4 classes x 3) taken from the built-in sample."""
    x, y, names = data.load("sample", per_class_limit=3)
    keep = y < 4
    root = tmp_path_factory.mktemp("folder")
    return _write_folder(root, x[keep], y[keep], names), x[keep], y[keep]


def test_sample_shapes_and_classes():
    x, y, names = data.load("sample")
    assert x.shape == (1000, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and names == data.CIFAR10_CLASSES
    assert np.bincount(y).tolist() == [100] * 10
    assert np.all(np.diff(y) >= 0)  # label order


def test_limit_is_balanced_and_per_class_limit():
    _, y, _ = data.load("sample", limit=25)
    assert len(y) == 25 and np.all(np.diff(y) >= 0)
    assert np.bincount(y, minlength=10).tolist() == [3] * 5 + [2] * 5
    x5, y5, _ = data.load("sample", per_class_limit=5)
    xall, _, _ = data.load("sample")
    assert np.bincount(y5).tolist() == [5] * 10
    np.testing.assert_array_equal(x5[:5], xall[:5])  # first files of class 0


def test_folder_reader_is_lossless_for_png(small_folder):
    root, x, y = small_folder
    xf, yf, names = data.load(root)
    np.testing.assert_array_equal(xf, x)
    np.testing.assert_array_equal(yf, y)
    assert names == data.CIFAR10_CLASSES[:4]


def test_folder_and_tar_agree(small_folder, tmp_path):
    root = small_folder[0]
    tar_path = tmp_path / "set.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root / "test", arcname="test")
    a, b = data.load(root), data.load(tar_path)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    # A folder that holds <split>.tar works too.
    shutil.copy(tar_path, tmp_path / "test.tar")
    np.testing.assert_array_equal(data.load(tmp_path)[0], a[0])


@needs_cifar
def test_shared_tar_matches_extracted_folder(tmp_path):
    xt, yt, nt = data.load(CIFAR / "test.tar", per_class_limit=4)
    with tarfile.open(CIFAR / "test.tar") as tar:
        members = [m for m in tar if m.isfile() and int(m.name[-8:-4]) < 4]
        tar.extractall(tmp_path, members=members, filter="data")
    xf, yf, nf = data.load(tmp_path)
    np.testing.assert_array_equal(xt, xf)
    np.testing.assert_array_equal(yt, yf)
    assert nt == nf == data.CIFAR10_CLASSES


@needs_cifar
def test_shared_test_set_class_counts_and_sample_prefix():
    x, y, names = data.load(CIFAR, "test")
    assert x.shape == (10000, 32, 32, 3) and names == data.CIFAR10_CLASSES
    assert np.bincount(y).tolist() == [1000] * 10
    xs, ys, _ = data.load("sample")  # the sample is the first 100 per class
    first = np.concatenate([np.flatnonzero(y == c)[:100] for c in range(10)])
    np.testing.assert_array_equal(x[first], xs)
    np.testing.assert_array_equal(y[first], ys)


def _corrupt_folder(tmp_path):
    x, y, names = data.load("sample", per_class_limit=2)
    root = _write_folder(tmp_path / "c", x[y < 2], y[y < 2], names, ext="jpg")
    good = (root / "test" / "airplane").iterdir().__next__().read_bytes()
    bad = root / "test" / "automobile" / "9999.jpg"
    bad.write_bytes(good[: len(good) // 2])  # truncated JPEG
    (root / "test" / "automobile" / "9998.jpg").write_bytes(b"not an image")
    return root, bad


def test_corrupt_file_raises_naming_it(tmp_path):
    root, _ = _corrupt_folder(tmp_path)
    with pytest.raises(data.CorruptImageError, match=r"automobile.99\d\d\.jpg"):
        data.load(root)


def test_corrupt_file_skipped_with_warning(tmp_path):
    root, _ = _corrupt_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipping"):
        x, y, names = data.load(root, on_corrupt="skip")
    assert len(x) == 4 and np.bincount(y).tolist() == [2, 2]


def test_corrupt_member_in_tar_is_named(tmp_path):
    root, _ = _corrupt_folder(tmp_path)
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        tar.add(root / "test", arcname="test")
    with pytest.raises(data.CorruptImageError, match=r"c\.tar:test/automobile/99\d\d\.jpg"):
        data.load(tmp_path / "c.tar")


def test_bad_inputs_give_clear_errors(tmp_path, small_folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train"):
        data.load(small_folder[0], split="train")
    with pytest.raises(ValueError, match="only has the 'test' split"):
        data.load("sample", split="train")
    with pytest.raises(ValueError, match="on_corrupt"):
        data.load("sample", on_corrupt="ignore")
    with pytest.raises(ValueError, match="limit"):
        data.load("sample", limit=0)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="not a tar"):
        data.load(tmp_path / "f.txt")
    (tmp_path / "empty" / "test" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no .* images"):
        data.load(tmp_path / "empty")


def test_odd_image_size_is_reported(tmp_path):
    d = tmp_path / "test" / "a"
    d.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(d / "0.png")
    Image.new("RGB", (16, 16)).save(d / "1.png")
    with pytest.raises(ValueError, match="1.png"):
        data.load(tmp_path)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    d = tmp_path / "test" / "a"
    d.mkdir(parents=True)
    Image.new("L", (8, 8), 7).save(d / "0.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(d / "1.png")
    x, _, _ = data.load(tmp_path)
    assert x.shape == (2, 8, 8, 3) and x[0, 0, 0].tolist() == [7, 7, 7]


def test_missing_tfds_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"jaxattack\[tfds\]"):
        data.load("tfds:cifar10")
    with pytest.raises(ImportError, match=r"jaxattack\[tfds\]"):
        data.load("tfds-folder:/nowhere")


@needs_cifar
def test_tfds_image_folder_matches_pil_reader(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_datasets")
    with tarfile.open(CIFAR / "test.tar") as tar:
        members = [m for m in tar if m.isfile() and int(m.name[-8:-4]) < 3]
        tar.extractall(tmp_path, members=members, filter="data")
    xt, yt, nt = data.load(f"tfds-folder:{tmp_path}")
    xp, yp, np_ = data.load(tmp_path)
    assert nt == np_ == data.CIFAR10_CLASSES
    np.testing.assert_array_equal(yt, yp)
    # TensorFlow's and PIL's JPEG decoders round the IDCT differently: a few levels.
    diff = np.abs(xt.astype(np.int16) - xp.astype(np.int16))
    assert xt.shape == xp.shape and diff.max() <= 8 and diff.mean() < 1.5


def test_png_bytes_roundtrip_decode():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 8, 7)).save(buf, "PNG")
    assert data._decode("x.png", buf.getvalue())[0, 0].tolist() == [9, 8, 7]


def test_unprepared_tfds_dataset_is_a_clear_error_not_a_download(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="not prepared"):
        data.load("tfds:cifar10", data_dir=tmp_path)


# ----------------------------------------------------------------------------- image_size


def _mixed_folder(root):
    """Three classes of RGB images of three different sizes (and one grayscale)."""
    rng = np.random.default_rng(0)
    sizes = {"a": [(40, 50), (32, 32)], "b": [(20, 24)], "c": [(64, 48)]}
    for label, hw in sizes.items():
        d = root / "test" / label
        d.mkdir(parents=True)
        for i, (h, w) in enumerate(hw):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")
    Image.new("L", (10, 30), 99).save(root / "test" / "b" / "9.png")
    return root


def test_mixed_sizes_without_image_size_is_a_clear_error(tmp_path):
    root = _mixed_folder(tmp_path)
    with pytest.raises(ValueError, match=r"differ in size: .* is \d+x\d+, .*image_size") as e:
        data.load(root)
    assert "--image-size" in str(e.value)
    with tarfile.open(tmp_path / "m.tar", "w") as tar:
        tar.add(root / "test", arcname="test")
    with pytest.raises(ValueError, match="image_size"):
        data.load(tmp_path / "m.tar")


@pytest.mark.parametrize("size", [(24, 40), 28, "24x40"])
def test_image_size_resizes_every_image(tmp_path, size):
    root = _mixed_folder(tmp_path)
    x, y, names = data.load(root, image_size=size)
    h, w = data.parse_image_size(size)
    assert x.shape == (5, h, w, 3) and x.dtype == np.uint8
    assert names == ("a", "b", "c") and y.tolist() == [0, 0, 1, 1, 2]
    # The same as resizing each file with PIL's bilinear filter.
    ref = Image.open(root / "test" / "a" / "0.png").convert("RGB").resize(
        (w, h), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(x[0], np.asarray(ref))
    assert (x[3] == 99).all()  # the grayscale file, resized and made RGB
    with tarfile.open(tmp_path / "m.tar", "w") as tar:
        tar.add(root / "test", arcname="test")
    np.testing.assert_array_equal(data.load(tmp_path / "m.tar", image_size=size)[0], x)


def test_image_size_filters_and_the_sample():
    x, _, _ = data.load("sample", limit=3, image_size=64, resample="nearest")
    small, _, _ = data.load("sample", limit=3)
    assert x.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(x[:, ::2, ::2], small)  # nearest 2x: each pixel twice
    same, _, _ = data.load("sample", limit=3, image_size=32)
    np.testing.assert_array_equal(same, small)  # already that size: untouched
    for name in data.RESAMPLING:
        assert data.load("sample", limit=1, image_size=(16, 8), resample=name)[0].shape == \
            (1, 16, 8, 3)


def test_bad_image_size_and_filter_are_clear_errors():
    for bad in (0, "x", (1, 2, 3), "12x0", -4):
        with pytest.raises(ValueError, match="image_size"):
            data.load("sample", limit=1, image_size=bad)
    with pytest.raises(ValueError, match="resample"):
        data.load("sample", limit=1, image_size=8, resample="cubic")


def test_tfds_image_folder_with_image_size(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_datasets")
    root = _mixed_folder(tmp_path)
    for f in (root / "test").rglob("*.png"):  # ImageFolder needs 3-channel files
        Image.open(f).convert("RGB").save(f)
    xt, yt, nt = data.load(f"tfds-folder:{root}", image_size=(24, 40))
    xp, yp, np_ = data.load(root, image_size=(24, 40))
    assert xt.shape == xp.shape == (5, 24, 40, 3) and nt == np_
    np.testing.assert_array_equal(yt, yp)
    np.testing.assert_array_equal(xt, xp)  # PNG is lossless: the same pixels, same filter
