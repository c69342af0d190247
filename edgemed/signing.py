"""Ed25519 keys for bundle signing: generate a key pair, load keys, sign and check bytes.

The private key never exists on disk with wider permissions than 0600: it is written to a file
created with mode 0600 (os.open) and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from edgemed.errors import InputError
from edgemed.fileio import write_bytes_atomic

PRIVATE_NAME = "edgemed.key"
PUBLIC_NAME = "edgemed.pub"


def write_keypair(keydir: Path, force: bool = False) -> tuple[Path, Path]:
    """Generate an Ed25519 pair: KEYDIR/edgemed.key (PEM PKCS8, mode 0600) and KEYDIR/edgemed.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keydir = Path(keydir)
    priv_path, pub_path = keydir / PRIVATE_NAME, keydir / PUBLIC_NAME
    existing = [str(p) for p in (priv_path, pub_path) if p.exists()]
    if existing and not force:
        raise InputError(
            f"key file(s) {', '.join(existing)} already exist; keep them, choose another --out, "
            "or pass --force to replace them (bundles signed with the old key will no longer verify)"
        )
    if keydir.exists() and not keydir.is_dir():
        raise InputError(f"{keydir} exists and is not a directory; choose another --out")
    keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_private(priv_path, private_pem)
    write_bytes_atomic(pub_path, public_pem)
    os.chmod(pub_path, 0o644)  # public by design: appliances read it
    return priv_path, pub_path


def _write_private(path: Path, data: bytes) -> None:
    """Create a temp file with mode 0600 from the start, write, fsync, rename over `path`."""
    tmp = Path(tempfile.mktemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # umask can only remove bits; this pins exactly 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_private_key(path: Path):
    """An Ed25519 private key from a PEM file written by `edgemed keygen`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(
            f"signing key {path} is passphrase-protected; use an unencrypted key from `edgemed keygen`"
        ) from None
    except ValueError:
        raise InputError(
            f"{path} is not a PEM private key (did you pass the .pub file?); "
            "pass the edgemed.key written by `edgemed keygen`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(
            f"signing key {path} is not an Ed25519 key; create one with `edgemed keygen`"
        )
    return key


def load_public_key(path: Path):
    """An Ed25519 public key from a PEM file (KEYDIR/edgemed.pub)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(
            f"{path} is not a PEM public key (did you pass the private key?); "
            "pass the publisher's edgemed.pub"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(
            f"public key {path} is not an Ed25519 key; pass the publisher's edgemed.pub"
        )
    return key


MAX_KEY_BYTES = 64 << 10


def _read_key_file(path: Path, what: str) -> bytes:
    """A key file: a regular file of at most 64 KiB (a FIFO or device would block or never end)."""
    import stat

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise InputError(
                f"{what} {path} is not a regular file (a FIFO or device?); pass the key file"
            )
        with open(path, "rb", buffering=0) as f:
            data = f.read(MAX_KEY_BYTES + 1)
        if len(data) > MAX_KEY_BYTES:
            raise InputError(f"{what} {path} is larger than any key file; pass the key file")
        return data
    except FileNotFoundError:
        raise InputError(
            f"{what} {path} does not exist; create a pair with `edgemed keygen`"
        ) from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory; pass the key file inside it") from None


def fingerprint(public_key) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: names the key in manifests and messages."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signature_is_valid(public_key, signature: bytes, data: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `data` by `public_key`."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def git_work_tree_warning(key_path: Path) -> str | None:
    """A warning when `key_path` lies inside a git work tree (one `git add .` from a commit)."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        return None
    where = Path(key_path).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10
        )

    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return None
    ignored = git("check-ignore", "-q", str(Path(key_path).resolve())).returncode == 0
    state = "ignored by its .gitignore" if ignored else "NOT ignored by git"
    return (
        f"edgemed: warning: private key {key_path} is inside the git work tree "
        f"{top.stdout.strip()} ({state}); keep signing keys outside any repository"
    )
