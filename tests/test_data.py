"""Dataset readers against tiny pickle and image-folder fixtures built in tmp_path."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from spikeguard.data import CIFAR10_CLASSES, load_dataset, read_cifar_pickle, verify_md5
from spikeguard.data.cifar import CIFAR10_MEAN, CIFAR100_STD
from spikeguard.errors import DataError


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def make_cifar10(root, n=20, seed=0):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    data = {}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        data[f] = (x, y)
        with open(d / f, "wb") as fh:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": b"x"}, fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, fh)
    return d, data


def make_cifar100(root, n=30):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for f in ("train", "test"):
        with open(d / f, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [i % 20 for i in range(n)]}, fh)
    with open(d / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}, fh)
    return d


def make_folder(root, classes=("cat", "dog", "ant"), per=3, ext="png"):
    rng = np.random.default_rng(2)
    pixels = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                p = root / split / c / f"{i:04d}.{ext}"
                Image.fromarray(arr).save(p)
                pixels[(split, c, i)] = arr
    return pixels


def test_cifar10_pickle_roundtrip(tmp_path):
    d, data = make_cifar10(tmp_path)
    sums = {f.name: _md5(f) for f in d.iterdir()}
    x, y, classes = read_cifar_pickle(d, "cifar10", "train", checksums=sums)
    assert x.shape == (100, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[:20].reshape(20, -1), data["data_batch_1"][0])
    assert list(y[20:40]) == data["data_batch_2"][1]
    assert classes == CIFAR10_CLASSES
    ds = load_dataset("cifar10", "test", root=tmp_path, cache_dir=tmp_path / "cache", verify=False)
    assert ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == data["test_batch"][1]
    assert tuple(ds.mean) == CIFAR10_MEAN
    # root may also be the pickle folder itself
    ds2 = load_dataset("cifar10", "test", root=d, cache_dir="", verify=False)
    assert torch.equal(ds.images, ds2.images)


def test_md5_mismatch_detected(tmp_path):
    d, _ = make_cifar10(tmp_path)
    # our fixture files are not the official ones: verification against the official table fails
    with pytest.raises(DataError, match="md5 mismatch"):
        load_dataset("cifar10", "train", root=tmp_path, cache_dir="")
    sums = {f.name: _md5(f) for f in d.iterdir()}
    verify_md5(d, "cifar10", "train", sums)  # passes with the right table
    (d / "data_batch_3").write_bytes((d / "data_batch_3").read_bytes()[:-7] + b"tamper!")
    with pytest.raises(DataError, match="data_batch_3"):
        verify_md5(d, "cifar10", "train", sums)


def test_truncated_or_malicious_pickle(tmp_path):
    d, _ = make_cifar10(tmp_path)
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:100])
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", "test", root=tmp_path, cache_dir="", verify=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="forbidden"):
        load_dataset("cifar10", "test", root=tmp_path, cache_dir="", verify=False)


def test_cifar100_fine_and_coarse(tmp_path):
    make_cifar100(tmp_path)
    fine = load_dataset("cifar100", "train", root=tmp_path, cache_dir="", verify=False)
    coarse = load_dataset("cifar100-coarse", "train", root=tmp_path, cache_dir="", verify=False)
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.labels.tolist() == [i % 100 for i in range(30)]
    assert coarse.labels.tolist() == [i % 20 for i in range(30)]
    assert tuple(fine.std) == CIFAR100_STD


def test_image_folder_and_cache(tmp_path):
    pixels = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    ds = load_dataset("folder", "train", root=tmp_path / "imgs", cache_dir=cache)
    assert ds.classes == ["ant", "cat", "dog"]  # sorted names when not CIFAR-10's
    assert ds.images.shape == (9, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images[3].permute(1, 2, 0).numpy(), pixels[("train", "cat", 0)])
    cached = list((cache / "datasets").glob("*.npz"))
    assert len(cached) == 1
    # second load comes from the cache: same arrays even if decoding were impossible now
    again = load_dataset("folder", "train", root=tmp_path / "imgs", cache_dir=cache)
    assert torch.equal(again.images, ds.images) and again.classes == ds.classes
    # changing a file changes the fingerprint: decoded again, new cache entry
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "imgs/train/ant/0000.png")
    changed = load_dataset("folder", "train", root=tmp_path / "imgs", cache_dir=cache)
    assert changed.images[0].sum() == 0
    assert len(list((cache / "datasets").glob("*.npz"))) == 2


def test_cifar10_folder_label_order(tmp_path):
    make_folder(tmp_path, classes=tuple(sorted(CIFAR10_CLASSES)), per=1, ext="jpg")
    ds = load_dataset("cifar10", "test", root=tmp_path, cache_dir="")
    assert ds.classes == CIFAR10_CLASSES
    assert ds.labels.tolist() == list(range(10))
    assert load_dataset("cifar10", "train", root=tmp_path, cache_dir="", subset=5).labels.unique().numel() == 5


def test_corrupt_image_named(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "test" / "dog" / "0001.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="0001.png"):
        load_dataset("folder", "test", root=tmp_path, cache_dir="")


def test_missing_dataset_says_where(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", "train", root=tmp_path, cache_dir="")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", root=tmp_path)


def test_subset_is_class_balanced():
    ds = load_dataset("digits", "train", subset=100, seed=3)
    assert len(ds) == 100
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.min() == counts.max() == 10
    assert torch.equal(ds.labels, load_dataset("digits", "train", subset=100, seed=3).labels)
