"""`edgemed serve` under hostile load, measured on the real CLI process (no PACS needed):

    python benchmarks/serve_hostile.py --bundle B --pubkey P [--big 16 --big-mb 60] [--idle 100]

- RSS: the service's VmRSS / VmHWM (from /proc) idle, then while `--big` DCMTK `storescu`
  senders each C-STORE one `--big-mb` MB 16-bit CR at once (16 associations, the default cap),
  and after all are classified. pynetdicom writes each dataset to a file as it arrives; the
  spool copies it in 1 MiB pieces; what remains is the workers' decode of the pixels.
- Idle connections: `--idle` HTTP connections that never finish their headers and `--idle` TCP
  connections to the DICOM port that never ask for an association; how long until the service
  closed them all (http-timeout / dicom-timeout), the thread count before / during / after, and
  GET /readyz latency from another client address (127.0.0.2) meanwhile.
Prints one markdown section; the caller pastes it at the end of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._markdown import load_average  # noqa: E402
from tests.serve_support import (  # noqa: E402
    LOOPBACK,
    SENDER_AET,
    ServeProcess,
    free_port,
    wait_for,
)

STORESCU = "/usr/bin/storescu"


def big_dicom(path: Path, mb: int) -> Path:
    """A 16-bit CR of about `mb` MB made from a real chest X-ray (tiled up, 12 bits)."""
    from tests.bundle_support import cxr_test_images, write_dicom

    side = int((mb * 1e6 / 2) ** 0.5)
    src = cxr_test_images(1)[0].astype(np.uint16) * 16
    reps = -(-side // src.shape[0])
    pixels = np.tile(src, (reps, reps))[:side, :side]
    from pydicom.uid import generate_uid

    return write_dicom(
        path,
        np.ascontiguousarray(pixels),
        bits_stored=12,
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        Modality="CR",
    )


def proc_status(pid: int) -> dict[str, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss": float(fields["VmRSS"].split()[0]) / 1024,
        "hwm": float(fields["VmHWM"].split()[0]) / 1024,
        "threads": float(fields["Threads"]),
    }


def rss_run(proc: ServeProcess, work: Path, n: int, mb: int, port: int) -> dict:
    files = []
    for i in range(n):
        files.append(big_dicom(work / f"big{i}.dcm", mb))
    size_mb = files[0].stat().st_size / 1e6
    idle = proc_status(proc.proc.pid)
    peak = {"rss": idle["rss"]}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak["rss"] = max(peak["rss"], proc_status(proc.proc.pid)["rss"])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    cmd = [STORESCU, "-aet", SENDER_AET, "-aec", "EDGEMED", LOOPBACK, str(port)]
    senders = [subprocess.Popen([*cmd, str(f)]) for f in files]
    codes = [s.wait() for s in senders]
    sent_s = time.monotonic() - t0
    wait_for(lambda: proc.metrics().get("edgemed_serve_done_total", 0) >= n, 600, "all classified")
    done.set()
    sampler.join()
    end = proc_status(proc.proc.pid)
    for f in files:
        f.unlink()
    return {
        "n": n,
        "size_mb": size_mb,
        "failed_senders": sum(c != 0 for c in codes),
        "sent_s": sent_s,
        "idle_rss": idle["rss"],
        "peak_rss": peak["rss"],
        "hwm": end["hwm"],
        "after_rss": end["rss"],
    }


def readyz_ms(port: int) -> float:
    t0 = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), 10, ("127.0.0.2", 0)) as s:
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    return (time.perf_counter() - t0) * 1000


def idle_run(proc: ServeProcess, n: int, dicom_port: int) -> dict:
    pid, http_port = proc.proc.pid, proc.http_port
    before = proc_status(pid)["threads"]
    base = [readyz_ms(http_port) for _ in range(20)]
    t0 = time.monotonic()
    socks = []
    for _ in range(n):
        h = socket.create_connection((LOOPBACK, http_port), 10)
        h.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        socks.append(h)
        socks.append(socket.create_connection((LOOPBACK, dicom_port), 10))
    during_threads = proc_status(pid)["threads"]
    during = [readyz_ms(http_port) for _ in range(20)]
    for s in socks:
        s.settimeout(120)
        with contextlib.suppress(OSError):
            s.recv(65536)
    closed_s = time.monotonic() - t0
    wait_for(lambda: proc_status(pid)["threads"] <= before, 60, "threads back to idle")
    after = proc_status(pid)["threads"]
    for s in socks:
        s.close()
    return {
        "n": n,
        "closed_s": closed_s,
        "threads": (before, during_threads, after),
        "readyz_p50": statistics.median(base),
        "readyz_p99_during": max(during),
        "readyz_p50_during": statistics.median(during),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--pubkey", type=Path, required=True)
    ap.add_argument("--big", type=int, default=16)
    ap.add_argument("--big-mb", type=int, default=60)
    ap.add_argument("--idle", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=10.0, help="http-timeout and dicom-timeout")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgemed-hostile-"))
    dicom_port = free_port()
    args = [str(a.bundle), "--pubkey", str(a.pubkey), "--spool", str(work / "spool")]
    args += ["--allowed-aets", SENDER_AET, "--dicom-port", str(dicom_port), "--threads", "1"]
    args += ["--http-timeout", str(a.timeout), "--dicom-timeout", str(a.timeout)]
    proc = ServeProcess(args, work / "serve.log", free_port()).start()
    try:
        rss = rss_run(proc, work, a.big, a.big_mb, dicom_port)
        idle = idle_run(proc, a.idle, dicom_port)
    finally:
        proc.stop()
    print(render(rss, idle, a))


def render(rss: dict, idle: dict, a) -> str:
    cpu = os.cpu_count()
    return f"""
Load average at the end: {load_average()} on {cpu} CPUs (the machine was shared with four other
engineers' test runs: timings are noisy; memory and thread counts are not).

| measurement | value |
|---|---|
| RSS idle (MB) | {rss["idle_rss"]:.0f} |
| {rss["n"]} concurrent C-STOREs of {rss["size_mb"]:.1f} MB (DCMTK storescu), all sent in | {rss["sent_s"]:.1f} s ({rss["failed_senders"]} senders failed) |
| RSS peak while receiving and classifying (MB, sampled every 50 ms) | {rss["peak_rss"]:.0f} |
| VmHWM after (MB) | {rss["hwm"]:.0f} |
| RSS after (MB) | {rss["after_rss"]:.0f} |
| {idle["n"]} idle HTTP + {idle["n"]} silent DICOM connections: all closed after | {idle["closed_s"]:.1f} s (timeouts {a.timeout:g} s) |
| threads before / during / after | {" / ".join(f"{t:.0f}" for t in idle["threads"])} |
| GET /readyz from 127.0.0.2: p50 quiet / p50 during / max during (ms) | {idle["readyz_p50"]:.1f} / {idle["readyz_p50_during"]:.1f} / {idle["readyz_p99_during"]:.1f} |
"""


if __name__ == "__main__":
    main()
