"""Transforms: torchvision pipelines for decoded photos, and a tensor path for small in-memory datasets.

ImageNet-style folders decode a JPEG per sample, so they use the usual torchvision recipe
(RandomResizedCrop + flip + optional colour jitter and PCA lighting for training; Resize + CenterCrop for
evaluation).
CIFAR and Fashion-MNIST fit in memory as one uint8 tensor; decoding them into PIL images per sample
would cost more than the network's forward pass on a small CPU, so :class:`TensorImages` augments
tensor slices directly (random crop with zero or reflection padding + flip), the standard small-image recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import MutualNetError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC", "Lighting",
           "train_transform", "eval_transform", "TensorImages", "resize_uint8", "PADDING_MODES"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# principal components of ImageNet's RGB pixel covariance (pixels in [0, 1]), as AlexNet's PCA lighting uses them
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))
PADDING_MODES = ("zeros", "reflect")



class Lighting(torch.nn.Module):
    """PCA lighting noise (Krizhevsky et al., 2012): shift every pixel by ``eigvec @ (alpha * eigval)``.

    ``alpha`` is drawn per image from N(0, ``alphastd``^2), so an image's colours move along the principal
    components of natural-image colour, by amounts proportional to each component's variance. The ImageNet
    recipes of the original MutualNet / US-Net code use ``alphastd=0.1``; torchvision has no such transform.
    The eigenvalues are those of pixels in [0, 1], so the input must be a float image on that scale
    (``value_range=255`` scales the shift for float images of 0-255 values).
    """

    def __init__(self, alphastd: float, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC,
                 value_range: float = 1.0) -> None:
        super().__init__()
        self.alphastd, self.value_range = float(alphastd), float(value_range)
        self.eigval = torch.as_tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.as_tensor(eigvec, dtype=torch.float32)

    def forward(self, img: Tensor) -> Tensor:
        if self.alphastd == 0:
            return img
        if img.shape[-3] != 3:
            raise MutualNetError(f"PCA lighting needs RGB images, got {img.shape[-3]} channels; set data.lighting=0")
        alpha = torch.randn(3) * self.alphastd
        shift = (self.eigvec @ (alpha * self.eigval)) * self.value_range
        return img + shift.to(img.dtype).view(3, 1, 1)

    def extra_repr(self) -> str:
        return f"alphastd={self.alphastd:g}"


def train_transform(input_size: int, *, crop_scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True,
                    color_jitter: float = 0.0, lighting: float = 0.0, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD) -> v2.Compose:
    """Training pipeline for decoded photos (PIL): random-resized crop, flip, jitter, PCA lighting, normalise.

    ``lighting`` is applied to the [0, 1] float image (see :class:`Lighting`), before normalisation.
    """
    ops = [v2.RandomResizedCrop(input_size, scale=tuple(crop_scale), antialias=True)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
    if lighting > 0:
        ops.append(Lighting(lighting))
    ops.append(v2.Normalize(mean, std))
    return v2.Compose(ops)


def eval_transform(input_size: int, *, resize_ratio: float = 0.875, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD) -> v2.Compose:
    """Evaluation pipeline: resize the short side to ``input_size / ratio``, then centre-crop ``input_size``."""
    return v2.Compose([
        v2.Resize(int(round(input_size / resize_ratio)), antialias=True),
        v2.CenterCrop(input_size),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def resize_uint8(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize a whole ``N x C x H x W`` uint8 tensor once (antialiased bilinear), chunked to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
           for i in range(0, len(images), chunk)]
    return torch.cat(out)


class TensorImages(Dataset):
    """Images held as one uint8 ``N x C x H x W`` tensor; per-sample work is a slice, a flip and an affine.

    Training samples are random ``H x W`` crops of the image padded by ``padding`` pixels (``padding_mode``
    ``"zeros"``, or ``"reflect"`` as the original MutualNet CIFAR recipe), flipped with probability 0.5
    (``hflip``), optionally colour-jittered and PCA-lit (``lighting``); evaluation samples are the whole
    image. Randomness comes from torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, mean, std, train: bool = False, padding: int = 4,
                 hflip: bool = True, color_jitter: float = 0.0, classes: list[str] | None = None,
                 padding_mode: str = "zeros", lighting: float = 0.0) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4, "images must be uint8 N x C x H x W"
        if padding_mode not in PADDING_MODES:
            raise MutualNetError(f"padding mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        self.train, self.hflip = train, hflip
        self.size = tuple(images.shape[-2:])
        self.padding = padding if train else 0
        mode = "constant" if padding_mode == "zeros" else "reflect"
        self.images = F.pad(images, [self.padding] * 4, mode=mode) if self.padding else images
        self.lighting = Lighting(lighting, value_range=255.0) if train and lighting > 0 else None
        self.labels = labels.to(torch.int64)
        self.targets = self.labels.tolist()
        self.classes = classes
        std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t
        self.jitter = v2.ColorJitter(color_jitter, color_jitter, color_jitter) if train and color_jitter > 0 else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = self.images[i]
        if self.train:
            h, w = self.size
            if self.padding:
                y0, x0 = torch.randint(2 * self.padding + 1, (2,)).tolist()
                img = img[:, y0:y0 + h, x0:x0 + w]
            if self.hflip and torch.rand(()) < 0.5:
                img = img.flip(-1)
            if self.jitter is not None:
                img = self.jitter(img)
            if self.lighting is not None:
                return self.lighting(img.float()).mul_(self.scale).add_(self.shift), self.targets[i]
        return img.float().mul_(self.scale).add_(self.shift), self.targets[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        """A whole batch at once (``DataLoader`` calls this when it exists): one gather instead of a loop.

        The random crop offsets and flips of all samples are drawn together from torch's global generator
        (two calls per batch), so seeding it once per batch makes the batch reproducible; the samples
        are the same windows :meth:`__getitem__` cuts, only drawn in one go.
        """
        idx = torch.as_tensor(indices, dtype=torch.int64)
        images = self.images[idx]
        if self.train:
            images = self._crop_flip(images)
            if self.jitter is not None:
                images = torch.stack([self.jitter(img) for img in images])
        out = images.float()
        if self.train and self.lighting is not None:
            out = torch.stack([self.lighting(img) for img in out])
        out = out.mul_(self.scale).add_(self.shift)
        return list(zip(out.unbind(0), [self.targets[i] for i in indices]))

    def _crop_flip(self, images: Tensor) -> Tensor:
        n, c = images.shape[:2]
        h, w = self.size
        rows = torch.arange(h).expand(n, h)
        cols = torch.arange(w).expand(n, w)
        if self.padding:
            offsets = torch.randint(2 * self.padding + 1, (n, 2))
            rows, cols = rows + offsets[:, :1], cols + offsets[:, 1:]
        if self.hflip:
            cols = torch.where(torch.rand(n, 1) < 0.5, cols.flip(-1), cols)
        pixel = (rows[:, :, None] * images.shape[-1] + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        return images.flatten(2).gather(2, pixel).view(n, c, h, w)
