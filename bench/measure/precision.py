"""Float32 precision on CUDA: whether matmuls (cuBLAS) and convolutions (cuDNN) may use
TF32 tensor cores, set for each case and read back for its record.

PyTorch has two ways to say it. The legacy flags ``torch.backends.cuda.matmul.allow_tf32``
and ``torch.backends.cudnn.allow_tf32`` exist in every supported PyTorch; since PyTorch 2.9
the ``fp32_precision`` properties (``torch.backends.cuda.matmul.fp32_precision``,
``torch.backends.cudnn.conv.fp32_precision``: ``"ieee"`` or ``"tf32"``) replace them. The
two must not be mixed: once anything in the process has set an ``fp32_precision`` (or
called ``torch.set_float32_matmul_precision``, which sets it), reading a legacy flag raises
RuntimeError. So the harness uses ``fp32_precision`` wherever this PyTorch has it and the
legacy flags only where it does not, and ``check`` tries the settings once before a run.

Two environment variables override all of that. NVIDIA's libraries read
``NVIDIA_TF32_OVERRIDE``: set to ``0`` it turns TF32 off in cuBLAS and cuDNN whatever
PyTorch asks for (NVIDIA, "Accelerating AI Training with NVIDIA TF32 Tensor Cores", 2020;
cuBLAS documentation, "Environment variables"). PyTorch reads
``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE``: set to ``1`` it lets cuBLAS use TF32 for every float32
matmul (ATen ``Context::allowTF32CuBLAS``). The precision a case records is therefore what
PyTorch was set to, corrected for these, with the variables that are set beside it.

The ``torch.backends`` module is a parameter throughout, so the logic is testable with a
fake of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from types import ModuleType

import torch

IEEE, TF32 = "ieee", "tf32"
NVIDIA_OVERRIDE = "NVIDIA_TF32_OVERRIDE"
TORCH_CUBLAS_OVERRIDE = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"


def has_fp32_precision_api(backends: ModuleType = torch.backends) -> bool:
    """Whether this PyTorch has the ``fp32_precision`` properties (2.9 and later)."""
    return hasattr(backends.cuda.matmul, "fp32_precision") and hasattr(backends.cudnn, "conv")


def read(backends: ModuleType = torch.backends) -> tuple[str, str, bool]:
    """(matmul precision, convolution precision, cuDNN autotuning) as set now. Precisions
    are ``fp32_precision`` values (``ieee``, ``tf32``, or ``none`` where nothing set the
    property), or ``tf32``/``ieee`` from the legacy flags."""
    if has_fp32_precision_api(backends):
        matmul, conv = backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision
    else:
        matmul = TF32 if backends.cuda.matmul.allow_tf32 else IEEE
        conv = TF32 if backends.cudnn.allow_tf32 else IEEE
    return matmul, conv, backends.cudnn.benchmark


def _write(matmul: str, conv: str, benchmark: bool, backends: ModuleType) -> None:
    if has_fp32_precision_api(backends):
        backends.cuda.matmul.fp32_precision = matmul
        backends.cudnn.conv.fp32_precision = conv
    else:
        backends.cuda.matmul.allow_tf32 = matmul == TF32
        backends.cudnn.allow_tf32 = conv == TF32
    backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def cuda_backend_settings(
    precision: str, device: torch.device, backends: ModuleType = torch.backends
) -> Iterator[None]:
    """On CUDA, for one case: cuDNN autotuning on (shapes are fixed, as in training; the
    warm-up pays for it), and TF32 for float32 matmuls and convolutions only in ``tf32``
    cases (PyTorch's own default allows it for cuDNN convolutions, which would make ``fp32``
    partly TF32; AMP cases run their float32 operations without it). The previous settings
    come back afterwards. Elsewhere it changes nothing.

    ``precision``: fp32 | tf32 | bf16 | fp16."""
    if device.type != "cuda":
        yield
        return
    saved = read(backends)
    allowed = TF32 if precision == "tf32" else IEEE
    _write(allowed, allowed, True, backends)
    try:
        yield
    finally:
        _write(*saved, backends)


def effective(backends: ModuleType = torch.backends, environ: Mapping[str, str] = os.environ) -> dict:
    """The float32 precision in effect now, as record fields: ``matmul_precision`` and
    ``cudnn_conv_precision`` (``ieee`` or ``tf32``: what PyTorch is set to, ``tf32`` for
    matmuls under ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``, ``ieee`` for both under
    ``NVIDIA_TF32_OVERRIDE=0``, which acts last, inside the libraries) and ``tf32_override``
    (the override variables that are set, as ``NAME=VALUE`` joined by commas; ``None`` when
    neither is). Read inside ``cuda_backend_settings``."""
    matmul, conv, _ = read(backends)
    if environ.get(TORCH_CUBLAS_OVERRIDE) == "1":
        matmul = TF32
    if environ.get(NVIDIA_OVERRIDE) == "0":
        matmul = conv = IEEE
    overrides = [f"{name}={environ[name]}" for name in (NVIDIA_OVERRIDE, TORCH_CUBLAS_OVERRIDE) if name in environ]
    return {"matmul_precision": matmul, "cudnn_conv_precision": conv, "tf32_override": ",".join(overrides) or None}


def check(
    precisions: set[str],
    device: torch.device,
    backends: ModuleType = torch.backends,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """Why the float32 precision of these cases cannot be what they say on ``device``, or
    None. Tries each setting once (and restores the previous ones), so an API that refuses
    is found before any case runs; ``tf32`` off CUDA or under ``NVIDIA_TF32_OVERRIDE=0``,
    and ``fp32`` under ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``, are refused too."""
    if "tf32" in precisions and device.type != "cuda":
        return f"precision 'tf32' needs a CUDA device, not {device}"
    if device.type != "cuda":
        return None
    if "tf32" in precisions and environ.get(NVIDIA_OVERRIDE) == "0":
        return f"precision 'tf32': {NVIDIA_OVERRIDE}=0 in the environment turns TF32 off in cuBLAS and cuDNN"
    if "fp32" in precisions and environ.get(TORCH_CUBLAS_OVERRIDE) == "1":
        return f"precision 'fp32': {TORCH_CUBLAS_OVERRIDE}=1 in the environment makes float32 matmuls TF32"
    for precision in sorted(precisions):
        expected = TF32 if precision == "tf32" else IEEE
        try:
            with cuda_backend_settings(precision, device, backends):
                matmul, conv, _ = read(backends)
        except RuntimeError as error:
            return f"precision {precision!r}: PyTorch refused the float32 precision settings: {error}"
        if (matmul, conv) != (expected, expected):
            return (
                f"precision {precision!r}: asked for {expected} matmuls and convolutions, "
                f"PyTorch reports {matmul} and {conv}"
            )
    return None
