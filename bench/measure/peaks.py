"""Dense peak throughput of known GPUs, per precision, for model FLOP utilisation (MFU).

Figures are TFLOP/s without structured (2:4) sparsity: where a datasheet gives only the
sparse figure (marked "with sparsity"), the dense one is half of it. ``fp32`` is the
CUDA-core FP32 rate, because convbench's ``fp32`` cases run with TF32 off; ``tf32`` is the
tensor-core TF32 rate; ``bf16`` / ``fp16`` are tensor-core rates with FP32 accumulation (what
autocast uses). A precision a GPU has no tensor-core path for is absent. GPUs are matched
by a regular expression searched in ``torch.cuda.get_device_name``, the more specific names
first (``A10`` must not match an A100 or an A10G, whose figures differ).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PeakEntry:
    """``match``: a pattern searched in the device name; ``tflops``: precision -> dense TFLOP/s."""

    match: str
    tflops: dict[str, float]
    source: str


_H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet (2023), sparse tensor figures halved"
_H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet (2024), sparse tensor figures halved"
_L40S_SHEET = "NVIDIA L40S datasheet (2023), sparse tensor figures halved"
_ADA = "NVIDIA Ada GPU architecture whitepaper v2.02, table 2 (FP16/BF16 with FP32 accumulate)"
_AMPERE_GA102 = "NVIDIA Ampere GA102 GPU architecture whitepaper v2.0, table 9 (FP16/BF16 with FP32 accumulate)"

PEAKS: tuple[PeakEntry, ...] = (
    PeakEntry(r"\bH200 NVL\b", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}, _H200_SHEET + ", NVL"),
    PeakEntry(r"\bH200\b", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}, _H200_SHEET + ", SXM"),
    PeakEntry(r"\bH100 NVL\b", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}, _H100_SHEET + ", NVL"),
    PeakEntry(r"\bH100 PCIe\b", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5}, _H100_SHEET + ", PCIe"),
    PeakEntry(r"\bH100\b", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}, _H100_SHEET + ", SXM"),
    PeakEntry(
        r"\bA100\b",
        {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
        "NVIDIA A100 Tensor Core GPU datasheet (2021), dense figures",
    ),
    PeakEntry(r"\bL40S\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 366.5, "fp16": 366.5}, _L40S_SHEET),
    PeakEntry(
        r"\bL4\b",
        {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
        "NVIDIA L4 Tensor Core GPU datasheet (2023), sparse tensor figures halved",
    ),
    PeakEntry(
        r"\bA10\b",
        {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
        "NVIDIA A10 Tensor Core GPU datasheet (2021), dense figures",
    ),
    PeakEntry(
        r"\bV100S\b",
        {"fp32": 16.4, "fp16": 130.0},
        "NVIDIA V100 Tensor Core GPU datasheet (2020), V100S PCIe",
    ),
    PeakEntry(
        r"\bV100-SXM2\b",
        {"fp32": 15.7, "fp16": 125.0},
        "NVIDIA V100 Tensor Core GPU datasheet (2020), V100 SXM2",
    ),
    PeakEntry(
        r"\bV100-PCIE\b",
        {"fp32": 14.0, "fp16": 112.0},
        "NVIDIA V100 Tensor Core GPU datasheet (2020), V100 PCIe",
    ),
    PeakEntry(r"\bT4\b", {"fp32": 8.1, "fp16": 65.0}, "NVIDIA T4 Tensor Core GPU datasheet (2019), mixed precision"),
    PeakEntry(r"\bRTX 4090\b", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}, _ADA + ", RTX 4090"),
    PeakEntry(r"\bRTX 3090\b", {"fp32": 35.6, "tf32": 35.6, "bf16": 71.0, "fp16": 71.0}, _AMPERE_GA102 + ", RTX 3090"),
)


def dense_peak(device_name: str, precision: str) -> tuple[float, str] | None:
    """(dense peak TFLOP/s, source) of the GPU named ``device_name`` (as
    ``torch.cuda.get_device_name`` gives it) in ``precision`` (fp32, tf32, bf16, fp16), or
    ``None`` for a device or precision the table does not hold (CPUs among them)."""
    for entry in PEAKS:
        if re.search(entry.match, device_name):
            value = entry.tflops.get(precision)
            return (value, entry.source) if value is not None else None
    return None


def peak_for(device_name: str, precision: str, given: float | None) -> tuple[float | None, str | None]:
    """The peak to judge a case against: ``given`` (``--peak-tflops``) if set, else the table's."""
    if given is not None:
        return given, "--peak-tflops"
    found = dense_peak(device_name, precision)
    return found if found is not None else (None, None)
