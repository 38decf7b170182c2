"""Fixtures running the real `testbed` binary for the Python client's
tests (see pyclient_harness for how it is started)."""

import pytest

from pyclient_harness import ADMIN_TOKEN, WRITE_TOKEN, Testbed


@pytest.fixture(scope="module")
def testbed():
    """`testbed all` with its defaults (embedded log, no auth)."""
    tb = Testbed("all")
    yield tb
    assert tb.stop() == 0


@pytest.fixture(scope="module")
def testbed_tight_backlog():
    """`testbed all` refusing a request once its partition holds more than
    one unprocessed event, with a 300 ms RetryInfo delay."""
    tb = Testbed("all", "--backlog-limit", "1", "--backlog-max-age", "0s", "--retry-after", "300ms")
    yield tb
    assert tb.stop() == 0


@pytest.fixture(scope="module")
def testbed_auth():
    """`testbed all` requiring bearer tokens."""
    tb = Testbed("all", "--auth-tokens", f"writer:write:{WRITE_TOKEN},ops:admin:{ADMIN_TOKEN}")
    yield tb
    assert tb.stop() == 0
