"""Debian's ``prometheus`` package for the monitoring tests: its ``promtool`` and its
server. Missing, a test skips, or fails under CI (``install.sh --test`` installs it)."""

from __future__ import annotations

import os
import shutil

import pytest


def prometheus_program(name: str) -> str:
    """The path of ``name`` (``promtool`` or ``prometheus``)."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            raise AssertionError(f"{name} is missing: install.sh --test installs Debian's prometheus")
        pytest.skip(f"no {name} here (Debian's prometheus); CI installs it")
    return found
