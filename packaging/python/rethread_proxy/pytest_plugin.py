"""A pytest fixture: ``rethread_proxy``, a rethread in front of ``$RETHREAD_UPSTREAM`` (default:
the public API) for the test, stopped after it."""

import os
from typing import Iterator

import pytest

from . import DEFAULT_UPSTREAM, Rethread, start


@pytest.fixture
def rethread_proxy() -> Iterator[Rethread]:
    with start(os.environ.get("RETHREAD_UPSTREAM", DEFAULT_UPSTREAM)) as proxy:
        yield proxy
