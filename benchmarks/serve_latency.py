"""`edgemed serve` end to end against a real Orthanc: latency, throughput, cold start, RSS, kills.

    python benchmarks/serve_latency.py [--work DIR] [--model TRAINING_DIR] [--warm 200]
                                       [--large 30] [--throughput 1000] [--kill 1000 --kills 3]
                                       [--write]

Builds (once, into --work) the default compact CNN on the chest X-ray subset (4 epochs: latency
does not depend on accuracy), exports it to ONNX Runtime FP32, benches and bundles it; starts a
real Orthanc on loopback and the real `edgemed serve` CLI as a subprocess forwarding to it.

- Warm end-to-end latency: a sender C-STOREs one image and waits for its SR before the next
  (closed loop), 1 and 4 senders. End to end = C-STORE sent -> Orthanc acknowledged the SR's
  C-STORE (Orthanc answers after storing; the service writes that moment into its audit log as
  `sent`, same clock). Beside it, the bundle's inference time alone (`inference_ms` of each
  result: the model run) and decode + preprocessing + inference (`latency_ms`); overhead =
  end to end minus inference, per image. 28x28 8-bit CR and 2048x2048 16-bit CR (up-scaled
  real images).
- Throughput: N images from 4 senders as fast as they are acknowledged; first send -> last SR.
- Cold start: process start -> GET /readyz answers 200 (verification, extraction, imports).
- RSS of the service (VmRSS, VmHWM from /proc) after warm-up and after the throughput run.
- Kills: N images sent (re-sent until acknowledged) while the service is SIGKILLed K times at
  random moments and restarted; then every acknowledged image must have exactly one SR.
`--write` puts the results into the "Appliance service" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._markdown import BENCHMARKS, load_average, replace_section, table  # noqa: E402
from tests.serve_support import (  # noqa: E402
    SENDER_AET,
    Orthanc,
    ServeProcess,
    cxr_dicoms,
    free_port,
    large_dicom,
    wait_for,
)

CXR = REPO.parent / "shared" / "datasets" / "pneumoniamnist_subset.npz"
HEADING = "Appliance service"
TLS = None  # a tests.serve_support.TlsMaterial while measuring with TLS on both legs


def tls_args():
    """pynetdicom's (context, hostname) for a sender presenting the test client certificate."""
    if TLS is None:
        return None
    import ssl

    ctx = ssl.create_default_context(cafile=str(TLS.ca))
    ctx.load_cert_chain(TLS.client_cert, TLS.client_key)
    return ctx, "127.0.0.1"


def edgemed(*args: object) -> None:
    code = "from edgemed.cli import main; main()"
    subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def prepare(work: Path, model: Path | None) -> tuple[Path, Path]:
    """(bundle, public key), built once into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = work / "model"
        if not model.exists():
            edgemed("train", "--data", CXR, "--out", model, "--epochs", 4)
    art, bench, bundle, keys = (work / k for k in ("onnx-fp32", "bench", "cxr.bundle", "keys"))
    if not (keys / "edgemed.pub").exists():
        edgemed("keygen", "--out", keys)
    if not art.exists():
        edgemed("export", "--model", model, "--target", "onnx", "--out", art)
    if not (bench / "results.json").exists():
        edgemed("bench", art, "--data", CXR, "--out", bench, "--force")
    if not bundle.exists():
        edgemed(
            "bundle",
            "--model",
            art,
            "--report",
            bench,
            "--key",
            keys / "edgemed.key",
            "--out",
            bundle,
            "--modality",
            "CR",
            "--modality",
            "DX",
        )
    return bundle, keys / "edgemed.pub"


class AuditTail:
    """Follows the service's audit log: the wall time each SR was acknowledged by the PACS."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.sent = path, 0, {}
        self.cond = threading.Condition()
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        buf = b""
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            self.offset += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            with self.cond:
                for line in lines:
                    e = json.loads(line)
                    if e["event"] == "sent":
                        self.sent[e["sop_instance_uid"]] = _epoch(e["time"])
                if lines:
                    self.cond.notify_all()
            time.sleep(0.001)

    def wait(self, uid: str, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: uid in self.sent, timeout):
                raise SystemExit(f"no SR acknowledged for {uid} within {timeout} s")
            return self.sent[uid]


def _epoch(stamp: str) -> float:
    return (
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    )


