"""A worker's load: the sensors (NVML through a stand-in `pynvml` module, psutil for real),
absent sensors as None, never zero; the heartbeat thread reads and stores them (the
training thread never does), and the storage keeps the last few per worker."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from diffbench.storage import queue, workers
from diffbench.storage.db import open_database
from diffbench.storage.runs import RunSpec
from diffbench.storage.workers import KEEP_LOAD, LoadSample
from diffbench.tui.runner.sensors import Sensors, load
from diffbench.tui.runner.worker import Heartbeat
from tests.postgres_db import KINDS, database_url

GIB = 2**30


class FakeNVML(types.ModuleType):
    """What the sensors call of nvidia-ml-py, for one or two GPUs; ``missing`` readings
    raise NVMLError as a GPU that does not support them does."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, *, fail_init: bool = False, missing: tuple[str, ...] = ()) -> None:
        super().__init__("pynvml")
        self.fail_init, self.missing, self.calls = fail_init, missing, []
        self.shut = False

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(("index", index))
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(("uuid", uuid))
        return uuid

    def _read(self, name, value):
        self.calls.append((name, threading.current_thread().name))
        if name in self.missing:
            raise self.NVMLError("Not Supported")
        return value

    def nvmlDeviceGetUtilizationRates(self, handle):
        return self._read("util", types.SimpleNamespace(gpu=87, memory=40))

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self._read("memory", types.SimpleNamespace(used=41 * GIB, total=80 * GIB))

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self._read("temp", 64)


@pytest.fixture
def nvml(monkeypatch):
    def install(**kwargs):
        fake = FakeNVML(**kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake
    return install


def test_gpu_and_host_readings(nvml, monkeypatch):
    fake = nvml()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sensors = Sensors("cuda:1")
    sample = sensors.sample()
    assert (sample.gpu_util, sample.gpu_temp) == (87.0, 64.0)
    assert (sample.gpu_memory_used, sample.gpu_memory_total) == (41 * GIB, 80 * GIB)
    assert 0.0 <= sample.cpu_percent <= 100.0 and 0 < sample.ram_used <= sample.ram_total
    assert ("index", 1) in fake.calls and sample.has_gpu
    sensors.close()
    assert fake.shut


def test_visible_devices_pick_the_nvml_device(nvml, monkeypatch):
    fake = nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    Sensors("cuda:1").sample()
    assert ("index", 5) in fake.calls
    fake = nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    Sensors("cuda").sample()
    assert ("uuid", "GPU-aaaa") in fake.calls


def test_absent_sensors_are_none_not_zero(nvml):
    nvml(missing=("util", "temp"))  # a MIG slice: memory only
    sample = Sensors("cuda:0").sample()
    assert (sample.gpu_util, sample.gpu_temp) == (None, None)
    assert sample.gpu_memory_used == 41 * GIB and sample.has_gpu

    said = []
    nvml(fail_init=True)  # no NVIDIA driver: said once, then no GPU readings at all
    sensors = Sensors("cuda:0", log=said.append)
    first, second = sensors.sample(), sensors.sample()
    for sample in (first, second):
        assert (sample.gpu_util, sample.gpu_memory_used, sample.gpu_memory_total,
                sample.gpu_temp) == (None,) * 4
        assert sample.cpu_percent is not None  # the host's readings still come
    assert said == ["no GPU sensor: NVMLError: NVML Shared Library Not Found"]

    fake = nvml()
    cpu = Sensors("cpu").sample()  # a CPU worker never asks NVML
    assert not cpu.has_gpu and fake.calls == []
    assert load(None) is None


def test_real_pynvml_without_a_driver_fails_softly():
    """nvidia-ml-py is installed (a dependency) and, without a driver, says so with
    NVMLError (on a GPU machine this reads the GPU instead)."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        sample = Sensors("cuda:0").sample()
        assert sample.gpu_util is None and sample.cpu_percent is not None
    else:
        pynvml.nvmlShutdown()
        assert Sensors("cuda:0").sample().has_gpu


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield database
    database.dispose()


def test_heartbeats_carry_the_load_read_on_their_thread(db, nvml):
    fake = nvml()
    worker = workers.register_worker(db, host="h", pid=1, device="cuda:0").id
    (run_id,) = queue.enqueue(db, [RunSpec("tiny", "adamw", "linear", 1e-3, 0.0, 0)]).ids
    queue.claim_next(db, worker, lease_s=60)
    beat = Heartbeat(db, worker, run_id, lease_s=0.15, on_cancel=lambda: None,
                     sensors=Sensors("cuda:0"))
    beat.start()
    deadline = time.monotonic() + 10
    while len(workers.load_history(db).get(worker, ())) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    beat.stop()
    samples = workers.load_history(db)[worker]
    assert len(samples) >= 3 and all(s.gpu_util == 87.0 for s in samples)
    assert all(s.at is not None for s in samples)
    threads = {thread for name, thread in fake.calls if name == "util"}
    assert threads == {f"heartbeat-run-{run_id}"}  # never the training (main) thread


@pytest.fixture(params=KINDS)
def any_db(request, tmp_path):
    with database_url(request.param, tmp_path) as url:
        database = open_database(url)
        yield database
        database.dispose()


def test_the_storage_keeps_the_last_samples_per_worker(any_db):
    db = any_db
    a = workers.register_worker(db, host="a", pid=1, device="cpu").id
    b = workers.register_worker(db, host="b", pid=2, device="cpu").id
    for k in range(KEEP_LOAD + 3):
        queue.heartbeat(db, a, load=LoadSample(cpu_percent=float(k)))
    queue.heartbeat(db, b, load=LoadSample(ram_used=1, ram_total=2))
    queue.heartbeat(db, b)  # a heartbeat without a load stores none
    history = workers.load_history(db)
    assert [s.cpu_percent for s in history[a]] == [float(k) for k in range(3, KEEP_LOAD + 3)]
    assert len(history[b]) == 1 and history[b][0].cpu_percent is None


def test_the_gpu_is_found_again_by_uuid_once_cuda_is_up(nvml, monkeypatch):
    """An idle worker samples before CUDA is initialised (index through
    CUDA_VISIBLE_DEVICES); once its run brings CUDA up, the UUID torch gives decides."""
    fake = nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    up = {"cuda": False}
    props = types.SimpleNamespace(uuid="1234-abcd")
    cuda = types.SimpleNamespace(is_initialized=lambda: up["cuda"],
                                 get_device_properties=lambda index: props)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    sensors = Sensors("cuda:0")
    sensors.sample()
    assert ("index", 2) in fake.calls and not any(c[0] == "uuid" for c in fake.calls)
    up["cuda"] = True
    sensors.sample()
    sensors.sample()
    assert [c for c in fake.calls if c[0] == "uuid"] == [("uuid", "GPU-1234-abcd")]
