"""Latency measured the way the native tools do it (benchmark_app, onnxruntime_perf_test,
benchmark_model): warm-up of at least N runs and T seconds, then timed runs of only the runtime
call, reported as median/p90/p99/min/mean and throughput."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over `runs` timed calls (after warm-up)."""

    runs: int
    batch: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    throughput_ips: float
    warmup_runs: int
    first_ms: float | None = None
    quantiles_ms: tuple[float, ...] = ()  # 0th, 2nd, ..., 100th percentile (for distribution plots)

    def to_dict(self) -> dict:
        return asdict(self)


def stats_from_samples(
    samples_s: list[float], batch: int, warmup_runs: int, first_s: float | None = None
) -> LatencyStats:
    ms = np.asarray(samples_s, np.float64) * 1e3
    return LatencyStats(
        runs=len(ms),
        batch=batch,
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        throughput_ips=float(batch * 1e3 / np.median(ms)),
        warmup_runs=warmup_runs,
        first_ms=None if first_s is None else first_s * 1e3,
        quantiles_ms=tuple(float(v) for v in np.percentile(ms, np.arange(0, 101, 2))),
    )


def measure_latency(
    call: Callable[[], object],
    batch: int = 1,
    warmup_runs: int = 10,
    warmup_seconds: float = 1.0,
    min_runs: int = 100,
    min_seconds: float = 3.0,
    max_runs: int = 100_000,
) -> LatencyStats:
    """Time `call()` (only the runtime call: inputs prepared beforehand by the caller).

    The first call is timed separately (first inference); warm-up continues until both
    `warmup_runs` and `warmup_seconds` are reached; timed runs until `min_runs` and `min_seconds`.
    """
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    n, start = 0, time.perf_counter()
    while n < warmup_runs or time.perf_counter() - start < warmup_seconds:
        call()
        n += 1
    samples: list[float] = []
    clock = time.perf_counter
    begin = clock()
    while (len(samples) < min_runs or clock() - begin < min_seconds) and len(samples) < max_runs:
        t = clock()
        call()
        samples.append(clock() - t)
    return stats_from_samples(samples, batch, n, first)