class Sender:
    """One modality: its own association, C-STORE one dataset at a time. With TCP_NODELAY, as
    DCMTK-based senders open their sockets by default (dcmnet disables Nagle's algorithm unless
    built with DONT_DISABLE_NAGLE_ALGORITHM): without it pynetdicom's request waits ~40 ms for the
    service's delayed ACK, a sender-side delay measured before as service overhead."""

    def __init__(self, port: int) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=SENDER_AET)
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture (tests' files)
        from pynetdicom import evt

        from edgemed.serve.dicom_scp import no_delay

        self.assoc = ae.associate("127.0.0.1", port, ae_title="EDGEMED", tls_args=tls_args(),
                                  evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])  # fmt: skip
        assert self.assoc.is_established, "association refused"

    def store(self, ds) -> float:
        t = time.time()
        status = self.assoc.send_c_store(ds)
        assert status and int(status.Status) == 0, status
        self.ack = time.time() - t  # C-STORE round trip: spooled and acknowledged
        return t

    def close(self) -> None:
        self.assoc.release()


def closed_loop(
    port: int, tail: AuditTail, datasets: list, senders: int, acks: dict | None = None
) -> dict[str, float]:
    """{uid: end-to-end seconds}, `senders` threads each waiting for its SR before the next;
    `acks` gets {uid: C-STORE acknowledgement seconds}."""
    acks = {} if acks is None else acks
    chunks = [datasets[i::senders] for i in range(senders)]
    out: dict[str, float] = {}

    def run(part: list) -> None:
        s = Sender(port)
        for ds in part:
            t = s.store(ds)
            acks[str(ds.SOPInstanceUID)] = s.ack
            out[str(ds.SOPInstanceUID)] = tail.wait(str(ds.SOPInstanceUID)) - t
        s.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def open_loop(port: int, tail: AuditTail, datasets: list, senders: int) -> float:
    """Seconds from the first C-STORE to the last SR acknowledged, senders not waiting for SRs."""
    chunks = [datasets[i::senders] for i in range(senders)]
    t0 = time.time()

    def run(part: list) -> None:
        s = Sender(port)
        for ds in part:
            s.store(ds)
        s.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last = max(tail.wait(str(ds.SOPInstanceUID), 300) for ds in datasets)
    return last - t0


