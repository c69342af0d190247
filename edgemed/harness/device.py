"""What machine the numbers came from: CPU model and ISA flags, cores, memory, load average.

Latency means little without these: a busy machine (load average above half the cores) inflates
medians and tails, so the harness records the load before and after every configuration and warns.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from edgemed.provenance import runtime_versions

# ISA extensions that change what INT8/BF16 kernels a runtime can use.
FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
)
BUSY_FRACTION = 0.5


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """CPU model name and the ISA flags of interest (Linux /proc/cpuinfo; empty elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {"model": model, "flags": [f for f in FLAGS_OF_INTEREST if f in flags]}


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_warning(load: list[float] | None, cores: int | None = None) -> str | None:
    """A one-line warning when the 1-minute load average exceeds half the usable cores."""
    cores = cores or usable_cores()
    if load is None or load[0] <= BUSY_FRACTION * cores:
        return None
    return (
        f"machine is busy: load average {load[0]:.2f} on {cores} cores (> {BUSY_FRACTION:g} x "
        "cores); latency medians and tails are inflated, re-run on a quiet machine for final numbers"
    )


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def device_info() -> dict:
    """The results.json "device" block."""

    load = load_average()
    return {
        "cpu": cpu_info(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_mb": memory_total_mb(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
        "load_average_start": load,
        "busy_warning": busy_warning(load),
    }
