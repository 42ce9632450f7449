"""Shared pytest configuration.

Integration tests need root and network namespaces. Under CI=true they must run: a
missing capability is a failure there, never a skip.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_root() -> None:
    """Skip locally without root; fail under CI=true, where integration tests must run."""
    if os.geteuid() == 0:
        return
    if IN_CI:
        pytest.fail("integration tests need root and CI=true forbids skipping them")
    pytest.skip("needs root (network namespaces)")
