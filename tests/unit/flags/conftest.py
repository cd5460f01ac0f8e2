"""Fixtures for the flag tests: a manual clock and a clean OpenFeature registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openfeature import api

from flags import client as flag_client
from tests.unit.flags.helpers import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(autouse=True)
def clean_openfeature() -> Iterator[None]:
    """Every test starts and ends with no snapmerge provider registered."""
    flag_client.reset()
    yield
    flag_client.reset()
    api.clear_providers()
