"""Datasets and transforms: ImageNet-style folders, CIFAR-10/100, Fashion-MNIST, synthetic."""

from .datasets import (
    DATASETS,
    FASHION_MNIST_ROOT,
    DatasetInfo,
    build_dataset,
    dataset_info,
    load_images,
    random_subset,
)
from .preprocess import (
    DEFAULT_RESIZE,
    RESIZE_MODES,
    Preprocessing,
    model_preprocessing,
    preprocessing_for,
    resize_batch,
)
from .synthetic import SyntheticImages
from .transforms import IMAGENET_MEAN, IMAGENET_STD, TensorImages, eval_transform, train_transform

__all__ = ["DATASETS", "FASHION_MNIST_ROOT", "DatasetInfo", "build_dataset", "dataset_info", "random_subset",
           "load_images",
           "SyntheticImages", "TensorImages", "IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "train_transform",
           "resize_batch", "Preprocessing", "preprocessing_for", "model_preprocessing",
           "RESIZE_MODES", "DEFAULT_RESIZE"]
