"""Interop over TLS (#23): the real grpcurl and `buf curl` against a
`testbed all` serving mutual TLS, with certificates made by `openssl` for
the test; plaintext and certificate-less clients refused; kubelet-style
health on the plaintext `--probe-addr` port, which serves nothing else.
"""

import json
import pathlib
import subprocess
import tempfile

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Testbed, make_pki, tool


@pytest.fixture(scope="module")
def tls_all():
    with tempfile.TemporaryDirectory(prefix="testbed-interop-tls-") as tmp:
        pki = make_pki(pathlib.Path(tmp))
        (cert, key) = pki["server"]
        tb = Testbed("all", "--tls-cert", str(cert), "--tls-key", str(key),
                     "--tls-client-ca", str(pki["ca"]), "--probe-addr", "127.0.0.1:0")
        tb.pki = pki
        tb.host = "localhost:" + tb.addr.rsplit(":", 1)[1]
        yield tb
        assert tb.stop() == 0


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


def tls_flags(tb, client: bool = True) -> list[str]:
    flags = ["-cacert", str(tb.pki["ca"])]
    if client:
        (cert, key) = tb.pki["client"]
        flags += ["-cert", str(cert), "-key", str(key)]
    return flags


def test_grpcurl_over_mutual_tls(tls_all):
    """grpcurl with -cacert/-cert/-key lists the services by reflection and
    checks health over TLS."""
    listed = run(tool("grpcurl"), *tls_flags(tls_all), tls_all.host, "list").stdout.split()
    assert "testbed.v1.IngestService" in listed and "grpc.health.v1.Health" in listed, listed
    out = run(tool("grpcurl"), *tls_flags(tls_all), "-d", '{"service":""}', tls_all.host,
              "grpc.health.v1.Health/Check").stdout
    assert json.loads(out) == {"status": "SERVING"}


def test_plaintext_and_certificate_less_clients_are_refused(tls_all):
    """A plaintext grpcurl and one without a client certificate both fail."""
    plain = run(tool("grpcurl"), "-plaintext", tls_all.addr, "list", check=False)
    assert plain.returncode != 0, plain.stdout
    anonymous = run(tool("grpcurl"), *tls_flags(tls_all, client=False), tls_all.host, "list",
                    check=False)
    assert anonymous.returncode != 0, anonymous.stdout


def test_buf_curl_over_mutual_tls(tls_all):
    """`buf curl` (reflection v1) calls a unary RPC over mutual TLS."""
    (cert, key) = tls_all.pki["client"]
    out = run(tool("buf"), "curl", "--protocol", "grpc", "--cacert", str(tls_all.pki["ca"]),
              "--cert", str(cert), "--key", str(key), "-d", "{}",
              f"https://{tls_all.host}/testbed.v1.WorkerControlService/GetStatus").stdout
    assert len(json.loads(out)["group"]["partitions"]) == 4, out


def test_probe_port_answers_health_in_plaintext_only(tls_all):
    """The --probe-addr port answers health in plaintext as a kubelet probe
    asks it (grpcio's health stub, no reflection needed), and offers no
    reflection: grpcurl cannot even list it."""
    with grpc.insecure_channel(tls_all.probe_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", "testbed.v1.IngestService", "testbed.v1.QueryService"]:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    listed = run(tool("grpcurl"), "-plaintext", tls_all.probe_addr, "list", check=False)
    assert listed.returncode != 0, listed.stdout
    assert "does not support the reflection API" in listed.stderr, listed.stderr
