"""NVML, the NVIDIA driver's management library, through whatever this machine has.

``load()`` returns an object with the pynvml functions that ``bench.telemetry.gpu`` calls
(``NVML_FUNCTIONS``), named and returning as in NVIDIA's bindings (``nvidia-ml-py``):

1. ``pynvml`` itself, where the optional extra is installed;
2. ``CtypesNvml``: the driver's own ``libnvidia-ml.so.1`` through ctypes, for machines
   that have the driver but no bindings (the declarations follow ``nvml.h``);

and the reason when neither loads (no driver, no GPU). Both raise on a query the device
does not support; callers record that per field.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from types import SimpleNamespace

#: What bench.telemetry.gpu calls; a fake NVML in the tests provides the same.
NVML_FUNCTIONS = (
    "nvmlInit",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetVbiosVersion",
    "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceGetComputeMode",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerManagementDefaultLimit",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetApplicationsClock",
    "nvmlDeviceGetPerformanceState",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
)
LIBRARY = "libnvidia-ml.so.1"
NVML_SUCCESS = 0
NVML_ERROR_INSUFFICIENT_SIZE = 7
_BUFFER = 96  # larger than every NVML string buffer used here (nvml.h: 80 at most)


class NvmlError(RuntimeError):
    """An NVML call that returned an error; the message is NVML's own (nvmlErrorString)."""


