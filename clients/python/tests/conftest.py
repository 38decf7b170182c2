"""Fixtures running the real `testbed` binary for the Python client's
tests (see pyclient_harness for how it is started)."""

import pathlib
import tempfile

import pytest

from pyclient_harness import ADMIN_TOKEN, WRITE_TOKEN, Testbed, make_pki


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


@pytest.fixture(scope="module")
def testbed_mtls():
    """`testbed all` serving mutual TLS (openssl-made CA, server and client
    certificates, in `.pki`), its health on a plaintext probe port."""
    with tempfile.TemporaryDirectory(prefix="testbed-pyclient-tls-") as tmp:
        pki = make_pki(pathlib.Path(tmp))
        cert, key = pki["server"]
        tb = Testbed("all", "--tls-cert", str(cert), "--tls-key", str(key),
                     "--tls-client-ca", str(pki["ca"]), "--probe-addr", "127.0.0.1:0")
        tb.pki = {name: (tuple(p.read_bytes() for p in v) if isinstance(v, tuple) else v.read_bytes())
                  for name, v in pki.items()}
        yield tb
        assert tb.stop() == 0
