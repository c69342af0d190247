"""Atomic, non-destructive output: temp file or dir, then rename; refuse to overwrite without force."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgemed.errors import InputError, environment_problem


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refuse_existing(out: Path, force: bool) -> None:
    """Raise unless `out` is free or the user asked to replace it."""
    if out.exists() and not force:
        raise InputError(
            f"output {out} already exists; choose another path or pass --force to replace it"
        )


@contextlib.contextmanager
def writing(where: Path) -> Iterator[None]:
    """Permission, read-only and full-disk errors inside become one line naming `where`."""
    try:
        yield
    except (OSError, MemoryError) as exc:
        problem = environment_problem(exc, where)
        if problem is None:
            raise
        raise problem from None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temp file beside `path`, fsync, then rename over it."""
    with writing(path):
        _write_bytes_atomic(path, data)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; outputs get the usual mode (0666 minus umask) like open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: object) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, what: str = "file") -> dict:
    """Read a JSON object, turning a missing or corrupt file into an InputError."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc}); regenerate it") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} is not a JSON object; regenerate it")
    return data


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success it replaces `out` atomically, on error it vanishes.

    An existing `out` is refused unless `force`; with `force` it is swapped out only after the new
    content is complete, so an interrupted run never leaves a half-written output. The temp dir
    is named `.OUT.PID-XXXX.partial`; those of dead processes are removed when the next run starts.
    """
    out = Path(out)
    refuse_existing(out, force)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent, f".{out.name}.", ".partial")
        tmp = Path(
            tempfile.mkdtemp(
                prefix=f".{out.name}.{os.getpid()}-", suffix=".partial", dir=out.parent
            )
        )
    try:
        with writing(out):
            yield tmp
            publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2(2); False where the libc or the filesystem does not support it."""
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def publish(tmp: Path, out: Path, force: bool) -> None:
    """Move finished `tmp` (file or dir) to `out` in one step: without `force` only if `out` is
    still free (two concurrent writers: exactly one wins), with `force` an atomic swap."""
    try:
        if not out.exists() and not os.path.islink(out):
            _claim(tmp, out)
            return
        if not force:
            raise FileExistsError
    except FileExistsError:
        raise InputError(
            f"output {out} already exists (another process wrote it meanwhile); choose another "
            "path or pass --force to replace it"
        ) from None
    if (
        tmp.is_dir()
        and out.is_dir()
        and not out.is_symlink()
        and _renameat2(tmp, out, _RENAME_EXCHANGE)
    ):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
        return
    if not tmp.is_dir() and not out.is_dir():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.{os.getpid()}-old.partial")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def _claim(tmp: Path, out: Path) -> None:
    """Rename without replacing: renameat2(NOREPLACE), else link (files) or mkdir-then-rename."""
    if _renameat2(tmp, out, _RENAME_NOREPLACE):
        return
    if tmp.is_dir():
        os.mkdir(out)  # FileExistsError if taken; rename onto our own empty dir is atomic
        os.rename(tmp, out)
    else:
        os.link(tmp, out)
        os.unlink(tmp)


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and fsync it, so a finished row survives a kill right after."""
    with writing(path), open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """The records of a JSON-lines file (none when it is absent). A torn last line (killed while
    writing) is dropped, and with `repair` cut from the file so that appending can continue;
    any other line that is not a JSON object is refused, naming the line."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                if repair:
                    write_bytes_atomic(path, "".join(f"{ln}\n" for ln in lines[:-1]).encode())
                continue
            row = None
        if not isinstance(row, dict):
            raise InputError(
                f"{path} line {n} is not a JSON record; the file was edited or damaged: fix or "
                "delete that line, or pass --force to start over"
            )
        out.append(row)
    return out


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path, prefix: str, suffix: str = "") -> None:
    """Remove PREFIX<pid>-*SUFFIX entries in `parent` whose process is gone (never a live one's)."""
    import glob

    for entry in Path(parent).glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid_text = entry.name[len(prefix) :].partition("-")[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)) or int(pid_text) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if entry.lstat().st_uid != os.getuid():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()


def private_tempdir(prefix: str) -> Path:
    """A mode-0700 temp dir PREFIX<pid>-XXXX in TMPDIR, after removing those of dead processes."""
    remove_stale(Path(tempfile.gettempdir()), prefix)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    except OSError as exc:
        raise InputError(
            f"cannot create a temp dir in {tempfile.gettempdir()} ({exc.strerror}); set TMPDIR "
            "to a writable directory"
        ) from None
