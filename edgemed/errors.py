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
