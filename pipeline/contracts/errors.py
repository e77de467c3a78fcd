"""Errors the command line prints as one line, their exit codes, and the one-line form of any exception."""

from __future__ import annotations

__all__ = [
    "EXIT_NOTHING_USABLE",
    "EXIT_USAGE",
    "ConfigError",
    "ContribshapError",
    "NoUsableEvaluationsError",
    "one_line",
]

#: Exit code of a bad input (config, data, store, command line): one line on stderr, nothing lost.
EXIT_USAGE = 2
#: Exit code of a command that produced nothing usable (every evaluation of the run failed).
EXIT_NOTHING_USABLE = 3


class ContribshapError(Exception):
    """Base class of the errors the CLI prints as one line on stderr (exit code :data:`EXIT_USAGE`)."""

    exit_code = EXIT_USAGE


class ConfigError(ContribshapError):
    """A config file (or a config-dependent store check) is invalid; the message lists every problem."""


class NoUsableEvaluationsError(ContribshapError):
    """The store holds evaluations, but none is ok: there is nothing to estimate from (exit code 3)."""

    exit_code = EXIT_NOTHING_USABLE


def one_line(error: BaseException) -> str:
    """``"<ExceptionClass>: <first line of the message>"``, at most 500 characters."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
