"""Errors that the CLI turns into one line on stderr and an exit status."""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class. ``exit_code`` 2 = bad usage or input, 1 = failure while running."""

    exit_code = 1


class InputError(EdgekitError):
    """Bad input from the user: unknown model/runtime/data name, missing file, wrong shapes."""

    exit_code = 2


class ArtifactError(InputError):
    """An artifact folder that is malformed, from another format version, or tampered with."""


class Interrupted(EdgekitError):
    """Ctrl-C, with what the user can do next (e.g. ``--resume``); the CLI prints it without "error:"."""

    exit_code = 130


def one_of(kind: str, value: object, allowed) -> InputError:
    """``InputError("unknown runtime 'foo'; allowed: a, b")`` with the allowed values listed."""
    allowed = ", ".join(str(a) for a in allowed)
    return InputError(f"unknown {kind} {value!r}; allowed: {allowed}")