def results_of(spool: Path, uids: list[str]) -> list[dict]:
    return [json.loads((spool / "results" / f"{u}.json").read_text()) for u in uids]


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(float(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


def latency_rows(port: int, tail: AuditTail, spool: Path, sets: dict) -> list[dict]:
    import pydicom

    rows = []
    for kind, paths in sets.items():
        datasets = [pydicom.dcmread(p) for p in paths]
        closed_loop(port, tail, datasets[:5], 1)  # warm-up: first association, caches
        rest = datasets[5:]
        for senders, part in ((1, rest[: len(rest) // 2]), (4, rest[len(rest) // 2 :])):
            acks: dict[str, float] = {}
            e2e = closed_loop(port, tail, part, senders, acks)
            res = {u: json.loads((spool / "results" / f"{u}.json").read_text()) for u in e2e}
            inf = [res[u]["inference_ms"] / 1000 for u in e2e]
            rows.append(
                {
                    "input": kind,
                    "senders": senders,
                    "n": len(part),
                    "e2e": list(e2e.values()),
                    "inference": inf,
                    "decode": [res[u]["latency_ms"] / 1000 for u in e2e],
                    "overhead": [e2e[u] - res[u]["inference_ms"] / 1000 for u in e2e],
                    "ack": list(acks.values()),
                }
            )
    return rows


def cold_starts(args_: list[str], log: Path, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = ServeProcess(args_, log, free_port(), tls=TLS).start()
        out.append(time.perf_counter() - t)
        proc.stop()
    return out


def kill_run(args_: list[str], log: Path, port: int, pacs: Orthanc, paths: list[Path], kills: int):
    """Send `paths` (re-sending until acknowledged) while SIGKILLing the service `kills` times."""
    from tests.test_serve_orthanc import _keep_sending, _sources

    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    before = set(r.ReferencedSOPInstanceUID for r in _sources(pacs))
    proc = ServeProcess(args_, log, free_port(), tls=TLS).start()
    acked: dict[str, bool] = {}
    stop = threading.Event()
    sender = threading.Thread(target=_keep_sending, args=(paths, port, acked, stop, tls_args()))
    sender.start()
    marks = sorted(rng.sample(range(10, len(paths) - 10), kills))
    for mark in marks:
        wait_for(lambda m=mark: len(acked) >= m, 600, "acknowledgements")
        proc.kill()
        proc = ServeProcess(args_, log, proc.http_port, tls=TLS).start()
    sender.join(timeout=900)
    wait_for(lambda: proc.metrics()["edgemed_serve_queue_depth"] == 0, 600, "an empty queue")
    proc.stop()
    sources = [r.ReferencedSOPInstanceUID for r in _sources(pacs)]
    new = [s for s in sources if s not in before]
    return {
        "seed": seed,
        "marks": marks,
        "acked": len(acked),
        "srs": len(new),
        "missing": len(set(acked) - set(new)),
        "doubled": len(new) - len(set(new)),
    }


def sr_cost(spool: Path, source: Path, repeats: int = 30) -> tuple[float, float]:
    """Median CPU ms to build one SR with highdicom and to encode it (this process, one result)."""
    import pydicom

    from edgemed.serve.service import _encode
    from edgemed.serve.sr import Algorithm, build_sr

    result = json.loads(next((spool / "results").glob("*.json")).read_text())
    header = pydicom.dcmread(source, stop_before_pixels=True)
    algo = Algorithm(result["bundle_id"], result["bundle_sha256"], "cnn", "v", result["runtime"])
    build, encode = [], []
    for _ in range(repeats):
        t = time.process_time()
        sr = build_sr(header, result, algo)
        t1 = time.process_time()
        _encode(sr)
        build.append(t1 - t)
        encode.append(time.process_time() - t1)
    return statistics.median(build), statistics.median(encode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgemed-serve-bench"))
    ap.add_argument("--model", type=Path, help="Training dir (default: train the default CNN).")
    ap.add_argument("--warm", type=int, default=200, help="28 px images for the latency runs.")
    ap.add_argument("--large", type=int, default=30, help="2048x2048 16-bit images.")
    ap.add_argument("--throughput", type=int, default=1000)
    ap.add_argument("--kill", type=int, default=1000, help="Images for the kill run (0: skip).")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--tls", action="store_true", help="TLS on both legs (test certificates).")
    ap.add_argument("--bundle", type=Path, help="A bundle to serve (with --pubkey): no training.")
    ap.add_argument("--pubkey", type=Path)
    args = ap.parse_args()
    bundle, pub = (args.bundle, args.pubkey) if args.bundle else prepare(args.work, args.model)
    run = args.work / f"run-{int(time.time())}"
    small = cxr_dicoms(run / "small", args.warm + 5)
    large = [large_dicom(run / "large" / f"big{i}.dcm", i) for i in range(args.large + 5)]
    through = cxr_dicoms(run / "through", args.throughput, offset=0)
    kill = cxr_dicoms(run / "kill", args.kill) if args.kill else []
    before = load_average()
    port = free_port()
    if args.tls:
        from tests.serve_support import tls_material

        global TLS
        TLS = tls_material(run / "tls")
    pacs = Orthanc(run / "orthanc", port, tls=TLS).start()
    try:
        out = measure(run, bundle, pub, pacs, port, small, large, through, kill, args)
    finally:
        pacs.stop()
    out["load"] = (before, load_average())
    body = render(out, args)
    print(body)
    if args.write:
        if f"## {HEADING}" not in BENCHMARKS.read_text():
            BENCHMARKS.write_text(BENCHMARKS.read_text().rstrip() + f"\n\n## {HEADING}\n")
        replace_section(HEADING, body)


def measure(run, bundle, pub, pacs, port, small, large, through, kill, args) -> dict:
    spool = run / "spool"
    toml = run / "appliance.toml"
    toml.write_text(
        f'allowed-aets = ["{SENDER_AET}"]\nforward = ["{pacs.destination}"]\n'
        "workers = 2\nthreads = 1\n"
    )
    if TLS is not None:
        with open(toml, "a") as f:
            f.write(
                f'tls-cert = "{TLS.server_cert}"\ntls-key = "{TLS.server_key}"\n'
                f'tls-ca = "{TLS.ca}"\nforward-tls = true\nforward-ca = "{TLS.ca}"\n'
            )
    cli = [
        str(bundle),
        "--pubkey",
        str(pub),
        "--config",
        str(toml),
        "--dicom-port",
        str(port),
        "--spool",
        str(spool),
    ]
    cold = cold_starts(cli, run / "serve.log", 3)
    svc = ServeProcess(cli, run / "serve.log", free_port(), tls=TLS).start()
    tail = AuditTail(spool / "audit.jsonl")
    try:
        rows = latency_rows(port, tail, spool, {"28x28 8-bit": small, "2048x2048 16-bit": large})
        rss_warm = rss_mb(svc.proc.pid)
        import pydicom

        seconds = open_loop(port, tail, [pydicom.dcmread(p) for p in through], 4)
        rss_after = rss_mb(svc.proc.pid)
    finally:
        tail.stop.set()
        svc.stop()
    out = {
        "cold": cold,
        "rows": rows,
        "rss": (rss_warm, rss_after),
        "throughput": (len(through), seconds),
        "srs": len(pacs.sr_instance_ids()),
        "sr": sr_cost(spool, small[0]),
    }
    if kill:
        kspool = run / "kill-spool"
        kcli = [*cli[:-1], str(kspool)]
        out["kill"] = kill_run(kcli, run / "kill.log", port, pacs, kill, args.kills)
    return out


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def render(out: dict, args) -> str:
    rows = [
        [
            r["input"],
            r["senders"],
            r["n"],
            ms(pct(r["ack"], 50)),
            ms(pct(r["e2e"], 50)),
            ms(pct(r["e2e"], 99)),
            f"{pct(r['inference'], 50) * 1000:.2f}",
            ms(pct(r["decode"], 50)),
            ms(pct(r["overhead"], 50)),
            ms(pct(r["overhead"], 99)),
        ]
        for r in out["rows"]
    ]
    header = [
        "input",
        "senders",
        "images",
        "C-STORE ack p50 ms",
        "end-to-end p50 ms",
        "p99 ms",
        "inference p50 ms",
        "decode+preprocess+inference p50 ms",
        "overhead p50 ms",
        "overhead p99 ms",
    ]
    n, secs = out["throughput"]
    (w_rss, w_hwm), (a_rss, a_hwm) = out["rss"]
    lines = [
        "Command (real Orthanc and the real `edgemed serve` CLI on 127.0.0.1; ONNX Runtime FP32 "
        "bundle of the default compact CNN, `--threads 1`, 2 workers"
        + ("; TLS (1.2+, BCP 195 suites) with client certificates on both legs" if args.tls else "")
        + "):",
        "```",
        f"python benchmarks/serve_latency.py --warm {args.warm} --large {args.large} "
        f"--throughput {args.throughput} --kill {args.kill} --kills {args.kills}"
        + (" --tls" if args.tls else "")
        + (" --write" if args.write else ""),
        "```",
        "",
        table(header, rows),
        "",
        "- End to end: C-STORE sent -> Orthanc acknowledged the SR's C-STORE (it answers after "
        "storing; the service records that moment in its audit log), closed loop: each sender "
        "waits for its SR before the next image. Overhead = end to end minus inference, per image.",
        f"- Throughput: {n} 28x28 images from 4 senders not waiting for SRs: {secs:.1f} s first "
        f"C-STORE -> last SR stored, {n / secs:.1f} images/s.",
        f"- Cold start to ready (process start -> GET /readyz 200): "
        f"{', '.join(f'{c:.2f}' for c in out['cold'])} s (3 starts).",
        f"- Service RSS: {w_rss:.0f} MB after the latency runs (peak {w_hwm:.0f} MB, the "
        f"2048x2048 images), {a_rss:.0f} MB after the throughput run (peak {a_hwm:.0f} MB).",
    ]
    build, encode = out["sr"]
    lines.append(
        f"- Where a 28x28 image's time goes besides inference: building the SR with highdicom "
        f"{build * 1000:.1f} ms CPU and encoding it {encode * 1000:.1f} ms (median, measured in "
        "the benchmark process), Orthanc storing it (its index and storage fsync), and the "
        "C-STORE into the service (ack column: the spool write with its fsyncs and the audit "
        "entry, and pynetdicom, whose reactor threads poll with 1 ms sleeps that a loaded "
        "machine stretches). With 2 cores shared by the senders, the service, Orthanc and other work, "
        "4 senders mostly queue."
    )
    if "kill" in out:
        k = out["kill"]
        lines.append(
            f"- Kills: {args.kill} images, SIGKILL at {len(k['marks'])} random moments (after "
            f"{', '.join(map(str, k['marks']))} acknowledgements; seed {k['seed']}), restarted each "
            f"time: {k['acked']} acknowledged, {k['srs']} SRs in Orthanc, {k['missing']} missing, "
            f"{k['doubled']} doubled."
        )
    small_1 = next(r for r in out["rows"] if r["senders"] == 1 and r["input"].startswith("28"))
    over, cold = pct(small_1["overhead"], 50) * 1000, max(out["cold"])
    goals = [
        f"service overhead p50 (28 px, 1 sender) under 15 ms: {over:.1f} ms, "
        + ("met" if over < 15 else "not met here"),
        f"cold start under 2 s: {cold:.2f} s at worst, " + ("met" if cold < 2 else "not met here"),
    ]
    if "kill" in out:
        k = out["kill"]
        clean = not k["missing"] and not k["doubled"] and k["acked"] == args.kill
        goals.append("nothing lost, nothing doubled: " + ("met" if clean else "NOT met"))
    lines.append("- Issue 15 goals: " + "; ".join(goals) + ".")
    before, after = out["load"]
    lines.append(f"- Machine: {before} before, {after} after (shared with other work).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
