"""Verify a bundle before anything in it is used: archive structure, signature, file table, hashes,
runtime. Each check that passes is reported (one line); the first failure raises one error line.

The archive is read member by member with a bounded reader (`tarstream`, never `extractall`): the
manifest and its signature come first and are verified before any other member's bytes are read.
Then only listed regular files with safe relative names are accepted, each at its signed size and
hashed; when extracting, a member is written (O_EXCL, into a private directory) only after its
bytes matched, and hashed again as it is copied. A complete tar ends with an end-of-archive marker
followed only by zeros. Limits (size, member count, header size) are in `tarstream.Limits`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgemed.appliance.tarstream import REFETCH, Limits, TarStream
from edgemed.bundle import FORMAT, MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME
from edgemed.errors import InputError, UnavailableError
from edgemed.provenance import package_version
from edgemed.runtimes import RUNTIMES
from edgemed.signing import fingerprint, load_public_key, signature_is_valid

__all__ = ["Limits", "VerifiedBundle", "verify_bundle"]


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
    limits: Limits | None = None,
) -> VerifiedBundle:
    """Run every check in order; `echo` gets one line per passed check. Raises on the first failure.

    The signed manifest (the first two members) is verified before a byte of any other member is
    read; then each member is read only if it is listed, at its signed size, and (when
    extracting) written only after its bytes matched their signed SHA-256.
    """

    path, limits = Path(bundle), limits or Limits()
    if not path.is_file():
        raise InputError(f"bundle {path} does not exist (or is not a file); pass the .bundle file")
    key = load_public_key(Path(pubkey))
    check_size(path, limits)
    with open(path, "rb") as raw:
        stream = TarStream(raw, path, limits)
        manifest_raw, signature = read_head(stream)
        check_signature(key, manifest_raw, signature, path)
        manifest = parse_manifest(manifest_raw, path)
        members = read_listed(stream, manifest, extract_to)
    shown: list[str] = []
    overridden = (manifest.get("gate") or {}).get("decision") == "overridden"

    def passed(name: str, detail: str, status: str = "ok") -> None:
        shown.append(f"{name:<9} {status:<4} {detail}")
        if echo:
            echo(shown[-1])

    n = len(members)
    passed("archive", f"uncompressed tar, {n + 2} regular files, safe relative names, complete")
    passed("signature", f"Ed25519, signed by key sha256:{fingerprint(key)[:16]}")
    label = manifest["model"].get("label") if isinstance(manifest["model"], dict) else None
    passed("manifest", f"{FORMAT}, bundle {manifest['bundle_id']}, {label}")
    passed("files", f"{n} listed, none missing, none extra")
    passed("hashes", f"{n} files match their SHA-256 and size")
    passed("runtime", runtime_check(manifest))
    passed("gate", gate_summary(manifest), "NOTE" if overridden else "ok")
    return VerifiedBundle(path, stream.whole.hexdigest(), manifest, tuple(shown), extract_to)


def check_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_bundle_bytes:
        raise InputError(
            f"bundle {path} is {size / 2**20:.0f} MB, over the {limits.max_bundle_bytes / 2**20:.0f} "
            "MB limit; if a bundle this large is expected, pass --max-bundle-mb N"
        )


def read_head(stream: TarStream) -> tuple[bytes, bytes]:
    """The manifest and its signature: the first two members, each at most MAX_MANIFEST_BYTES."""
    got = []
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        info = stream.next()
        if info is None or info.name != name:
            found = "nothing" if info is None else repr(info.name)
            raise InputError(
                f"bundle {stream.path} has no {name} where it belongs (found {found}); it is not a "
                f"signed edgemed bundle; {REFETCH}"
            )
        _check_member(info, (), stream.path)
        got.append(b"".join(stream.data(info)))
    return got[0], got[1]


def read_listed(stream: TarStream, manifest: dict, dest: Path | None) -> dict[str, Member]:
    """Every other member: listed, at its signed size and hash; copied to `dest` once verified."""
    files, path = manifest["files"], stream.path
    members: dict[str, Member] = {}
    while (info := stream.next()) is not None:
        _check_member(info, {*members, MANIFEST_NAME, SIGNATURE_NAME}, path)
        entry = files.get(info.name)
        if entry is None:
            raise InputError(
                f"bundle {path} holds file(s) not in the signed manifest: {info.name}; {REFETCH}"
            )
        if info.size != entry["bytes"]:
            raise InputError(
                f"bundle {path}: {info.name} does not match its SHA-256 and size in the signed "
                f"manifest ({info.size} bytes, signed {entry['bytes']}); {REFETCH}"
            )
        members[info.name] = _hash_member(stream, info, entry)
        if dest is not None:
            _extract(stream, info, entry, dest)
    missing = sorted(set(files) - set(members))
    if missing:
        raise InputError(
            f"bundle {path} is missing {', '.join(missing)} (listed in the manifest); {REFETCH}"
        )
    return members


def _hash_member(stream: TarStream, info: tarfile.TarInfo, entry: dict) -> Member:
    h = hashlib.sha256()
    for block in stream.data(info):
        h.update(block)
    if h.hexdigest() != entry["sha256"]:
        raise InputError(
            f"bundle {stream.path}: {info.name} does not match its SHA-256 in the signed manifest "
            f"(modified after signing); {REFETCH}"
        )
    return Member(info.name, info.size, h.hexdigest())


def _extract(stream: TarStream, info: tarfile.TarInfo, entry: dict, dest: Path) -> None:
    """Copy the verified member into `dest`, hashing again (the file may change under us)."""
    h, target = hashlib.sha256(), dest / info.name
    with _create(dest, info.name) as out:
        try:
            for block in stream.again(info):
                h.update(block)
                out.write(block)
        except OSError as exc:
            raise InputError(
                f"cannot extract {info.name} into {dest} ({exc.strerror or exc}); free space "
                "there or point TMPDIR at a larger disk"
            ) from None
    if h.hexdigest() != entry["sha256"]:
        target.unlink(missing_ok=True)
        raise InputError(f"bundle {stream.path} changed while it was read; {REFETCH}")


def unsafe_member(info: tarfile.TarInfo) -> str | None:
    """Why a member must not be extracted (links, devices, dirs, traversal), or None when safe."""
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.issparse():
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


def _check_member(info: tarfile.TarInfo, seen, path: Path) -> None:
    why = unsafe_member(info)
    if why:
        raise InputError(f"bundle {path}: member {info.name!r} {why}; {REFETCH}")
    if info.name in seen:
        raise InputError(f"bundle {path}: member {info.name!r} appears twice; {REFETCH}")
    if info.name in (MANIFEST_NAME, SIGNATURE_NAME) and info.size > MAX_MANIFEST_BYTES:
        raise InputError(f"bundle {path}: {info.name} is implausibly large; {REFETCH}")


def _create(dest: Path, name: str):
    """Open dest/name for writing: new file only (O_EXCL), never through a link, mode 0600."""
    target = dest / name
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise InputError(f"bundle member {name!r} cannot be extracted ({exc}); {REFETCH}") from None
    return os.fdopen(fd, "wb")


def check_signature(key, manifest_raw: bytes | None, signature: bytes | None, path: Path) -> None:

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
    files = manifest["files"]
    if not isinstance(files, dict) or not all(_entry_ok(e) for e in files.values()):
        raise InputError(f"bundle {path}: {MANIFEST_NAME} has a malformed file table; rebuild it")
    return manifest


def _entry_ok(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("bytes"), int)
        and isinstance(entry.get("sha256"), str)
    )


def runtime_check(manifest: dict) -> str:
    """The bundle's runtime package must be installed here in the same major version."""

    rt = manifest["runtime"]
    name, package, built = rt.get("name"), rt.get("package"), rt.get("version")
    if name not in RUNTIMES:
        raise UnavailableError(
            f"bundle needs runtime {name!r}, which this edgemed does not know ({', '.join(RUNTIMES)}); "
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
