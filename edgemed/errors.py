"""The one exception family. The CLI turns these into a single error line; nothing else does."""

from __future__ import annotations


class EdgemedError(Exception):
    """A user-facing problem: the message says what is wrong and how to fix it."""

    exit_code = 1


class InputError(EdgemedError):
    """Bad model, data, image, flag or file given by the user."""

    exit_code = 2


class UnavailableError(EdgemedError):
    """A runtime or hardware this command needs is missing here."""

    exit_code = 3


class DriftError(EdgemedError):
    """A converted model drifted beyond its budget; carries the numbers."""

    exit_code = 4

    def __init__(self, message: str, numbers: dict | None = None) -> None:
        super().__init__(message)
        self.numbers = dict(numbers or {})


class NotMeasuredError(EdgemedError):
    """A choice for a device that no measurement on that device supports (sweep without
    --allow-proxy)."""

    exit_code = 6


class EnvironmentProblem(EdgemedError):
    """This machine refused: no permission, read-only or full disk, out of memory."""

    exit_code = 5


_ENV_ERRNOS = {
    "EACCES": "permission denied",
    "EPERM": "permission denied",
    "EROFS": "it is on a read-only filesystem",
    "ENOSPC": "no space left on the device",
    "EDQUOT": "the disk quota is exhausted",
}


def environment_problem(exc: BaseException, where: object = None) -> EnvironmentProblem | None:
    """The one-line error for an OSError/MemoryError this machine caused, else None (a bug)."""
    import errno
    import os
    import shutil

    if isinstance(exc, MemoryError):
        return EnvironmentProblem(
            f"out of memory{f' while working on {where}' if where else ''} ({memory_limit()}); "
            "use smaller inputs (--batch-size, --image-size, fewer images) or raise the limit"
        )
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    why = _ENV_ERRNOS.get(errno.errorcode.get(exc.errno, ""))
    if why is None:
        return None
    path = str(where or exc.filename or "the output")
    named = str(exc.filename) if exc.filename else None
    if named and where and not named.startswith(os.path.dirname(os.path.abspath(str(where)))):
        # the failing file is not the output being written (e.g. an input it could not read)
        return EnvironmentProblem(f"cannot access {named}: {why}; check its permissions")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        probe = path if os.path.isdir(path) else os.path.dirname(path) or "."
        try:
            free = f", {shutil.disk_usage(probe).free / 2**20:.0f} MB free"
        except OSError:
            free = ""
        return EnvironmentProblem(
            f"cannot write {path}: {why}{free}; free space there or choose another --out (or TMPDIR)"
        )
    return EnvironmentProblem(
        f"cannot write {path}: {why}; choose a writable --out (or TMPDIR) or fix its permissions"
    )


def memory_limit() -> str:
    """The memory limit that applies here, in words (ulimit -v, else the machine's RAM)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        return f"address-space limit ulimit -v {soft // 1024} KiB"
    try:
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1]) // 1024
        return f"this machine has {total} MB of RAM"
    except (OSError, ValueError, IndexError):
        return "limit unknown"
