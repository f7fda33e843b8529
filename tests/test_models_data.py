"""Fashion-MNIST loading from IDX files, splits and the no-data error."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from models import data


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "x.gz"), array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="expected 5 elements"):
        data.read_idx(tmp_path / "short")


def test_local_directory_and_split(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("train", 50), ("t10k", 20)):
        write_idx(tmp_path / f"{name}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{name}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    loaded = data.load_fashion_mnist(tmp_path, validation_size=10)
    assert (len(loaded.train), len(loaded.validation), len(loaded.test)) == (40, 10, 20)
    assert loaded.train.images.shape == (40, 28, 28) and loaded.train.labels.dtype == np.int64
    assert len(loaded.class_names) == 10


def test_environment_variable_selects_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.resolve_data_dir("/elsewhere") == data.Path("/elsewhere")


def test_clear_error_when_no_source(tmp_path, monkeypatch):
    import keras

    def offline():
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(data.DataUnavailableError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path / "nothing-here")


def test_real_data_from_debian_package(fashion):
    assert (len(fashion.train), len(fashion.validation), len(fashion.test)) == (55_000, 5_000, 10_000)
    assert fashion.test.images.dtype == np.uint8 and fashion.test.images.shape[1:] == (28, 28)
    assert np.bincount(fashion.test.labels).tolist() == [1000] * 10
