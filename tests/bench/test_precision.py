"""Float32 precision on CUDA: set through the API this PyTorch has, never mixing the two,
restored after the case, checked before the run and recorded as in effect."""

from types import SimpleNamespace

import pytest
import torch

from bench.measure import precision
from bench.measure.precision import cuda_backend_settings

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.fixture
def restore_backends():
    """The real torch.backends settings this test changes, put back afterwards (the flags
    are plain process state and can be set on a machine without a GPU)."""
    backends = torch.backends
    saved = backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision, backends.cudnn.benchmark
    yield backends
    backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision, backends.cudnn.benchmark = saved


@pytest.mark.skipif(not precision.has_fp32_precision_api(), reason="PyTorch before 2.9 has only the legacy flags")
def test_a_process_that_uses_the_new_api_can_still_run_cases(restore_backends):
    backends = restore_backends
    # What a user's code (or torch.set_float32_matmul_precision) does before the harness runs:
    # from now on PyTorch refuses to read the legacy allow_tf32 flags.
    backends.cuda.matmul.fp32_precision = backends.cudnn.conv.fp32_precision = "tf32"
    backends.cudnn.benchmark = False
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        _ = backends.cuda.matmul.allow_tf32
    with cuda_backend_settings("fp32", CUDA):
        assert precision.read() == ("ieee", "ieee", True)
        assert precision.effective(environ={}) == {
            "matmul_precision": "ieee",
            "cudnn_conv_precision": "ieee",
            "tf32_override": None,
        }
    assert precision.read() == ("tf32", "tf32", False)
    assert precision.check({"fp32", "tf32", "bf16", "fp16"}, CUDA, environ={}) is None


class LegacyBackends(SimpleNamespace):
    """torch.backends as PyTorch before 2.9 has it: the allow_tf32 flags only."""

    def __init__(self, matmul: bool, conv: bool, benchmark: bool) -> None:
        super().__init__(
            cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=matmul)),
            cudnn=SimpleNamespace(allow_tf32=conv, benchmark=benchmark),
        )

    def flags(self) -> tuple[bool, bool, bool]:
        return self.cuda.matmul.allow_tf32, self.cudnn.allow_tf32, self.cudnn.benchmark


def test_the_legacy_flags_allow_tf32_only_when_asked_and_come_back_after():
    backends = LegacyBackends(matmul=False, conv=True, benchmark=False)  # PyTorch's defaults
    assert not precision.has_fp32_precision_api(backends)
    with cuda_backend_settings("tf32", CUDA, backends):
        assert backends.flags() == (True, True, True)
    for name in ("fp32", "bf16", "fp16"):
        with cuda_backend_settings(name, CUDA, backends):
            assert backends.flags() == (False, False, True)
            assert precision.read(backends) == ("ieee", "ieee", True)
    assert backends.flags() == (False, True, False)
    with cuda_backend_settings("fp32", CPU, backends):
        assert backends.flags() == (False, True, False)  # the CPU has none of these


def test_the_environments_tf32_overrides_are_in_the_record():
    backends = LegacyBackends(matmul=False, conv=True, benchmark=False)
    with cuda_backend_settings("tf32", CUDA, backends):
        assert precision.effective(backends, {"NVIDIA_TF32_OVERRIDE": "0"}) == {
            "matmul_precision": "ieee",
            "cudnn_conv_precision": "ieee",
            "tf32_override": "NVIDIA_TF32_OVERRIDE=0",
        }
        assert precision.effective(backends, {"NVIDIA_TF32_OVERRIDE": "1"})["matmul_precision"] == "tf32"
    with cuda_backend_settings("fp32", CUDA, backends):
        assert precision.effective(backends, {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}) == {
            "matmul_precision": "tf32",
            "cudnn_conv_precision": "ieee",
            "tf32_override": "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1",
        }


def test_precision_that_cannot_be_what_it_says_is_refused_before_the_run():
    backends = LegacyBackends(matmul=False, conv=True, benchmark=False)
    assert "needs a CUDA device" in precision.check({"tf32"}, CPU, backends, {})
    assert precision.check({"fp32", "bf16"}, CPU, backends, {}) is None
    assert "NVIDIA_TF32_OVERRIDE=0" in precision.check({"tf32"}, CUDA, backends, {"NVIDIA_TF32_OVERRIDE": "0"})
    assert "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1" in precision.check(
        {"fp32"}, CUDA, backends, {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}
    )
    assert precision.check({"fp32", "tf32"}, CUDA, backends, {}) is None

    class Refusing:
        def __setattr__(self, name, value):
            raise RuntimeError("flags are frozen")

    backends.cudnn = Refusing()
    backends.cudnn.__dict__.update(allow_tf32=True, benchmark=False)
    assert "refused" in precision.check({"fp32"}, CUDA, backends, {})
