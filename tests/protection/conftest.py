"""Fixtures of the protection tests: a namespace per test and a fence that holds in it."""

from __future__ import annotations

import pytest

from worker.keys import Keys
from worker.protection.writer import Fence

from tests.protection.helpers import make_fence


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def fence(client, keys) -> Fence:
    return make_fence(client, keys)
