"""Verify a bundle before anything in it is used: archive structure, signature, file table, hashes,
runtime. Each check that passes is reported (one line); the first failure raises one error line.

The archive is read member by member (never `extractall`): only regular files with safe relative
names are accepted, each is hashed while it is read and, when extracting, written with O_EXCL into
a private directory. A complete tar ends with an end-of-archive marker followed only by zeros.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgemed.bundle import FORMAT, MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME
from edgemed.errors import InputError, UnavailableError

CHUNK = 1 << 20
REFETCH = "do not use this bundle; get a fresh copy from the publisher"


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose every check passed: its manifest, archive hash and (if extracted) files."""

    path: Path
    sha256: str
    manifest: dict
    checks: tuple[str, ...]
    root: Path | None = None

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]


def verify_bundle(
    bundle: str | Path,
    pubkey: str | Path,
    extract_to: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> VerifiedBundle:
    """Run every check in order; `echo` gets one line per passed check. Raises on the first failure."""
    from edgemed.signing import fingerprint, load_public_key

    path = Path(bundle)
    if not path.is_file():
        raise InputError(f"bundle {path} does not exist (or is not a file); pass the .bundle file")
    key = load_public_key(Path(pubkey))
    lines: list[str] = []

    def passed(name: str, detail: str, status: str = "ok") -> None:
        lines.append(f"{name:<9} {status:<4} {detail}")
        if echo:
            echo(lines[-1])

    members, manifest_raw, signature, digest = read_archive(path, extract_to)
    passed(
        "archive", f"uncompressed tar, {len(members)} regular files, safe relative names, complete"
    )
    check_signature(key, manifest_raw, signature, path)
    passed("signature", f"Ed25519, signed by key sha256:{fingerprint(key)[:16]}")
    manifest = parse_manifest(manifest_raw, path)
    passed("manifest", f"{FORMAT}, bundle {manifest['bundle_id']}, {manifest['model']['label']}")
    listed = check_file_set(manifest, members, path)
    passed("files", f"{len(listed)} listed, none missing, none extra")
    check_hashes(manifest, members, path)
    passed("hashes", f"{len(listed)} files match their SHA-256 and size")
    passed("runtime", runtime_check(manifest))
    overridden = (manifest.get("gate") or {}).get("decision") == "overridden"
    passed("gate", gate_summary(manifest), "NOTE" if overridden else "ok")
    return VerifiedBundle(path, digest, manifest, tuple(lines), extract_to)


def read_archive(
    path: Path, dest: Path | None
) -> tuple[dict[str, Member], bytes | None, bytes | None, str]:
    """Read every member once: check its type and name, hash it, optionally write it under `dest`."""
    members: dict[str, Member] = {}
    kept: dict[str, bytes] = {}
    whole = hashlib.sha256()
    try:
        with open(path, "rb") as raw:
            with tarfile.open(fileobj=raw, mode="r:") as tar:
                for info in iter(tar.next, None):
                    _check_member(info, members, path)
                    members[info.name] = _read_member(tar, info, dest, kept)
                end = tar.offset
            _check_end(raw, end, path)
            raw.seek(0)
            while block := raw.read(CHUNK):
                whole.update(block)
    except (tarfile.TarError, EOFError) as exc:
        raise InputError(
            f"bundle {path} is not a complete uncompressed tar archive ({exc}): it is truncated or "
            f"damaged; {REFETCH}"
        ) from None
    return members, kept.get(MANIFEST_NAME), kept.get(SIGNATURE_NAME), whole.hexdigest()


def unsafe_member(info: tarfile.TarInfo) -> str | None:
    """Why a member must not be extracted (links, devices, dirs, traversal), or None when safe."""
    if not info.isreg() or info.issparse():
        kinds = {"issym": "a symbolic link", "islnk": "a hard link", "isdir": "a directory"}
        kind = next((w for m, w in kinds.items() if getattr(info, m)()), None)
        return (
            f"is {kind or 'a device, FIFO or other special file'}; bundles hold regular files only"
        )
    name = info.name
    if not name or "\x00" in name or "\\" in name or len(name) > 255:
        return "has an invalid name"
    if name.startswith("/") or PurePosixPath(name).is_absolute() or ":" in name.split("/")[0]:
        return "has an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "escapes the bundle directory (path traversal with '..' or an empty/'.' component)"
    return None


def _check_member(info: tarfile.TarInfo, members: dict, path: Path) -> None:
    why = unsafe_member(info)
    if why:
        raise InputError(f"bundle {path}: member {info.name!r} {why}; {REFETCH}")
    if info.name in members:
        raise InputError(f"bundle {path}: member {info.name!r} appears twice; {REFETCH}")
    if info.name in (MANIFEST_NAME, SIGNATURE_NAME) and info.size > MAX_MANIFEST_BYTES:
        raise InputError(f"bundle {path}: {info.name} is implausibly large; {REFETCH}")


def _read_member(
    tar: tarfile.TarFile, info: tarfile.TarInfo, dest: Path | None, kept: dict
) -> Member:
    src = tar.extractfile(info)
    h, size, keep = hashlib.sha256(), 0, info.name in (MANIFEST_NAME, SIGNATURE_NAME)
    out = _create(dest, info.name) if dest is not None else None
    chunks = []
    try:
        while block := src.read(CHUNK):
            h.update(block)
            size += len(block)
            if out is not None:
                out.write(block)
            if keep:
                chunks.append(block)
    finally:
        if out is not None:
            out.close()
    if keep:
        kept[info.name] = b"".join(chunks)
    return Member(info.name, size, h.hexdigest())


def _create(dest: Path, name: str):
    """Open dest/name for writing: new file only (O_EXCL), never through a link, mode 0600."""
    target = dest / name
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise InputError(f"bundle member {name!r} cannot be extracted ({exc}); {REFETCH}") from None
    return os.fdopen(fd, "wb")


def _check_end(raw, end: int, path: Path) -> None:
    """After the last member: two zero blocks (end-of-archive), then nothing but zero padding."""
    raw.seek(end)
    marker = raw.read(2 * tarfile.BLOCKSIZE)
    if len(marker) < 2 * tarfile.BLOCKSIZE or marker.strip(b"\0"):
        raise InputError(
            f"bundle {path} is truncated (the tar end-of-archive marker is missing after "
            f"byte {end}); {REFETCH}"
        )
    while block := raw.read(CHUNK):
        if block.strip(b"\0"):
            raise InputError(
                f"bundle {path} has data appended after the end of the archive; {REFETCH}"
            )


def check_signature(key, manifest_raw: bytes | None, signature: bytes | None, path: Path) -> None:
    from edgemed.signing import fingerprint, signature_is_valid

    for name, data in ((MANIFEST_NAME, manifest_raw), (SIGNATURE_NAME, signature)):
        if data is None:
            raise InputError(f"bundle {path} has no {name}; it is not a signed edgemed bundle")
    if signature_is_valid(key, signature, manifest_raw):
        return
    claimed = _claimed_signer(manifest_raw)
    given = fingerprint(key)
    if claimed and claimed != given:
        raise InputError(
            f"bundle {path} was signed by another key (manifest names key sha256:{claimed[:16]}, "
            f"--pubkey is sha256:{given[:16]}); pass the publisher's public key or {REFETCH}"
        )
    raise InputError(
        f"bundle {path}: the signature does not match {MANIFEST_NAME} for key sha256:{given[:16]} "
        f"(manifest or signature modified after signing); {REFETCH}"
    )


def _claimed_signer(manifest_raw: bytes) -> str | None:
    """The signer fingerprint the (not yet trusted) manifest names: only to word the error."""
    try:
        return json.loads(manifest_raw)["signer"]["public_key_sha256"]
    except (ValueError, KeyError, TypeError):
        return None


def parse_manifest(raw: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"bundle {path}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(
            f"bundle {path}: {MANIFEST_NAME} is not an {FORMAT} manifest; "
            "this edgemed cannot read it (upgrade edgemed or rebuild the bundle)"
        )
    for key in ("bundle_id", "files", "model", "runtime", "documents"):
        if key not in manifest:
            raise InputError(f"bundle {path}: {MANIFEST_NAME} lacks {key!r}; rebuild the bundle")
    return manifest


def check_file_set(manifest: dict, members: dict[str, Member], path: Path) -> set[str]:
    listed = set(manifest["files"])
    present = set(members) - {MANIFEST_NAME, SIGNATURE_NAME}
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing:
        raise InputError(
            f"bundle {path} is missing {', '.join(missing)} (listed in the manifest); {REFETCH}"
        )
    if extra:
        raise InputError(
            f"bundle {path} holds file(s) not in the signed manifest: {', '.join(extra)}; {REFETCH}"
        )
    return listed


def check_hashes(manifest: dict, members: dict[str, Member], path: Path) -> None:
    for name, entry in sorted(manifest["files"].items()):
        m = members[name]
        if m.size != entry.get("bytes") or m.sha256 != entry.get("sha256"):
            raise InputError(
                f"bundle {path}: {name} does not match its SHA-256 in the signed manifest "
                f"(modified after signing); {REFETCH}"
            )


def runtime_check(manifest: dict) -> str:
    """The bundle's runtime package must be installed here in the same major version."""
    from edgemed.backends import BACKENDS
    from edgemed.provenance import package_version

    rt = manifest["runtime"]
    name, package, built = rt.get("name"), rt.get("package"), rt.get("version")
    if name not in BACKENDS:
        raise UnavailableError(
            f"bundle needs runtime {name!r}, which this edgemed does not know ({', '.join(BACKENDS)}); "
            "upgrade edgemed"
        )
    need = f"{package} {_major(built)}.x (bundle built with {built})"
    installed = package_version(package)
    if installed is None:
        raise UnavailableError(
            f"runtime {package} is not installed here; the bundle needs {need}: "
            f"pip install '{package}>={_major(built)},<{_major(built) + 1}'"
        )
    if _major(installed) != _major(built):
        raise UnavailableError(
            f"runtime {package} {installed} is installed here but the bundle needs {need}; "
            f"install {package} {_major(built)}.x"
        )
    return f"{package} {installed} installed, bundle needs {need}"


def _major(version: str | None) -> int:
    digits = ""
    for ch in str(version or ""):
        if not ch.isdigit():
            break
        digits += ch
    if not digits:
        raise InputError(f"bundle names runtime version {version!r}, which is not a version number")
    return int(digits)


def gate_summary(manifest: dict) -> str:
    gate = manifest.get("gate") or {}
    if gate.get("decision") == "overridden":
        failed = "; ".join(gate.get("failed") or [])
        return f"release gate OVERRIDDEN by the publisher: {gate.get('override_reason')!r} (failed: {failed})"
    return f"release gate passed ({'; '.join(c['detail'] for c in gate.get('checks', []))})"
