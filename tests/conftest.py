"""Shared fixtures: every test gets its own data roots; torch runs single-threaded to share the 2 CI cores fairly."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MSGLDM_NUM_WORKERS", "0")


@pytest.fixture
def msgldm_roots(tmp_path, monkeypatch):
    """Point MSGLDM_HOME (and so all three roots) at a fresh temporary folder."""
    home = tmp_path / "msgldm_home"
    monkeypatch.setenv("MSGLDM_HOME", str(home))
    for var in ("MSGLDM_RAW", "MSGLDM_PREPROCESSED", "MSGLDM_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    return home
