"""The service's side of the domain guard: count flagged images, run the window monitor of the
bundle in service, and turn its alarms into an audit event, a /metrics counter and gauge and a
log line. One call per classified instance (`observe`), from any worker thread."""

from __future__ import annotations

import logging
import threading

from edgemed.domain.monitor import WindowMonitor, monitor_for


class DomainWatch:
    def __init__(self, audit, metrics, log: logging.Logger) -> None:
        self.audit, self.metrics, self.log = audit, metrics, log
        self._lock = threading.Lock()
        self._bundle: str | None = None
        self._monitor: WindowMonitor | None = None

    def observe(self, predictor, result: dict, uid: str) -> None:
        """Count an `out` result and feed the monitor of the predictor's bundle (new on swap)."""
        if result.get("domain") == "out" and result.get("status") == "ok":
            self.metrics.inc("domain_flagged")
        with self._lock:
            bundle = predictor.bundle.bundle_id
            if bundle != self._bundle:
                self._bundle = bundle
                self._monitor = monitor_for(predictor.guard, predictor.contract)
            if self._monitor is None:
                return
            alarms = self._monitor.observe(result)
            active = len(self._monitor.active)
        for a in alarms:
            self.log.warning(
                "drift alarm: %s p=%.2g (window %.3f, held-out %.3f, tolerance %.3f) after %d "
                "images, at %s",
                a.statistic, a.p_value, a.window_value, a.reference_value, a.tolerance, a.seen,
                uid,
            )  # fmt: skip
            self.audit.append("drift_alarm", bundle_id=bundle, sop_instance_uid=uid, **a.to_dict())
            self.metrics.inc("drift_alarms")
        self.metrics.set_gauge("drift_alarms_active", active)
