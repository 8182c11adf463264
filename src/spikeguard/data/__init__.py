"""Datasets held in memory as tensors, batched loading and tensor augmentation."""

from .augment import random_crop_flip
from .base import ImageDataset, batches
from .cifar import CIFAR10_CLASSES, read_cifar_pickle, verify_md5
from .digits import load_digits_split
from .registry import DatasetInfo, dataset_info, default_cache_dir, list_datasets, load_dataset, register_dataset_info

__all__ = [
    "ImageDataset",
    "batches",
    "DatasetInfo",
    "dataset_info",
    "register_dataset_info",
    "random_crop_flip",
    "load_digits_split",
    "load_dataset",
    "list_datasets",
    "default_cache_dir",
    "read_cifar_pickle",
    "verify_md5",
    "CIFAR10_CLASSES",
]
