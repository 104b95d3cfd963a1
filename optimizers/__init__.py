"""Textbook Adam and SGDM, a registry over them and torch.optim, and their closed forms.

``build(name, params, **hyperparameters)`` builds by name (``available()`` lists them);
``state_buffers(name)`` is the theoretical number of parameter-shaped state tensors.
"""

from optimizers.hyperparameters import HYPERPARAMETERS
from optimizers.hyperparameters import used as hyperparameters
from optimizers.registry import OptimizerSpec, available, build, register, spec, state_buffers
from optimizers.textbook import SGDM, Adam

__all__ = [
    "HYPERPARAMETERS",
    "SGDM",
    "Adam",
    "OptimizerSpec",
    "available",
    "build",
    "hyperparameters",
    "register",
    "spec",
    "state_buffers",
]
