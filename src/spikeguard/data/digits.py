"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no files, no network)."""

from __future__ import annotations

import torch

from .base import ImageDataset

DIGITS_CLASSES = [str(i) for i in range(10)]
# Digits average ~0.3 with std ~0.4; normalising centres the first layer's input.
DIGITS_MEAN, DIGITS_STD = (0.3,), (0.4,)


def load_digits_split(test_size: float = 0.2, split_seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Fixed stratified train/test split of ``sklearn.datasets.load_digits``.

    1,797 grayscale 8x8 images, pixel values 0..16 scaled to [0, 1]; with the defaults,
    1,437 train and 360 test images. The split depends only on ``split_seed``.
    """
    # lazy: scikit-learn takes about a second to import and only the digits set needs it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split  # lazy: see above

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=test_size, stratify=y.numpy(), random_state=split_seed)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    stats: dict = dict(mean=DIGITS_MEAN, std=DIGITS_STD, classes=DIGITS_CLASSES)
    return (ImageDataset(x[tr], y[tr], name="digits", **stats), ImageDataset(x[te], y[te], name="digits", **stats))
