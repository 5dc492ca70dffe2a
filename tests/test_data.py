import shutil

import pytest
import torch

from ldm_edu import data
from ldm_edu.data import DataError, TensorBatches, load_mnist, mnist_tensors


def test_shapes_dtypes_and_original_order():
    x, y = load_mnist("train")
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert y[:5].tolist() == [5, 0, 4, 1, 9]          # the original first training labels
    xt, yt = load_mnist("test")
    assert xt.shape == (10000, 28, 28) and yt[:3].tolist() == [7, 2, 1]
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_returns_fresh_tensors():
    x, _ = load_mnist("test")
    x.zero_()
    assert load_mnist("test")[0].sum() > 0


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist("validation")


def test_missing_file_names_path_and_fix(tmp_path):
    with pytest.raises(DataError, match="git checkout -- data/") as e:
        load_mnist("test", data_dir=tmp_path)
    assert str(tmp_path) in str(e.value)


def test_corrupt_file_is_named(tmp_path):
    for name in data.FILES["test"]:
        shutil.copy(data.DATA_DIR / name, tmp_path / name)
    blob = bytearray((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes())
    blob[100] ^= 0xFF
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        load_mnist("test", data_dir=tmp_path)


def test_scaling():
    x, _ = mnist_tensors("test", scale="unit", limit=100)
    s, _ = mnist_tensors("test", scale="signed", limit=100)
    assert x.shape == (100, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.allclose(s, x * 2 - 1) and torch.allclose(data.from_signed(s), x)
    with pytest.raises(ValueError, match="unknown scale"):
        mnist_tensors("test", scale="zero-mean")


def test_batches_cover_each_epoch_once_and_are_seeded():
    idx = torch.arange(100)
    b = TensorBatches(idx, batch_size=10, seed=3)
    epoch = torch.cat([next(b) for _ in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    b2 = TensorBatches(idx, batch_size=10, seed=3)
    assert torch.equal(torch.cat([next(b2) for _ in range(10)]), epoch)
    assert not torch.equal(torch.cat([next(b) for _ in range(10)]), epoch)   # next epoch reshuffles


def test_batches_drop_incomplete_and_validate():
    b = TensorBatches(torch.arange(25), torch.arange(25), batch_size=10)
    assert len(b) == 2
    xs, ys = zip(*[next(b) for _ in range(4)])
    assert all(len(x) == 10 for x in xs) and all(torch.equal(x, y) for x, y in zip(xs, ys))
    with pytest.raises(ValueError, match="same first dimension"):
        TensorBatches(torch.arange(5), torch.arange(6), batch_size=2)
    with pytest.raises(ValueError, match="larger than the data set"):
        TensorBatches(torch.arange(5), batch_size=6)


def test_scaling_helpers_refuse_images_already_scaled():
    raw = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    assert data.to_signed(raw).tolist() == [[[[-1.0, 1.0]]]]
    with pytest.raises(TypeError, match="x \\* 2 - 1"):
        data.to_signed(raw.float() / 255)         # dividing by 255 again would blank the images
