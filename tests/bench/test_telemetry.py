"""GPU telemetry on the CPU: a fake NVML (and fake nvidia-smi output, and a fake driver library
behind ctypes) stands in for the device; everything above it is the real code."""

import ctypes
import json
import subprocess
import types

import pytest
import torch

from bench import cli
from bench.analyse import fairness
from bench.kinds.step.runner import RunContext, run_case
from bench.record import RECORD_FIELDS, read_flat
from bench.storage.store import write_json
from bench.telemetry import gpu, nvml
from tests.bench.runs import smoke_run
from tests.bench.test_host import case

UUID = "GPU-8d6f1d5e-0000-4c7c-9b42-5f3a1e2b7c10"


class NotSupported(Exception):
    """What pynvml raises for a query the device lacks (NVMLError_NotSupported)."""


class FakeNvml:
    """An H100-like GPU as NVML reports it: milliwatts, MHz, bitmasks, mode integers. The
    energy counter (mJ) rises by ``energy_step_mj`` at every read."""

    def __init__(self, energy_step_mj: int = 7_000, **changes) -> None:
        self.state = dict(
            name="NVIDIA H100 80GB HBM3",
            uuid=UUID,
            bus_id=b"00000000:17:00.0",
            power_limit_mw=700_000,
            default_limit_mw=700_000,
            mig=(0, 0),
            processes=[types.SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30)],
            reasons=0x4 | 0x20,  # software power cap, software thermal slowdown
        )
        self.state.update(changes)
        self.energy_mj, self.energy_step_mj = 1_000_000, energy_step_mj
        self.initialised = False

    def nvmlInit(self):
        self.initialised = True

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        assert index == 0
        return "handle-0"

    def nvmlDeviceGetName(self, handle):
        return self.state["name"]

    def nvmlDeviceGetUUID(self, handle):
        return self.state["uuid"]

    def nvmlDeviceGetPciInfo(self, handle):
        return types.SimpleNamespace(busId=self.state["bus_id"])

    def nvmlDeviceGetVbiosVersion(self, handle):
        return "96.00.99.00.01"

    def nvmlDeviceGetPersistenceMode(self, handle):
        return 1

    def nvmlDeviceGetComputeMode(self, handle):
        return 3

    def nvmlDeviceGetMigMode(self, handle):
        return self.state["mig"]

    def nvmlDeviceGetEccMode(self, handle):
        raise NotSupported("Not Supported")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self.state["power_limit_mw"]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle):
        return self.state["default_limit_mw"]

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {gpu.CLOCK_SM: 1980, gpu.CLOCK_MEM: 2619}[clock]

    def nvmlDeviceGetMaxClockInfo(self, handle, clock):
        return {gpu.CLOCK_SM: 1980, gpu.CLOCK_MEM: 2619}[clock]

    def nvmlDeviceGetApplicationsClock(self, handle, clock):
        return {gpu.CLOCK_SM: 1755, gpu.CLOCK_MEM: 2619}[clock]

    def nvmlDeviceGetPerformanceState(self, handle):
        return 0

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 41

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.state["reasons"]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.state["processes"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(total=80 * 2**30, free=77 * 2**30, used=3 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 312_500

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.energy_mj += self.energy_step_mj
        return self.energy_mj


def test_the_fake_provides_what_the_reader_calls():
    assert all(callable(getattr(FakeNvml(), name)) for name in nvml.NVML_FUNCTIONS)


def test_the_state_of_a_gpu_in_units_and_names():
    [state] = gpu.NvmlReader(FakeNvml(), "pynvml").gpus()
    assert state["uuid"] == UUID and state["pci_bus_id"] == "00000000:17:00.0"
    assert (state["power_limit_w"], state["default_power_limit_w"]) == (700.0, 700.0)  # from mW
    assert (state["sm_clock_mhz"], state["max_sm_clock_mhz"], state["application_sm_clock_mhz"]) == (1980, 1980, 1755)
    assert (state["pstate"], state["compute_mode"], state["persistence_mode"]) == ("P0", "exclusive_process", True)
    assert state["mig_mode"] is False and state["temperature_c"] == 41
    assert state["throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]  # nvml.h bits 0x4, 0x20
    assert state["compute_processes"] == [{"pid": 4242, "used_memory_bytes": 3 * 2**30}]
    assert state["memory_free_bytes"] == 77 * 2**30 and state["energy_counter"] is True
    # A query the device refuses is None, with NVML's reason, and the rest still read.
    assert state["ecc_mode"] is None and state["unsupported"] == {"ecc_mode": "NotSupported: Not Supported"}


def test_unknown_throttle_bits_are_kept_in_hex():
    assert gpu.throttle_reasons(0x1 | 0x8000) == ["gpu_idle", "0x8000"]
    assert gpu.throttle_reasons(0) == []


def test_the_sources_are_tried_in_order_and_each_failure_is_said():
    def missing_bindings():
        raise ImportError("No module named 'pynvml'")

    def missing_library():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    fake = FakeNvml()
    loaded, source = nvml.load((("pynvml", missing_bindings), ("libnvidia-ml", lambda: fake)))
    assert (loaded, source, fake.initialised) == (fake, "libnvidia-ml", True)

    def no_smi(arguments):
        raise FileNotFoundError("nvidia-smi")

    reader, why = gpu.open_reader((("pynvml", missing_bindings), ("libnvidia-ml", missing_library)), smi=no_smi)
    assert reader is None
    assert "pynvml: ImportError" in why and "libnvidia-ml: OSError" in why and "nvidia-smi: FileNotFoundError" in why
    state = gpu.gpu_state(None, why)
    assert state == {"source": None, "unavailable": why, "gpus": []}


# One GPU as `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits` prints it.
SMI_ROW = (
    "0, NVIDIA H100 80GB HBM3, " + UUID + ", 00000000:17:00.0, 96.00.99.00.01, Enabled, Exclusive_Process, "
    "Disabled, [N/A], 700.00, 700.00, 1980, 1980, 1755, 2619, 2619, 2619, P0, 41, 0x0000000000000004, "
    "81559, 78000, 312.50, 550.54.15"
)


def fake_smi(old_driver=False):
    calls = []

    def run(arguments):
        calls.append(arguments)
        if arguments[0].startswith("--query-compute-apps"):
            return f"{UUID}, 4242, 3072\n"
        if old_driver and "clocks_event_reasons" in arguments[0]:
            raise subprocess.CalledProcessError(2, "nvidia-smi")
        return SMI_ROW + "\n"

    return run, calls


def test_nvidia_smi_gives_the_same_state_without_an_energy_counter():
    run, _ = fake_smi()
    [state] = gpu.SmiReader(run).gpus()
    assert state["uuid"] == UUID and state["index"] == 0
    assert (state["persistence_mode"], state["mig_mode"], state["ecc_mode"]) == (True, False, None)
    assert (state["power_limit_w"], state["compute_mode"], state["pstate"]) == (700.0, "exclusive_process", "P0")
    assert state["throttle_reasons"] == ["sw_power_cap"]
    assert state["memory_free_bytes"] == 78000 * 2**20  # MiB
    assert state["compute_processes"] == [{"pid": 4242, "used_memory_bytes": 3072 * 2**20}]
    assert state["energy_counter"] is False and "energy_counter" in state["unsupported"]
    sample = gpu.SmiReader(run).sample(UUID)
    assert sample == {
        "power_w": 312.5,
        "sm_clock_mhz": 1980.0,
        "temperature_c": 41.0,
        "throttle_reasons": ["sw_power_cap"],
        "energy_j": None,
    }


def test_nvidia_smi_of_an_older_driver_is_asked_for_throttle_reasons():
    run, calls = fake_smi(old_driver=True)
    assert gpu.SmiReader(run).sample(UUID)["power_w"] == 312.5
    assert "clocks_throttle_reasons.active" in calls[-1][0]


def test_env_json_maps_each_gpu_to_its_cuda_index():
    reader = gpu.NvmlReader(FakeNvml(), "pynvml")
    state = gpu.gpu_state(reader, None, cuda_uuids=[UUID])
    assert (state["source"], state["driver"], state["cuda_driver"]) == ("pynvml", "550.54.15", "12.4")
    assert state["gpus"][0]["cuda_index"] == 0
    assert gpu.gpu_state(reader, None, cuda_uuids=[])["gpus"][0]["cuda_index"] is None


def test_environment_variables_that_change_cuda_are_kept():
    environ = {"CUDA_VISIBLE_DEVICES": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "HOME": "/x"}
    environ |= {"NVIDIA_TF32_OVERRIDE": "0", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert gpu.environment_variables(environ) == {k: v for k, v in environ.items() if k != "HOME"}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.5
        return self.now


def test_energy_per_step_is_the_counters_rise_over_the_timed_steps():
    # Each read adds 7 J, so each repeat (one read before, one after) spans 7 J.
    telemetry = gpu.CaseTelemetry(gpu.NvmlReader(FakeNvml(energy_step_mj=7_000), "pynvml"), UUID, clock=Clock())
    for _ in range(3):
        telemetry.before_repeat()
        telemetry.after_repeat()
    fields = telemetry.fields(batch_size=64, steps=10)
    assert fields["energy_per_step_j"] == pytest.approx(3 * 7 / 30)
    assert fields["samples_per_joule"] == pytest.approx(64 / (7 / 10))
    assert fields["energy_window_s"] == pytest.approx(3 * 0.5)
    assert fields["gpu_power_w_samples"] == [312.5] * 3 and fields["gpu_sm_clock_mhz_samples"] == [1980] * 3
    assert fields["gpu_throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]
    assert set(fields) <= set(RECORD_FIELDS)


def test_without_an_energy_counter_energy_is_absent_not_zero():
    run, _ = fake_smi()
    telemetry = gpu.CaseTelemetry(gpu.SmiReader(run), UUID, clock=Clock())
    telemetry.before_repeat()
    telemetry.after_repeat()
    fields = telemetry.fields(batch_size=64, steps=10)
    assert fields["energy_per_step_j"] is None and fields["samples_per_joule"] is None
    assert fields["gpu_power_w_samples"] == [312.5]


def test_a_case_on_a_sampled_gpu_records_its_telemetry(monkeypatch):
    """run_case with the device's telemetry faked: one sample per repeat, energy from the
    counter. The case itself runs on the CPU."""
    fake = FakeNvml(energy_step_mj=7_000)
    monkeypatch.setattr(
        gpu.CaseTelemetry, "for_device", classmethod(lambda cls, device: cls(gpu.NvmlReader(fake, "pynvml"), UUID))
    )
    context = RunContext(run_id="r", suite="test", device=torch.device("cpu"), env={})
    record = run_case(case("sgdm", repeats=2, steps=3), context)
    assert record.status == "ok", record.error
    assert record.telemetry_source == "pynvml" and len(record.gpu_power_w_samples) == 2
    assert record.energy_per_step_j == pytest.approx(7 / 3)
    assert record.samples_per_joule == pytest.approx(record.batch_size / (7 / 3))


class FakeLibrary:
    """libnvidia-ml.so.1 as ctypes sees it: C functions returning a status and writing
    through the pointers they are given."""

    def __init__(self):
        self.process_calls = 0

    def nvmlErrorString(self, status):
        return {3: b"Not Supported"}[status]

    def nvmlInit_v2(self):
        return 0

    def nvmlDeviceGetPowerUsage(self, handle, value):
        value._obj.value = 312_500
        return 0

    def nvmlDeviceGetName(self, handle, buffer, length):
        buffer.value = b"NVIDIA H100 80GB HBM3"
        return 0

    def nvmlDeviceGetPciInfo_v3(self, handle, info):
        info._obj.busId = b"00000000:17:00.0"
        return 0

    def nvmlDeviceGetEccMode(self, handle, current, pending):
        return 3

    def nvmlDeviceGetMigMode(self, handle, current, pending):
        current._obj.value, pending._obj.value = 1, 0
        return 0

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle, count, processes):
        self.process_calls += 1
        if processes is None:
            count._obj.value = 1
            return nvml.NVML_ERROR_INSUFFICIENT_SIZE
        processes[0].pid, processes[0].usedGpuMemory = 4242, 2**30
        count._obj.value = 1
        return 0


def test_the_ctypes_binding_reads_through_the_drivers_calling_convention():
    binding = object.__new__(nvml.CtypesNvml)
    binding._lib = FakeLibrary()
    handle = ctypes.c_void_p()
    assert binding.nvmlDeviceGetPowerUsage(handle) == 312_500
    assert binding.nvmlDeviceGetName(handle) == "NVIDIA H100 80GB HBM3"
    assert gpu._text(binding.nvmlDeviceGetPciInfo(handle).busId) == "00000000:17:00.0"
    assert binding.nvmlDeviceGetMigMode(handle) == (1, 0)
    processes = binding.nvmlDeviceGetComputeRunningProcesses(handle)
    assert [(p.pid, p.usedGpuMemory) for p in processes] == [(4242, 2**30)] and binding._lib.process_calls == 2
    with pytest.raises(nvml.NvmlError, match="nvmlDeviceGetEccMode: Not Supported"):
        binding.nvmlDeviceGetEccMode(handle)


def env_with(power_limit_w=700.0, mig_mode=False, torch_version="2.11.0", processes=()):
    state = gpu.NvmlReader(
        FakeNvml(power_limit_mw=int(power_limit_w * 1e3), mig=(int(mig_mode), 0), processes=list(processes)),
        "pynvml",
    )
    return {"torch": torch_version, "cuda": "12.8", "gpu_telemetry": gpu.gpu_state(state, None, cuda_uuids=[UUID])}


def test_differing_power_limit_or_mig_mode_is_refused_and_software_noted():
    notes, refusals = fairness.differences(env_with(), env_with(torch_version="2.12.0"), 0, 0)
    assert notes == ["torch differs: baseline 2.11.0, candidate 2.12.0"] and refusals == []
    _, refusals = fairness.differences(env_with(), env_with(power_limit_w=500.0, mig_mode=True), 0, 0)
    assert refusals == [("all cases", "enforced power limit (W)", 700.0, 500.0), ("all cases", "MIG mode", False, True)]
    # A run without telemetry (a CPU run, an older run) has nothing to refuse on.
    assert fairness.differences({}, env_with(power_limit_w=500.0), None, 0) == ([], [])


def test_compare_refuses_runs_at_different_power_limits(tmp_path, capsys):
    runs = []
    for run_id, limit in (("base", 700.0), ("cand", 500.0)):
        path = smoke_run(tmp_path, run_id)
        write_json(path / "env.json", env_with(power_limit_w=limit))
        records = [read_flat(json.loads(line)) for line in (path / "records.jsonl").read_text().splitlines()]
        (path / "records.jsonl").write_text("".join(json.dumps({**r, "device": "cuda:0"}) + "\n" for r in records))
        runs.append(str(path))
    code = cli.main(["compare", *runs, "--history", str(tmp_path / "h.sqlite")])
    assert code == 2
    assert "enforced power limit (W) differs (baseline 700.0, candidate 500.0)" in capsys.readouterr().err


def test_run_warns_of_other_processes_on_its_gpu():
    other = types.SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30)
    env = env_with(processes=[other])
    [warning] = fairness.sharing_warnings(env, 0, own_pid=1)
    assert "1 other compute process(es) (pid 4242) hold 3.0 GiB" in warning
    assert fairness.sharing_warnings(env, 0, own_pid=4242) == []  # only this process
    assert fairness.sharing_warnings(env, 1, own_pid=1) == []  # another GPU
