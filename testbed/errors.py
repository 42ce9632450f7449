"""Typed errors. Each carries the exit status the CLI should use, so that a usage error
(bad parameter, unknown name) always exits 2 and is reported as one clear line."""

from __future__ import annotations


class CfrbenchError(Exception):
    """Base for errors the CLI reports as one line, without a traceback."""

    exit_code = 1


class UsageError(CfrbenchError):
    """The caller asked for something invalid: bad parameter, unknown name, malformed file.

    Raised before anything is created, so nothing needs cleaning up."""

    exit_code = 2


class ParameterError(UsageError):
    """A named parameter is out of its allowed range."""

    def __init__(self, parameter: str, value: object, allowed: str) -> None:
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {parameter}={value!r}: allowed {allowed}")


class EnvironmentProblem(CfrbenchError):
    """The machine cannot do what was asked (not root, missing tool, kernel feature absent)."""

    exit_code = 2


class NetworkError(CfrbenchError):
    """Building or driving the emulated network failed (a command inside a node failed)."""


class RunStateError(CfrbenchError):
    """The run state file is missing, stale or names a run that is not running."""
