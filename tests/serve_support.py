"""Helpers for the `edgemed serve` tests and benchmark: a real Orthanc PACS on loopback, the
service in-process or as the real CLI subprocess, DICOM made from the real chest X-ray images, a
pynetdicom sender, and Orthanc REST queries for the SRs it holds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import REPO

ORTHANC_BIN = shutil.which("Orthanc")
SERVICE_AET = "EDGEMED"
SENDER_AET = "MODALITY"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_get(
    url: str, timeout: float = 10.0, headers: dict | None = None, context=None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, ctype: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": ctype, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_server(proc: subprocess.Popen, log) -> None:
    """SIGTERM, 20 s to exit, then SIGKILL; close the server's log file."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


# ---- Orthanc ---------------------------------------------------------------------------------


@dataclass
class Orthanc:
    """A real Orthanc with a temp config: HTTP and DICOM on free ports, storage under `root`, the
    service's AE registered as the only modality allowed to store (host-checked, 127.0.0.1)."""

    root: Path
    service_port: int
    aet: str = "ORTHANC"
    tls: object = None  # a TlsMaterial: Orthanc's DICOM port speaks TLS only, client certs required

    def start(self) -> Orthanc:
        self.http_port, self.dicom_port = free_port(), free_port()
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "edgemed-test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"edgemed": [SERVICE_AET, LOOPBACK, self.service_port]},
            "Plugins": [],
            "StableAge": 1,
        }
        if self.tls is not None:
            config.update(
                {
                    "DicomTlsEnabled": True,
                    "DicomTlsCertificate": str(self.tls.server_cert),
                    "DicomTlsPrivateKey": str(self.tls.server_key),
                    "DicomTlsTrustedCertificates": str(self.tls.ca),
                    "DicomTlsRemoteCertificateRequired": True,
                }
            )
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=1))
        self.log = open(self.root / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        # TCP_NODELAY=1: DCMTK's switch (Orthanc's DICOM layer) against Nagle + delayed ACK stalls.
        self.proc = subprocess.Popen(
            [ORTHANC_BIN, str(cfg)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        wait_for(self._up, 60, "Orthanc to answer /system")
        return self

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}"
            )
        try:
            return http_get(f"{self.url}/system", timeout=2)[0] == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def destination(self) -> str:
        return f"{self.aet}@{LOOPBACK}:{self.dicom_port}"

    def stop(self) -> None:
        stop_server(self.proc, self.log)

    def sr_instance_ids(self) -> list[str]:
        code, body = http_get(f"{self.url}/series?expand")
        assert code == 200, body
        return [
            i
            for s in json.loads(body)
            if s["MainDicomTags"].get("Modality") == "SR"
            for i in s["Instances"]
        ]

    def srs(self) -> list:
        """Every SR Orthanc holds, as pydicom datasets (downloaded through its REST API)."""
        from io import BytesIO

        import pydicom

        out = []
        for iid in self.sr_instance_ids():
            code, body = http_get(f"{self.url}/instances/{iid}/file")
            assert code == 200
            out.append(pydicom.dcmread(BytesIO(body)))
        return out


# ---- DICOM from the real chest X-rays --------------------------------------------------------


def cxr_dicoms(out: Path, n: int, offset: int = 0, **attrs) -> list[Path]:
    """`n` real chest X-ray test images as CR DICOM (8-bit, 28x28), one study per image; past the
    468 test images the pixels repeat (each file is still a new instance with its own UIDs)."""
    from tests.bundle_support import cxr_test_images, write_dicom

    out.mkdir(parents=True, exist_ok=True)
    imgs = cxr_test_images(468)
    return [
        write_dicom(out / f"cxr{i}.dcm", imgs[i % len(imgs)], **_study(attrs))
        for i in range(offset, offset + n)
    ]


def large_dicom(path: Path, index: int = 0) -> Path:
    """A 2048x2048 16-bit CR DICOM made from a real chest X-ray (bicubic up-scale to 12 bits)."""
    from PIL import Image

    from tests.bundle_support import cxr_test_images, write_dicom

    src = cxr_test_images(index + 1)[index].astype(np.float32)
    big = np.asarray(Image.fromarray(src, mode="F").resize((2048, 2048), Image.BICUBIC))
    stored = np.clip(np.rint(big * (4095 / 255)), 0, 4095).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dicom(path, stored, bits_stored=12, **_study({}))


def _study(attrs: dict) -> dict:
    from pydicom.uid import generate_uid

    base = {
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "PatientName": "Test^Patient",
        "Modality": "CR",
    }
    return {**base, **attrs}


def sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ---- sending ---------------------------------------------------------------------------------


def send(paths: list[Path], port: int, calling: str = SENDER_AET, called: str = SERVICE_AET):
    """C-STORE `paths` over one association; {sop uid: status or None} (None = no response)."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    for sop_class in {str(d.SOPClassUID) for d in datasets}:
        ae.add_requested_context(sop_class)
    assoc = ae.associate(LOOPBACK, port, ae_title=called)
    if not assoc.is_established:
        return {"rejected": assoc.is_rejected}
    out = {}
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            out[str(ds.SOPInstanceUID)] = int(status.Status) if status else None
    finally:
        assoc.release()
    return out


# ---- the service ------------------------------------------------------------------------------


def in_process(tmp: Path, bundle: Path, pubkey: Path, dicom_port: int, **settings):
    """A started Service in this process (threads); the caller stops it."""
    from edgemed.serve.config import build_config
    from edgemed.serve.service import Service

    values = {
        "spool": str(tmp / "spool"),
        "ae-title": SERVICE_AET,
        "dicom-port": dicom_port,
        "http-port": 0,
        "allowed-aets": [SENDER_AET],
        "workers": 2,
        "threads": 1,
        "retry-backoff": 0.05,
        **settings,
    }
    svc = Service(build_config(values, {}), bundle, pubkey)
    svc.start()
    return svc


@dataclass
class ServeProcess:
    """`edgemed serve` as a real subprocess (the CLI entry point), for kill and SIGHUP tests."""

    args: list[str]
    log_path: Path
    http_port: int
    tls: object = None  # a TlsMaterial: HTTPS with the client certificate

    def start(self) -> ServeProcess:
        # TMPDIR: what a SIGKILL leaves behind (the extracted bundle) stays in the test's tmp dir.
        tmp = self.log_path.parent / "serve-tmp"
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
        code = "from edgemed.cli import main; main()"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", *self.args, "--http-port", str(self.http_port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for(self._ready, 60, "edgemed serve to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"edgemed serve exited: {self.log_path.read_text()[-3000:]}")
        try:
            return self.get("/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.http_port}"

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        context = None
        if self.tls is not None:
            import ssl

            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return http_get(f"{self.url}{path}", timeout=timeout, context=context)

    def readyz(self) -> dict:
        return json.loads(self.get("/readyz")[1])

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics")[1].decode())

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.wait()

    def wait(self) -> None:
        try:
            self.proc.wait(timeout=60)
        finally:
            self.log.close()


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def stow_body(parts: list[bytes]) -> tuple[bytes, str]:
    """A multipart/related STOW-RS body of application/dicom parts, and its Content-Type."""
    boundary = "edgemed-test-boundary-7f3a"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def readyz(port: int) -> tuple[int, dict]:
    code, body = http_get(f"http://{LOOPBACK}:{port}/readyz", timeout=5)
    return code, json.loads(body)


# ---- TLS test certificates (made with `cryptography`, never shipped) ----------------------------


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # a client certificate from the same CA with a subject not allowed
    other_key: Path
    client_subject: str = "CN=modality1,O=edgemed-test"


def tls_material(out: Path) -> TlsMaterial:
    """A test CA, a server certificate for 127.0.0.1 and two client certificates (EC P-256)."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = _ec_key()
    ca_cert = _cert("edgemed-test-ca", ca_key, ca_key, None, ca=True)
    files = {"ca": _pem(out / "ca.crt", ca_cert)}
    _pem(out / "ca.key", ca_key)  # kept beside it only so a test can renew a certificate
    for name, cn in (("server", "127.0.0.1"), ("client", "modality1"), ("other", "intruder")):
        key = _ec_key()
        cert = _cert(cn, key, ca_key, ca_cert, server=name == "server")
        files[f"{name}_cert"] = _pem(out / f"{name}.crt", cert)
        files[f"{name}_key"] = _pem(out / f"{name}.key", key)
    return TlsMaterial(**files)


def _ec_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(cn: str, key, issuer_key, issuer_cert, ca: bool = False, server: bool = False):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgemed-test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
    if not ca:  # the appliance's certificate also authenticates it as the forwarder's client
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        usage += [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj) -> Path:
    from cryptography.hazmat.primitives import serialization

    if hasattr(obj, "private_bytes"):
        data = obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    else:
        data = obj.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    return path


# ---- a real rsyslog collector (imtcp + gtls: RFC 5425) -----------------------------------------

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
)


@dataclass
class Rsyslog:
    """rsyslogd in the foreground on a loopback port, TLS only (anonymous clients), writing every
    message it takes, in RFC 5424 form, to `root/received.log`."""

    root: Path
    tls: object  # TlsMaterial: its server certificate is the collector's

    def start(self) -> Rsyslog:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.out = self.root / "received.log"
        conf = self.root / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{self.root}" DefaultNetstreamDriver="gtls"\n'
            f'  DefaultNetstreamDriverCAFile="{self.tls.ca}"\n'
            f'  DefaultNetstreamDriverCertFile="{self.tls.server_cert}"\n'
            f'  DefaultNetstreamDriverKeyFile="{self.tls.server_key}")\n'
            'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
            'StreamDriver.AuthMode="anon")\n'
            f'input(type="imtcp" port="{self.port}" address="{LOOPBACK}")\n'
            f'action(type="omfile" file="{self.out}" template="RSYSLOG_SyslogProtocol23Format")\n'
        )
        self.log = open(self.root / "rsyslogd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._up, 30, "rsyslogd to listen")
        return self

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {(self.root / 'rsyslogd.log').read_text()}")
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def messages(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def stop(self) -> None:
        stop_server(self.proc, self.log)
