"""Fashion-MNIST loading from IDX files, with Keras' downloader as the fallback."""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "FASHION_MNIST_DIR"

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataUnavailableError(RuntimeError):
    """Neither local IDX files nor the Keras download could provide the data set."""


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(n, 28, 28)`` and integer labels ``(n,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    validation: Split
    test: Split
    class_names: tuple[str, ...] = CLASS_NAMES


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    header_end = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[type_code], offset=header_end)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {np.prod(shape)} elements for shape {shape}, found {data.size}")
    return data.reshape(shape)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The argument, else ``$FASHION_MNIST_DIR``, else Debian's ``dataset-fashion-mnist`` location."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))


def _load_raw(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    paths = {key: data_dir / name for key, name in _FILES.items()}
    if all(p.exists() for p in paths.values()):
        logger.info("Loading Fashion-MNIST from %s", data_dir)
        return tuple(read_idx(paths[k]) for k in _FILES)  # type: ignore[return-value]
    logger.warning("No Fashion-MNIST IDX files in %s; trying keras.datasets.fashion_mnist", data_dir)
    try:
        from keras.datasets import fashion_mnist

        (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    except Exception as exc:  # network errors surface as many exception types
        raise DataUnavailableError(
            f"Fashion-MNIST not found in {data_dir} (expected {', '.join(_FILES.values())}) and the Keras "
            f"download failed ({exc}). Install Debian's 'dataset-fashion-mnist' package or set "
            f"{DATA_DIR_ENV} to a directory holding the IDX files."
        ) from exc
    return x_train, y_train, x_test, y_test


def load_fashion_mnist(data_dir: str | Path | None = None, validation_size: int = 5000, seed: int = 42) -> FashionMNIST:
    """Load train/validation/test splits; validation is a seeded random slice of the training set."""
    x_train, y_train, x_test, y_test = _load_raw(resolve_data_dir(data_dir))
    if not 0 <= validation_size < len(y_train):
        raise ValueError(f"validation_size must be in [0, {len(y_train)}), got {validation_size}")
    order = np.random.default_rng(seed).permutation(len(y_train))
    val_idx, train_idx = order[:validation_size], order[validation_size:]
    return FashionMNIST(
        train=Split(x_train[train_idx], y_train[train_idx].astype(np.int64)),
        validation=Split(x_train[val_idx], y_train[val_idx].astype(np.int64)),
        test=Split(x_test, y_test.astype(np.int64)),
    )


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 ``(n, 28, 28)`` → float32 ``(n, 28, 28, 1)`` scaled to [0, 1]: the exported models' input."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]
