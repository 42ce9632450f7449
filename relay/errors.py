"""Typed errors of the relay control plane.

Each carries the exit status the `cfr` CLI uses, so that a configuration problem always
exits 2 *before* anything in the kernel is touched, and a runtime failure exits 1.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base for errors `cfr` reports as one line, without a traceback."""

    exit_code = 1


class ConfigError(RelayError):
    """The configuration is invalid. Names the offending key and what is allowed there."""

    exit_code = 2

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        shown = "(missing)" if value is _MISSING else repr(value)
        super().__init__(f"config error: {key} = {shown}: {allowed}")


class PoolTooSmall(ConfigError):
    """The alias pool cannot give the policy what it promises (anonymity set or ports)."""


class UsageError(RelayError):
    """The command line asked for something impossible (missing config, unknown table)."""

    exit_code = 2


class NftError(RelayError):
    """`nft` rejected a transaction; because transactions are atomic, nothing changed."""


class KernelError(RelayError):
    """A netlink operation (conntrack dump, events) failed."""


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()
MISSING: object = _MISSING
