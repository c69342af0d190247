"""Counters and latency histograms, rendered as Prometheus text exposition (format 0.0.4)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNTERS = {
    "received": "Instances accepted into the spool (C-STORE or STOW-RS)",
    "duplicates": "Instances received again with a SOP Instance UID already spooled or done",
    "done": "Instances classified and their SR made",
    "refused": "Instances refused by the bundle's contract or modality list (no SR)",
    "failed": "Instances whose processing failed with an unexpected error (no SR)",
    "sent": "SRs acknowledged by a destination",
    "dead_lettered": "SRs a destination did not take within the retry budget",
    "spool_write_errors": "Spool or audit writes that failed (ENOSPC, EIO, read-only); retried",
    "http_refused": "HTTP connections refused at the connection cap (503, no thread)",
    "audit_syslog_sent": "Audit entries the syslog collector took",
    "audit_syslog_dropped": "Audit entries not forwarded: queue full (kept in the local log)",
    "bundle_swaps": "Bundles swapped in after verification",
    "bundle_swaps_refused": "Bundles refused on swap (the old one kept serving)",
    "domain_flagged": "Instances outside the validated domain, reported with the finding marked",
    "domain_refused": "Instances outside the validated domain, refused by the domain policy",
    "drift_alarms": "Window drift alarms raised (edgemed.domain.monitor)",
}
GAUGES = {"drift_alarms_active": "Window statistics currently out of their validation reference"}
HISTOGRAMS = {
    "latency_seconds": "Received -> SR acknowledged by every destination",
    "inference_seconds": "Decode, preprocessing and model run for one instance",
}


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """Thread-safe counters; `render` is what GET /metrics returns."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.gauges = dict.fromkeys(GAUGES, 0)
        self.histograms = {name: Histogram() for name in HISTOGRAMS}
        self._queue_depth = queue_depth

    def inc(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counters[name] += by

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            self.histograms[name].observe(seconds)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)

    def render(self) -> str:
        with self._lock:
            lines: list[str] = []
            for name, help_text in COUNTERS.items():
                full = f"edgemed_serve_{name}_total"
                lines += [f"# HELP {full} {help_text}", f"# TYPE {full} counter"]
                lines.append(f"{full} {self.counters[name]}")
            full = "edgemed_serve_queue_depth"
            lines += [
                f"# HELP {full} Instances spooled and not yet finished",
                f"# TYPE {full} gauge",
            ]
            lines.append(f"{full} {self._queue_depth()}")
            for name, help_text in GAUGES.items():
                full = f"edgemed_serve_{name}"
                lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
                lines.append(f"{full} {self.gauges[name]}")
            for name, help_text in HISTOGRAMS.items():
                lines += _histogram(f"edgemed_serve_{name}", help_text, self.histograms[name])
        return "\n".join(lines) + "\n"


def _histogram(full: str, help_text: str, h: Histogram) -> list[str]:
    lines = [f"# HELP {full} {help_text}", f"# TYPE {full} histogram"]
    cumulative = 0
    for edge, count in zip(BUCKETS_S, h.counts, strict=False):
        cumulative += count
        lines.append(f'{full}_bucket{{le="{edge:g}"}} {cumulative}')
    lines.append(f'{full}_bucket{{le="+Inf"}} {h.n}')
    lines += [f"{full}_sum {h.total:.6f}", f"{full}_count {h.n}"]
    return lines
