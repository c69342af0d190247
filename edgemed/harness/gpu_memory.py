"""GPU memory on NVIDIA devices: NVML on desktop GPUs, tegrastats on Jetson.

Jetson GPUs share the system RAM and NVML does not report their memory, so there the number is
the board's RAM in use as tegrastats prints it. Samplers poll in a background thread while a
workload runs and keep the peak; nothing here imports a GPU runtime.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from edgemed.errors import UnavailableError

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_VDD_IN = re.compile(r"\b(?:VDD_IN|POM_5V_IN) (\d+)(?:mW)?/")  # JetPack 5/6, JetPack 4


@dataclass(frozen=True)
class GpuMemory:
    """Peak GPU memory seen while sampling: device-wide used/total, this process when known."""

    source: str  # "nvml" or "tegrastats"
    peak_used_mb: float
    total_mb: float
    baseline_mb: float
    process_peak_mb: float | None = None
    samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TegraSample:
    """One tegrastats line: RAM/SWAP in MB, GPU (GR3D) load in %, board input power in mW."""

    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: int | None = None
    gr3d_percent: int | None = None
    vdd_in_mw: int | None = None


def parse_tegrastats(line: str) -> TegraSample | None:
    """Parse one tegrastats output line (JetPack 5/6 format); None when it has no RAM field."""
    ram = _RAM.search(line)
    if not ram:
        return None
    swap, gr3d, vdd = _SWAP.search(line), _GR3D.search(line), _VDD_IN.search(line)
    return TegraSample(
        ram_used_mb=int(ram.group(1)),
        ram_total_mb=int(ram.group(2)),
        swap_used_mb=int(swap.group(1)) if swap else None,
        gr3d_percent=int(gr3d.group(1)) if gr3d else None,
        vdd_in_mw=int(vdd.group(1)) if vdd else None,
    )


def is_jetson() -> bool:
    """True on an NVIDIA Jetson (L4T) board or inside an L4T container."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    model = Path("/proc/device-tree/model")
    return model.exists() and "jetson" in model.read_bytes().decode(errors="ignore").lower()


class _Sampler:
    """Polls `_read()` every `interval_s` in a thread between __enter__ and __exit__."""

    source = ""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._readings: list[tuple[float, float, float | None]] = []  # used, total, process

    def _read(self) -> tuple[float, float, float | None]:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._readings.append(self._read())

    def __enter__(self) -> _Sampler:
        self._readings.append(self._read())
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._readings.append(self._read())

    def result(self) -> GpuMemory:
        used = [r[0] for r in self._readings]
        procs = [r[2] for r in self._readings if r[2] is not None]
        return GpuMemory(
            source=self.source,
            peak_used_mb=max(used),
            total_mb=self._readings[0][1],
            baseline_mb=used[0],
            process_peak_mb=max(procs) if procs else None,
            samples=len(self._readings),
        )


class NvmlSampler(_Sampler):
    """Device memory used (and this process's, when the driver reports it) via NVML (pynvml)."""

    source = "nvml"

    def __init__(self, index: int = 0, pid: int | None = None, interval_s: float = 0.05) -> None:
        super().__init__(interval_s)
        try:
            import pynvml
        except ImportError:
            raise UnavailableError(
                "NVML is not available (no pynvml); pip install nvidia-ml-py"
            ) from None
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as exc:
            raise UnavailableError(
                f"NVML cannot open GPU {index} ({exc}); is the driver loaded?"
            ) from None
        self._nvml, self._pid = pynvml, pid

    def _read(self) -> tuple[float, float, float | None]:
        info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        proc = None
        if self._pid is not None:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == self._pid and p.usedGpuMemory is not None:
                    proc = p.usedGpuMemory / 2**20
        return info.used / 2**20, info.total / 2**20, proc


class TegrastatsSampler(_Sampler):
    """Board RAM in use (shared by CPU and GPU) from a `tegrastats --interval MS` subprocess."""

    source = "tegrastats"

    def __init__(self, interval_s: float = 0.1, command: str = "tegrastats") -> None:
        super().__init__(interval_s)
        exe = shutil.which(command)
        if exe is None:
            raise UnavailableError(
                "tegrastats is not on PATH; run on a Jetson (JetPack) or mount /usr/bin/tegrastats"
            )
        ms = max(int(interval_s * 1000), 10)
        self._proc = subprocess.Popen(
            [exe, "--interval", str(ms)], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._last: TegraSample | None = None
        self._first = threading.Event()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self._first.wait(timeout=2 * interval_s + 2.0)

    def _pump(self) -> None:
        assert self._proc.stdout is not None  # Popen(stdout=PIPE) always has it
        for line in self._proc.stdout:
            sample = parse_tegrastats(line)
            if sample:
                self._last = sample
                self._first.set()

    def _read(self) -> tuple[float, float, float | None]:
        if self._last is None:
            raise UnavailableError(
                "tegrastats printed no RAM line; check that it runs on this board"
            )
        return float(self._last.ram_used_mb), float(self._last.ram_total_mb), None

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._proc.terminate()
        self._proc.wait(timeout=5)


def gpu_memory_sampler(index: int = 0, pid: int | None = None) -> _Sampler:
    """tegrastats on Jetson, NVML elsewhere."""
    return TegrastatsSampler() if is_jetson() else NvmlSampler(index, pid)