class _PciInfo(ctypes.Structure):
    # nvml.h nvmlPciInfo_t (v3)
    _fields_ = [
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
    ]


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _ProcessInfo(ctypes.Structure):
    # nvml.h nvmlProcessInfo_t (v2, used by the _v3 process queries)
    _fields_ = [
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


class CtypesNvml:
    """The pynvml functions of ``NVML_FUNCTIONS`` over ``libnvidia-ml.so.1`` loaded by ctypes.
    Raises OSError when the library is not there."""

    def __init__(self, library: str = LIBRARY) -> None:
        self._lib = ctypes.CDLL(library)
        self._lib.nvmlErrorString.restype = ctypes.c_char_p

    def _call(self, name: str, *args: object) -> None:
        function = getattr(self._lib, name)
        status = function(*args)
        if status != NVML_SUCCESS:
            raise NvmlError(f"{name}: {self._lib.nvmlErrorString(status).decode()}")

    def _uint(self, name: str, *args: object) -> int:
        value = ctypes.c_uint()
        self._call(name, *args, ctypes.byref(value))
        return value.value

    def _pair(self, name: str, handle: object) -> tuple[int, int]:
        current, pending = ctypes.c_uint(), ctypes.c_uint()
        self._call(name, handle, ctypes.byref(current), ctypes.byref(pending))
        return current.value, pending.value

    def _string(self, name: str, *args: object) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        self._call(name, *args, buffer, ctypes.c_uint(_BUFFER))
        return buffer.value.decode()

    def nvmlInit(self) -> None:
        self._call("nvmlInit_v2")

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._string("nvmlSystemGetDriverVersion")

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        value = ctypes.c_int()
        self._call("nvmlSystemGetCudaDriverVersion", ctypes.byref(value))
        return value.value

    def nvmlDeviceGetCount(self) -> int:
        return self._uint("nvmlDeviceGetCount_v2")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle))
        return handle

    def nvmlDeviceGetName(self, handle: object) -> str:
        return self._string("nvmlDeviceGetName", handle)

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return self._string("nvmlDeviceGetUUID", handle)

    def nvmlDeviceGetVbiosVersion(self, handle: object) -> str:
        return self._string("nvmlDeviceGetVbiosVersion", handle)

    def nvmlDeviceGetPciInfo(self, handle: object) -> _PciInfo:
        info = _PciInfo()
        self._call("nvmlDeviceGetPciInfo_v3", handle, ctypes.byref(info))
        return info

    def nvmlDeviceGetPersistenceMode(self, handle: object) -> int:
        return self._uint("nvmlDeviceGetPersistenceMode", handle)

    def nvmlDeviceGetComputeMode(self, handle: object) -> int:
        return self._uint("nvmlDeviceGetComputeMode", handle)

    def nvmlDeviceGetMigMode(self, handle: object) -> tuple[int, int]:
        return self._pair("nvmlDeviceGetMigMode", handle)

    def nvmlDeviceGetEccMode(self, handle: object) -> tuple[int, int]:
        return self._pair("nvmlDeviceGetEccMode", handle)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int:
        return self._uint("nvmlDeviceGetEnforcedPowerLimit", handle)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: object) -> int:
        return self._uint("nvmlDeviceGetPowerManagementDefaultLimit", handle)

    def nvmlDeviceGetClockInfo(self, handle: object, clock: int) -> int:
        return self._uint("nvmlDeviceGetClockInfo", handle, ctypes.c_uint(clock))

    def nvmlDeviceGetMaxClockInfo(self, handle: object, clock: int) -> int:
        return self._uint("nvmlDeviceGetMaxClockInfo", handle, ctypes.c_uint(clock))

    def nvmlDeviceGetApplicationsClock(self, handle: object, clock: int) -> int:
        return self._uint("nvmlDeviceGetApplicationsClock", handle, ctypes.c_uint(clock))

    def nvmlDeviceGetPerformanceState(self, handle: object) -> int:
        return self._uint("nvmlDeviceGetPerformanceState", handle)

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        return self._uint("nvmlDeviceGetTemperature", handle, ctypes.c_uint(sensor))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: object) -> int:
        value = ctypes.c_ulonglong()
        # The older name of the same query, for drivers before 535.
        name = "nvmlDeviceGetCurrentClocksEventReasons"
        if not hasattr(self._lib, name):
            name = "nvmlDeviceGetCurrentClocksThrottleReasons"
        self._call(name, handle, ctypes.byref(value))
        return value.value

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[SimpleNamespace]:
        count = ctypes.c_uint(0)
        function = self._lib.nvmlDeviceGetComputeRunningProcesses_v3
        status = function(handle, ctypes.byref(count), None)
        if status == NVML_SUCCESS:
            return []
        if status != NVML_ERROR_INSUFFICIENT_SIZE:
            raise NvmlError(f"nvmlDeviceGetComputeRunningProcesses_v3: {self._lib.nvmlErrorString(status).decode()}")
        count.value = count.value * 2 + 4  # room for processes that start meanwhile
        processes = (_ProcessInfo * count.value)()
        self._call("nvmlDeviceGetComputeRunningProcesses_v3", handle, ctypes.byref(count), processes)
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.usedGpuMemory) for p in processes[: count.value]]

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory:
        memory = _Memory()
        self._call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory))
        return memory

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        return self._uint("nvmlDeviceGetPowerUsage", handle)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        value = ctypes.c_ulonglong()
        self._call("nvmlDeviceGetTotalEnergyConsumption", handle, ctypes.byref(value))
        return value.value


def _pynvml() -> object:
    import pynvml  # the optional extra nvidia-ml-py

    return pynvml


def load(loaders: tuple[tuple[str, Callable[[], object]], ...] | None = None) -> tuple[object | None, str]:
    """(an initialised NVML, its source) from the first loader that works: ``pynvml`` (the
    nvidia-ml-py bindings) or ``libnvidia-ml`` (ctypes); else (None, why each failed)."""
    loaders = loaders or (("pynvml", _pynvml), ("libnvidia-ml", CtypesNvml))
    reasons = []
    for source, loader in loaders:
        try:
            nvml = loader()
            nvml.nvmlInit()
        except Exception as error:  # noqa: BLE001  (ImportError, OSError, NVMLError: all mean "not here")
            reasons.append(f"{source}: {type(error).__name__}: {error}")
            continue
        return nvml, source
    return None, "; ".join(reasons)
