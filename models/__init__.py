"""The model zoo: ``build(name, **kwargs)`` and ``available()`` over one registry.

Importing the package registers every model: the lab networks, the CIFAR ResNets and
plain nets, and torchvision's ImageNet models.
"""

from models import cifar, lab, zoo  # noqa: F401  (registration happens on import)
from models.registry import ModelSpec, UnknownNameError, available, build, register, spec

__all__ = ["ModelSpec", "UnknownNameError", "available", "build", "register", "spec"]
