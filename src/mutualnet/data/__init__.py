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
from .preprocess import Preprocessing, model_preprocessing, preprocessing_for
from .synthetic import SyntheticImages
from .transforms import (
    DEFAULT_RESIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_MODES,
    TensorImages,
    eval_transform,
    resize_batch,
    train_transform,
)

__all__ = ["DATASETS", "FASHION_MNIST_ROOT", "DatasetInfo", "build_dataset", "dataset_info", "random_subset",
           "load_images",
           "SyntheticImages", "TensorImages", "IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "train_transform",
           "resize_batch", "Preprocessing", "preprocessing_for", "model_preprocessing",
           "RESIZE_MODES", "DEFAULT_RESIZE"]
