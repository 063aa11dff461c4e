"""A worker's load, read on its heartbeat thread (never the training loop's): the GPU's
utilisation, memory and temperature through NVML (nvidia-ml-py's ``pynvml``) and the host's
CPU % and RAM through psutil, as a `storage.workers.LoadSample` the heartbeat stores.

A sensor that is not there reads as None, never zero: no GPU (a CPU worker), no NVIDIA
driver (`pynvml.NVMLError` at ``nvmlInit``: said once in the log), a reading the GPU does not
support (a MIG slice has no utilisation). CPU % is psutil's ``cpu_percent(interval=None)``:
the host's busy share since the previous sample, without waiting (the first call, made when
the sensors are built, only starts the clock; psutil keeps that clock per process, so one
`Sensors` per worker process). Which NVML device: the torch device's UUID
when CUDA is initialised in this process, else its index through ``CUDA_VISIBLE_DEVICES``
(indices or UUIDs), else the index itself; a guess by index is replaced by the UUID once
CUDA comes up (CUDA's and NVML's orders can differ on a machine with mixed GPUs).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from diffbench.storage.workers import LoadSample


class Sensors:
    """Reads `LoadSample`s for one worker's device (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
    Thread-safe; `close` shuts NVML down."""

    def __init__(self, device: str, log: Callable[[str], None] | None = None) -> None:
        self.device, self.log = device, log
        self._lock = threading.Lock()
        self._nvml: Any = None  # the pynvml module once initialised
        self._handle: Any = None
        self._exact = False  # the handle was found by the UUID torch gave
        self._gpu = device.startswith("cuda")
        self._psutil: Any = None
        try:
            import psutil

            psutil.cpu_percent(interval=None)  # starts the clock; this first value means nothing
            self._psutil = psutil
        except ImportError as error:  # a broken install: host load absent, training goes on
            self._say(f"no host load: {error}")

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    # ------------------------------------------------------------------ GPU

    def _gpu_handle(self) -> Any:
        """The NVML handle of this worker's GPU; None without a GPU or NVML. Found once, and
        once more by the device's UUID when CUDA came up after a guess by index (an idle
        worker samples before its first run initialises CUDA)."""
        if (self._handle is not None and not self._exact and self._nvml is not None
                and _torch_uuid(self._index()) is not None):
            with contextlib.suppress(self._nvml.NVMLError):
                self._handle = self._find(self._nvml)
        if not self._gpu or self._handle is not None:
            return self._handle
        try:
            import pynvml
        except ImportError as error:  # a broken install: no GPU sensor, training goes on
            self._say(f"no GPU sensor: {error}")
            self._gpu = False
            return None
        try:
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = self._find(pynvml)
        except pynvml.NVMLError as error:  # no driver, no such device: no GPU sensor
            self._say(f"no GPU sensor: {type(error).__name__}: {error}")
            self._gpu = False
            self.close()
        return self._handle

    def _index(self) -> int:
        return int(self.device.partition(":")[2] or 0)

    def _find(self, pynvml: Any) -> Any:
        index = self._index()
        uuid = _torch_uuid(index)
        self._exact = uuid is not None
        if uuid is None:
            visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
                       if v.strip()]
            if index < len(visible):
                if not visible[index].isdigit():
                    uuid = visible[index]
                else:
                    index = int(visible[index])
        if uuid is not None:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid)
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def _read_gpu(self) -> dict[str, Any]:
        handle = self._gpu_handle()
        if handle is None:
            return {}
        nvml, out = self._nvml, {}
        readings = {
            "gpu_util": lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "gpu_temp": lambda: float(nvml.nvmlDeviceGetTemperature(
                handle, nvml.NVML_TEMPERATURE_GPU)),
            "gpu_memory": lambda: nvml.nvmlDeviceGetMemoryInfo(handle)}
        for key, read in readings.items():  # one not supported here (a MIG slice, an old
            with contextlib.suppress(nvml.NVMLError):  # board) stays absent
                out[key] = read()
        memory = out.pop("gpu_memory", None)
        if memory is not None:
            out["gpu_memory_used"], out["gpu_memory_total"] = int(memory.used), int(memory.total)
        return out

    # ------------------------------------------------------------------ all

    def sample(self) -> LoadSample:
        """The load now; each absent sensor None."""
        with self._lock:
            values = self._read_gpu()
            if self._psutil is not None:
                memory = self._psutil.virtual_memory()
                values.update(cpu_percent=float(self._psutil.cpu_percent(interval=None)),
                              ram_used=int(memory.total - memory.available),
                              ram_total=int(memory.total))
            return LoadSample(**values)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as error:  # e.g. not initialised: nothing to free
                self._say(f"NVML shutdown: {error}")
            self._nvml, self._handle = None, None


def load(sensors: Sensors | None) -> LoadSample | None:
    """What a heartbeat carries: a sample, or None without sensors (tests, tools)."""
    return None if sensors is None else sensors.sample()


def _torch_uuid(index: int) -> str | None:
    """The NVML UUID (``GPU-…``) of CUDA device ``index``, if this process has CUDA up."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except (RuntimeError, AttributeError, AssertionError):
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
