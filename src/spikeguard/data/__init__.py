"""Datasets held in memory as tensors, batched loading and tensor augmentation."""

from .augment import random_crop_flip
from .base import ImageDataset, batches
from .digits import load_digits_split

__all__ = ["ImageDataset", "batches", "random_crop_flip", "load_digits_split"]
