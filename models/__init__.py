"""The model zoo: ``build(name, **kwargs)`` and ``available()`` over one registry.

Importing the package registers every model: the lab networks, the CIFAR ResNets and
plain nets, and torchvision's ImageNet models. Models outside the registry are named by
reference: ``package.module:function``, ``torchvision:NAME``, ``timm:NAME`` (models.references).
"""

from models import cifar, lab, zoo  # noqa: F401  (registration happens on import)
from models.catalog import available, build, check_kwargs, spec
from models.references import ModelReferenceError
from models.registry import ModelSpec, UnknownNameError, register

__all__ = [
    "ModelReferenceError",
    "ModelSpec",
    "UnknownNameError",
    "available",
    "build",
    "check_kwargs",
    "register",
    "spec",
]
