"""Errors the CLI turns into exit codes: TempoError -> 1, UsageError -> 2.

Core code raises these with a one-line message; the CLI prints it without a
traceback unless `--debug` / `TEMPO_DEBUG=1`.
"""

from __future__ import annotations


class TempoError(RuntimeError):
    """A failure at run time (exit 1). The message says what failed and what to do."""

    exit_code = 1


class UsageError(ValueError):
    """Bad usage or invalid settings (exit 2): names the option, the value and what is allowed."""

    exit_code = 2

    def __init__(self, option: str, value: object, allowed: str) -> None:
        self.option = option
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid value for {option}: {value!r} ({allowed})")


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a resumable state was saved (exit 130)."""

    exit_code = 130
