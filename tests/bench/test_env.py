"""Environment capture, including the CUDA branch exercised on a CPU machine with fakes."""

from types import SimpleNamespace

from bench.measure import env

PROC_DRIVER = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)


def test_driver_version_from_proc_text():
    assert env.parse_proc_driver_version(PROC_DRIVER) == "550.54.15"
    open_kernel = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n"
    assert env.parse_proc_driver_version(open_kernel) == "570.86.15"
    assert env.parse_proc_driver_version("nothing here") is None


def test_gpus_reads_each_device(monkeypatch):
    props = [
        SimpleNamespace(
            name="NVIDIA H100 80GB HBM3", total_memory=85_045_559_296, major=9, minor=0, multi_processor_count=132
        ),
        SimpleNamespace(
            name="NVIDIA A100-SXM4-40GB", total_memory=42_298_834_944, major=8, minor=0, multi_processor_count=108
        ),
    ]
    monkeypatch.setattr(env.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(env.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(env.torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(env, "nvidia_driver", lambda: "550.54.15")
    found = env.gpus()
    assert [g["name"] for g in found] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert [g["compute_capability"] for g in found] == ["9.0", "8.0"]
    assert found[0]["memory_bytes"] == 85_045_559_296
    assert all(g["driver"] == "550.54.15" for g in found)


def test_no_gpus_without_cuda(monkeypatch):
    monkeypatch.setattr(env.torch.cuda, "is_available", lambda: False)
    assert env.gpus() == []


def test_git_state_outside_a_checkout(tmp_path):
    assert env.git_state(tmp_path) == (None, None)
