"""Shared test helpers: data-dependent tests skip with a clear reason when ../shared/data is absent."""

from __future__ import annotations

import pytest

from vigil.paths import data_path, missing_data_reason


def require_data(*parts: str):
    """Return the shared-data path, or skip the calling test with the reason it is missing."""
    reason = missing_data_reason(*parts)
    if reason:
        pytest.skip(reason)
    return data_path(*parts)


@pytest.fixture(scope="session")
def shared_data():
    """A callable fixture: ``shared_data("lfw")`` gives the path or skips the test."""
    return require_data
