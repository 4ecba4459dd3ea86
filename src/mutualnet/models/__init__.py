"""Slimmable model zoo. A new architecture is one file plus one import line here."""

from ._base import SlimmableNet
from ._registry import ModelInfo, create_model, list_models, model_info, register_model
from .mobilenet_v1 import *  # noqa: F401,F403
from .mobilenet_v2 import *  # noqa: F401,F403
from .resnet import *  # noqa: F401,F403
from .timm_models import *  # noqa: F401,F403  (timm/<name>: timm's CNNs converted by mutualnet.slim)
from .tv import *  # noqa: F401,F403  (tv/<name>: torchvision's CNNs converted by mutualnet.slim)
from .vgg import *  # noqa: F401,F403
from .wide_resnet import *  # noqa: F401,F403

__all__ = ["SlimmableNet", "ModelInfo", "create_model", "list_models", "model_info", "register_model"]
