"""Training: the sandwich step (``step.py``), the loop (``loop.py``), its config, optimizer and distribution.

Start with :func:`mutualnet.train.step.train_step`, the one function that is MutualNet's training;
:func:`fit` trains a model object on dataset objects with the loop of ``mutualnet train``.
"""

from .config import MODES, TrainConfig, apply_overrides, config_from_dict, config_to_dict, load_config, resolve
from .loop import train
from .objects import fit
from .optim import build_optimizer, build_scheduler, param_groups
from .runkit import resume_config
from .step import SubNet, alpha_divergence, distill_loss, sample_subnets, train_step

__all__ = ["MODES", "TrainConfig", "load_config", "apply_overrides", "config_from_dict", "config_to_dict", "resolve",
           "train", "fit", "resume_config", "build_optimizer", "build_scheduler", "param_groups", "SubNet",
           "sample_subnets", "train_step", "distill_loss", "alpha_divergence"]
