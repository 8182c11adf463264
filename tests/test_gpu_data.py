"""Parquet data sets (Hugging Face layout) and the device-resident loader, on tiny made-up files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from spikeguard.data import ImageDataset, load_dataset
from spikeguard.data.device import DeviceLoader
from spikeguard.errors import DataError

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e .[parquet])")
import pyarrow.parquet as pq  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # lossless: decoded pixels are checked exactly
    return buf.getvalue()


def _write(path, images, labels, names, label_column="label", extra=None):
    img = pa.array([{"bytes": _png(a), "path": f"{i}.png"} for i, a in enumerate(images)],
                   type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    cols = {"img": img, label_column: pa.array(labels, pa.int64())}
    feats = {"img": {"_type": "Image"}, label_column: {"names": names, "_type": "ClassLabel"}}
    for col, (vals, vnames) in (extra or {}).items():
        cols[col] = pa.array(vals, pa.int64())
        feats[col] = {"names": vnames, "_type": "ClassLabel"}
    table = pa.table(cols).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": feats}})})
    pq.write_table(table, path)


@pytest.fixture
def cifar10_parquet(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar10-parquet"
    root.mkdir()
    data = {}
    for split, n in (("train", 20), ("test", 10)):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = np.arange(n) % 10
        _write(root / f"{split}.parquet", x, y, CLASSES)
        data[split] = (x, y)
    return tmp_path, data


def test_parquet_cifar10_round_trip(cifar10_parquet):
    root, data = cifar10_parquet
    for name in ("cifar10-parquet", "cifar10"):  # found under ROOT/cifar10-parquet either way
        ds = load_dataset(name, "train", root=root, cache_dir="")
        assert ds.classes == CLASSES and ds.images.dtype == torch.uint8
        assert np.array_equal(ds.images.numpy(), data["train"][0].transpose(0, 3, 1, 2))
        assert np.array_equal(ds.labels.numpy(), data["train"][1])
    test = load_dataset("cifar10-parquet", "test", root=root / "cifar10-parquet", cache_dir=str(root / "cache"))
    assert len(test) == 10
    again = load_dataset("cifar10-parquet", "test", root=root / "cifar10-parquet", cache_dir=str(root / "cache"))
    assert torch.equal(again.images, test.images)  # from the decoded-array cache


def test_parquet_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    fine = [f"f{i:02d}" for i in range(100)]
    coarse = [f"c{i:02d}" for i in range(20)]
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
        _write(tmp_path / f"{split}.parquet", x, [0, 5, 99, 3, 4, 7], fine, label_column="fine_label",
               extra={"coarse_label": ([0, 1, 19, 2, 3, 4], coarse)})
    ds = load_dataset("cifar100-parquet", "train", root=tmp_path, cache_dir="")
    assert ds.num_classes == 100 and ds.labels.tolist() == [0, 5, 99, 3, 4, 7]
    cs = load_dataset("cifar100-coarse-parquet", "test", root=tmp_path, cache_dir="")
    assert cs.num_classes == 20 and cs.labels.tolist() == [0, 1, 19, 2, 3, 4]


def test_parquet_errors(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"not parquet")
    (tmp_path / "test.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="parquet"):
        load_dataset("cifar10-parquet", "train", root=tmp_path, cache_dir="")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "train.parquet")
    with pytest.raises(DataError, match="columns"):
        load_dataset("cifar10-parquet", "train", root=tmp_path, cache_dir="")


def _tiny(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.randint(0, 256, (n, 3, 6, 5), generator=g, dtype=torch.uint8),
                        torch.arange(n) % 3, ["a", "b", "c"], name="tiny")


def test_device_loader_without_augmentation_is_the_data():
    ds = _tiny()
    batches = list(DeviceLoader(ds, 4, augment=False, shuffle=False))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(x, ds.images.float() / 255.0) and torch.equal(torch.cat([b[1] for b in batches]), ds.labels)
    assert len(DeviceLoader(ds, 4, drop_last=True)) == 2


def test_device_loader_crop_and_flip_match_the_reference():
    """Every augmented image is a zero-padded crop of its source image, flipped or not."""
    ds = _tiny()
    loader = DeviceLoader(ds, 3, seed=5, padding=2)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    order, dy, dx, flip = DeviceLoader(ds, 3, seed=5, padding=2)._epoch_plan()
    assert torch.equal(y, ds.labels[order])
    padded = torch.nn.functional.pad(ds.images.float() / 255.0, (2, 2, 2, 2))
    for k in range(len(ds)):
        src = padded[order[k], :, dy[k]:dy[k] + 6, dx[k]:dx[k] + 5]
        assert torch.equal(x[k], src.flip(2) if flip[k] else src)
    assert flip.any() and (~flip).any() and (dy != 2).any()
    epoch2 = torch.cat([b[0] for b in loader])
    assert not torch.equal(epoch2, x)  # a new draw every epoch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_loader_on_cuda():
    ds = _tiny(64)
    cpu = torch.cat([b[0] for b in DeviceLoader(ds, 16, seed=1)])
    gpu = torch.cat([b[0] for b in DeviceLoader(ds, 16, device="cuda", seed=1)])
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())
