"""Datasets and transforms: ImageNet-style folders, CIFAR-10/100, Fashion-MNIST, synthetic."""

from .synthetic import SyntheticImages

__all__ = ["SyntheticImages"]
