"""The state of each GPU, and samples of it while a case runs.

Two readers give the same dicts (units in the keys: ``_w`` watts, ``_mhz``, ``_c`` degrees
Celsius, ``_bytes``, ``_j`` joules):

- ``NvmlReader`` over any NVML (``bench.telemetry.nvml.load``: pynvml or the driver's
  library through ctypes), the full set, the total-energy counter included (Volta and later);
- ``SmiReader`` over ``nvidia-smi --query-gpu=... --format=csv`` where NVML cannot be loaded;
  it has no energy counter, so energy is absent there, with the reason.

``gpu_state()`` describes every GPU for env.json; ``CaseTelemetry`` samples the case's GPU
before and after every repeat and turns that into Record fields. A field the device does not
support is None, and ``unsupported`` in the GPU's state says why.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from bench.telemetry import nvml as nvml_module

# nvml.h: nvmlClockType_t, nvmlTemperatureSensors_t, nvmlComputeMode_t.
CLOCK_GRAPHICS, CLOCK_SM, CLOCK_MEM = 0, 1, 2
TEMPERATURE_GPU = 0
COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}
#: nvml.h nvmlClocksEventReason* bits (formerly nvmlClocksThrottleReason*): why the clocks
#: are below their maximum. ``gpu_idle`` is no fault: an idle GPU clocks down.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: Environment variables that change what CUDA, cuDNN, cuBLAS, the allocator or the CPU
#: thread pools do; every set variable with one of these prefixes goes into env.json.
ENVIRONMENT_PREFIXES = (
    "CUDA_",
    "CUBLAS",
    "CUDNN",
    "NVIDIA_TF32_OVERRIDE",
    "NVIDIA_VISIBLE_DEVICES",
    "PYTORCH_",
    "TORCH_CUDNN",
    "TORCH_ALLOW_TF32",
    "TORCHINDUCTOR_",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def throttle_reasons(mask: int) -> list[str]:
    """The names of the reasons set in an NVML clocks-event bitmask; unknown bits as hex."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return names + ([hex(unknown)] if unknown else [])


def environment_variables(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The set variables named by ``ENVIRONMENT_PREFIXES`` (unset ones are absent)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in sorted(environ.items()) if k.startswith(ENVIRONMENT_PREFIXES)}


