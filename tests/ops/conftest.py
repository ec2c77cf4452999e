from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.endpoints import Endpoints, endpoints


@pytest.fixture
def alert_endpoints() -> Iterator[Endpoints]:
    """A Slack stand-in (HTTP) and an SMTP server, both on 127.0.0.1, fresh for the test."""
    yield from endpoints()