class Reader(Protocol):
    source: str

    def driver(self) -> dict:
        """Driver version and the CUDA version the driver supports."""

    def gpus(self) -> list[dict]:
        """The static state of every GPU (see ``NvmlReader.gpus``)."""

    def sample(self, uuid: str) -> dict:
        """power_w, sm_clock_mhz, temperature_c, throttle_reasons, energy_j of one GPU now."""


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlReader:
    """GPU state from an NVML object (pynvml's function names; see bench.telemetry.nvml)."""

    def __init__(self, nvml: object, source: str) -> None:
        self.nvml, self.source = nvml, source
        self._handles: dict[str, object] = {}

    def _read(self, into: dict, unsupported: dict, key: str, query: Callable[[], object]) -> None:
        try:
            into[key] = query()
        except Exception as error:  # noqa: BLE001  (NVMLError_NotSupported and kin: recorded, not fatal)
            into[key] = None
            unsupported[key] = f"{type(error).__name__}: {error}".rstrip(": ")

    def driver(self) -> dict:
        out: dict = {}
        unsupported: dict = {}
        self._read(out, unsupported, "driver", lambda: _text(self.nvml.nvmlSystemGetDriverVersion()))
        # nvml.h: the CUDA version as 1000 * major + 10 * minor.
        self._read(out, unsupported, "cuda_driver", lambda: _cuda_version(self.nvml.nvmlSystemGetCudaDriverVersion()))
        return {**out, "unsupported": unsupported}

    def gpus(self) -> list[dict]:
        """Per GPU: index (NVML's), name, uuid, pci_bus_id, vbios, persistence_mode,
        compute_mode, mig_mode, ecc_mode, power_limit_w (enforced), default_power_limit_w,
        clocks (current, max and application SM and memory clocks, MHz), pstate,
        temperature_c, throttle_reasons, memory_total_bytes, memory_free_bytes and
        compute_processes (pid, used_memory_bytes); ``unsupported`` names each field the
        device refused, with NVML's reason."""
        found = []
        for index in range(self.nvml.nvmlDeviceGetCount()):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            found.append(self._describe(index, handle))
        return found

    def _describe(self, index: int, handle: object) -> dict:
        n = self.nvml
        gpu: dict = {"index": index}
        unsupported: dict = {}

        def read(key: str, query: Callable[[], object]) -> None:
            self._read(gpu, unsupported, key, query)

        read("name", lambda: _text(n.nvmlDeviceGetName(handle)))
        read("uuid", lambda: _text(n.nvmlDeviceGetUUID(handle)))
        read("pci_bus_id", lambda: _text(n.nvmlDeviceGetPciInfo(handle).busId))
        read("vbios", lambda: _text(n.nvmlDeviceGetVbiosVersion(handle)))
        read("persistence_mode", lambda: bool(n.nvmlDeviceGetPersistenceMode(handle)))
        read("compute_mode", lambda: COMPUTE_MODES.get(n.nvmlDeviceGetComputeMode(handle)))
        read("mig_mode", lambda: bool(n.nvmlDeviceGetMigMode(handle)[0]))
        read("ecc_mode", lambda: bool(n.nvmlDeviceGetEccMode(handle)[0]))
        read("power_limit_w", lambda: n.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3)
        read("default_power_limit_w", lambda: n.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1e3)
        for clock, name in ((CLOCK_SM, "sm"), (CLOCK_MEM, "memory")):
            read(f"{name}_clock_mhz", lambda c=clock: n.nvmlDeviceGetClockInfo(handle, c))
            read(f"max_{name}_clock_mhz", lambda c=clock: n.nvmlDeviceGetMaxClockInfo(handle, c))
            read(f"application_{name}_clock_mhz", lambda c=clock: n.nvmlDeviceGetApplicationsClock(handle, c))
        read("pstate", lambda: f"P{n.nvmlDeviceGetPerformanceState(handle)}")
        read("temperature_c", lambda: n.nvmlDeviceGetTemperature(handle, TEMPERATURE_GPU))
        read("throttle_reasons", lambda: throttle_reasons(self._reasons(handle)))
        read("memory_total_bytes", lambda: n.nvmlDeviceGetMemoryInfo(handle).total)
        read("memory_free_bytes", lambda: n.nvmlDeviceGetMemoryInfo(handle).free)
        read(
            "compute_processes",
            lambda: [
                {"pid": p.pid, "used_memory_bytes": p.usedGpuMemory}
                for p in n.nvmlDeviceGetComputeRunningProcesses(handle)
            ],
        )
        read("energy_counter", lambda: n.nvmlDeviceGetTotalEnergyConsumption(handle) is not None)
        gpu["unsupported"] = unsupported
        if gpu.get("uuid"):
            self._handles[gpu["uuid"]] = handle
        return gpu

    def _reasons(self, handle: object) -> int:
        query = getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        query = query or self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons  # older pynvml
        return query(handle)

    def sample(self, uuid: str) -> dict:
        """Power (W), SM clock (MHz), temperature (°C), throttle reasons and the total-energy
        counter (J since the driver loaded) of the GPU ``uuid``; None for what it lacks."""
        if uuid not in self._handles:
            self.gpus()
        handle, n = self._handles[uuid], self.nvml
        out: dict = {}
        unsupported: dict = {}
        self._read(out, unsupported, "power_w", lambda: n.nvmlDeviceGetPowerUsage(handle) / 1e3)
        self._read(out, unsupported, "sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(handle, CLOCK_SM))
        self._read(out, unsupported, "temperature_c", lambda: n.nvmlDeviceGetTemperature(handle, TEMPERATURE_GPU))
        self._read(out, unsupported, "throttle_reasons", lambda: throttle_reasons(self._reasons(handle)))
        self._read(out, unsupported, "energy_j", lambda: n.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3)
        return out


#: nvidia-smi's query fields for each key of a GPU's state (``nvidia-smi --help-query-gpu``).
SMI_FIELDS = {
    "index": "index",
    "name": "name",
    "uuid": "uuid",
    "pci_bus_id": "pci.bus_id",
    "vbios": "vbios_version",
    "persistence_mode": "persistence_mode",
    "compute_mode": "compute_mode",
    "mig_mode": "mig.mode.current",
    "ecc_mode": "ecc.mode.current",
    "power_limit_w": "enforced.power.limit",
    "default_power_limit_w": "power.default_limit",
    "sm_clock_mhz": "clocks.sm",
    "max_sm_clock_mhz": "clocks.max.sm",
    "application_sm_clock_mhz": "clocks.applications.graphics",
    "memory_clock_mhz": "clocks.mem",
    "max_memory_clock_mhz": "clocks.max.mem",
    "application_memory_clock_mhz": "clocks.applications.memory",
    "pstate": "pstate",
    "temperature_c": "temperature.gpu",
    "throttle_mask": "clocks_event_reasons.active",
    "memory_total_bytes": "memory.total",
    "memory_free_bytes": "memory.free",
    "power_w": "power.draw",
    "driver": "driver_version",
}
_SMI_TEXT = {"name", "uuid", "pci_bus_id", "vbios", "pstate", "driver", "compute_mode"}
_SMI_FLAGS = {"persistence_mode", "mig_mode", "ecc_mode"}
_MIB = 2**20


def _run_smi(arguments: Sequence[str]) -> str:
    done = subprocess.run(["nvidia-smi", *arguments], capture_output=True, text=True, timeout=20, check=True)
    return done.stdout


def parse_smi_value(key: str, text: str) -> object:
    """One CSV cell of ``--format=csv,noheader,nounits`` as the state's value: None for
    ``[N/A]``/``[Not Supported]``, flags as bools, MiB as bytes, numbers as floats."""
    text = text.strip()
    if not text or text.startswith("[") or text == "N/A":
        return None
    if key in _SMI_TEXT:
        return text.replace(" ", "_").lower() if key == "compute_mode" else text
    if key in _SMI_FLAGS:
        return text.lower() == "enabled"
    if key == "throttle_mask":
        return int(text, 16)
    if key == "index":
        return int(text)
    if key.endswith("_bytes"):
        return int(float(text) * _MIB)
    return float(text)


class SmiReader:
    """GPU state from ``nvidia-smi``; ``run`` (arguments -> stdout) is a parameter so the
    parsing is testable without a GPU. nvidia-smi has no energy counter."""

    source = "nvidia-smi"

    def __init__(self, run: Callable[[Sequence[str]], str] = _run_smi) -> None:
        self.run = run
        self._fields = dict(SMI_FIELDS)

    def _query(self) -> list[dict]:
        try:
            text = self._csv()
        except subprocess.CalledProcessError:
            # Drivers before 535 call the reasons clocks_throttle_reasons.
            self._fields["throttle_mask"] = "clocks_throttle_reasons.active"
            text = self._csv()
        rows = []
        for line in filter(None, text.splitlines()):
            cells = [cell.strip() for cell in line.split(",")]
            row = {key: parse_smi_value(key, cell) for key, cell in zip(self._fields, cells, strict=True)}
            mask = row.pop("throttle_mask")
            row["throttle_reasons"] = None if mask is None else throttle_reasons(mask)
            rows.append(row)
        return rows

    def _csv(self) -> str:
        return self.run([f"--query-gpu={','.join(self._fields.values())}", "--format=csv,noheader,nounits"])

    def driver(self) -> dict:
        rows = self._query()
        return {"driver": rows[0]["driver"] if rows else None, "cuda_driver": None, "unsupported": {}}

    def gpus(self) -> list[dict]:
        processes: dict[str, list[dict]] = {}
        for line in filter(
            None,
            self.run(["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"]).splitlines(),
        ):
            uuid, pid, used = (cell.strip() for cell in line.split(","))
            used_bytes = parse_smi_value("used_memory_bytes", used)
            processes.setdefault(uuid, []).append({"pid": int(pid), "used_memory_bytes": used_bytes})
        gpus = []
        for row in self._query():
            for key in ("power_w", "driver"):
                row.pop(key)
            row["compute_processes"] = processes.get(row["uuid"], [])
            row["energy_counter"] = False
            row["unsupported"] = {"energy_counter": "nvidia-smi reports no energy counter"}
            gpus.append(row)
        return gpus

    def sample(self, uuid: str) -> dict:
        row = next(r for r in self._query() if r["uuid"] == uuid)
        keys = ("power_w", "sm_clock_mhz", "temperature_c", "throttle_reasons")
        return {**{k: row[k] for k in keys}, "energy_j": None}


_READER: tuple[Reader | None, str | None] | None = None


def open_reader(
    nvml_loaders: tuple | None = None, smi: Callable[[Sequence[str]], str] = _run_smi
) -> tuple[Reader | None, str | None]:
    """(reader, None) from the first source that works: NVML (pynvml or ctypes), then
    nvidia-smi; else (None, why none did)."""
    nvml, source_or_why_not = nvml_module.load(nvml_loaders)
    if nvml is not None:
        return NvmlReader(nvml, source_or_why_not), None
    reader = SmiReader(smi)
    try:
        reader.gpus()
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        return None, f"{source_or_why_not}; nvidia-smi: {type(error).__name__}: {error}"
    return reader, None


def reader() -> tuple[Reader | None, str | None]:
    """The process's reader, opened once."""
    global _READER
    if _READER is None:
        _READER = open_reader()
    return _READER


def cuda_uuid(index: int) -> str | None:
    """The NVML UUID ('GPU-...') of CUDA device ``index``, from torch's device properties."""
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def find_gpu(gpus: Sequence[dict], uuid: str | None) -> dict | None:
    """The GPU with this UUID (case aside: CUDA and NVML spell the hex digits their own way)."""
    if uuid is None:
        return None
    return next((gpu for gpu in gpus if str(gpu.get("uuid", "")).lower() == uuid.lower()), None)


def gpu_state(
    source: Reader | None = None, why_not: str | None = None, cuda_uuids: Sequence[str | None] | None = None
) -> dict:
    """For env.json: the telemetry source (or why there is none), the driver, and every GPU's
    state (``NvmlReader.gpus``), each with the CUDA index it has in this process (None when
    CUDA does not see it)."""
    if source is None and why_not is None:
        source, why_not = reader()
    if source is None:
        return {"source": None, "unavailable": why_not, "gpus": []}
    if cuda_uuids is None:
        cuda_uuids = [cuda_uuid(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    gpus = source.gpus()
    for index, uuid in enumerate(cuda_uuids):
        match = find_gpu(gpus, uuid)
        if match is not None:
            match["cuda_index"] = index
    for gpu in gpus:
        gpu.setdefault("cuda_index", None)
    return {"source": source.source, **source.driver(), "gpus": gpus}


class CaseTelemetry:
    """Samples one GPU around every repeat of a case: ``before_repeat()`` just before the
    timed steps (the device is idle: the previous repeat ended on a synchronisation) and
    ``after_repeat()`` just after them (idle again), so the energy counter's difference is
    the energy of exactly those steps, to the counter's resolution (NVML: mJ, updated every
    few tens of ms, so repeats much shorter than 100 ms read coarsely)."""

    def __init__(self, source: Reader | None, uuid: str | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.source, self.uuid, self.clock = source, uuid, clock
        self.source_name = source.source if source else None
        self.samples: list[dict] = []
        self.energy_j = 0.0
        self.window_s = 0.0
        self._start: tuple[float | None, float] | None = None

    @classmethod
    def for_device(cls, device: torch.device) -> CaseTelemetry:
        """Telemetry of a CUDA device; on any other device (or without a reader) it
        samples nothing and its fields are None."""
        if device.type != "cuda":
            return cls(None, None)
        source, _ = reader()
        state = find_gpu(source.gpus(), cuda_uuid(device.index or 0)) if source else None
        # A MIG instance's UUID is not among the GPUs' (MIG-...): nothing to sample then.
        return cls(source, state["uuid"] if state else None)

    @property
    def active(self) -> bool:
        return self.source is not None and self.uuid is not None

    def _sample(self) -> dict | None:
        try:
            return self.source.sample(self.uuid)
        except (OSError, subprocess.SubprocessError, StopIteration, ValueError):
            # Telemetry that breaks mid-case (nvidia-smi gone, GPU fell off the bus) must
            # not fail the case: it stops, and the fields say only what was sampled.
            self.source = None
            return None

    def before_repeat(self) -> None:
        sample = self._sample() if self.active else None
        self._start = None if sample is None else (sample.get("energy_j"), self.clock())

    def after_repeat(self) -> None:
        if not self.active or self._start is None:
            return
        sample = self._sample()
        if sample is None:
            return
        self.samples.append(sample)
        start_j, start_s = self._start
        if start_j is not None and sample.get("energy_j") is not None:
            self.energy_j += sample["energy_j"] - start_j
            self.window_s += self.clock() - start_s
        else:
            self.energy_j = float("nan")

    def fields(self, batch_size: int, steps: int) -> dict:
        """The Record's telemetry fields after ``len(samples)`` repeats of ``steps`` steps."""
        if not self.samples:
            return {}
        reasons = sorted({r for s in self.samples for r in s.get("throttle_reasons") or []})
        energy_per_step = self.energy_j / (len(self.samples) * steps) if self.energy_j == self.energy_j else None
        return {
            "telemetry_source": self.source_name,
            "gpu_power_w_samples": [s.get("power_w") for s in self.samples],
            "gpu_sm_clock_mhz_samples": [s.get("sm_clock_mhz") for s in self.samples],
            "gpu_temperature_c_samples": [s.get("temperature_c") for s in self.samples],
            "gpu_throttle_reasons": reasons,
            "energy_per_step_j": energy_per_step,
            "samples_per_joule": batch_size / energy_per_step if energy_per_step else None,
            "energy_window_s": self.window_s if energy_per_step is not None else None,
        }
