"""Fixtures that run the real `testbed` binary for the interop suite.

The binary comes from TESTBED_BIN (default: target/debug/testbed, built by
scripts/test). Servers bind 127.0.0.1:0; the bound port is read from
--addr-file, and readiness is a grpc.health.v1 check, never a sleep.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("TESTBED_BIN", ROOT / "target" / "debug" / "testbed"))
VENV_BIN = ROOT / ".venv" / "bin"


def tool(name: str) -> str:
    """Path of a real client tool installed by scripts/setup-tools."""
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: run scripts/setup-tools")
    return found


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(dir: pathlib.Path) -> dict:
    """(Shared by the TLS tests here and the Python client's.) A CA, a server certificate for localhost/127.0.0.1 and a client
    certificate, all P-256, signed by the CA."""
    ca_key, ca = dir / "ca.key", dir / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
            "-subj", "/CN=interop-ca")
    out = {"ca": ca}
    for name, ext in [("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                      ("client", "subjectAltName=DNS:interop-client")]:
        key, csr, crt = dir / f"{name}.key", dir / f"{name}.csr", dir / f"{name}.crt"
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        extfile = dir / f"{name}.ext"
        extfile.write_text(ext + "\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(extfile))
        out[name] = (crt, key)
    return out


class Testbed:
    """A running `testbed` process."""

    def __init__(self, *args: str, grace: str = "5s", env: dict | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="testbed-interop-")
        addr_file = pathlib.Path(self._dir.name) / "addr.json"
        self.log = open(pathlib.Path(self._dir.name) / "testbed.log", "w+b")
        self.proc = subprocess.Popen(
            [str(BIN), *args, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
             "--addr-file", str(addr_file), "--shutdown-grace", grace],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 30
        while not addr_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"testbed exited early: {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError("testbed did not bind within 30 s")
            time.sleep(0.02)
        addrs = json.loads(addr_file.read_text())
        self.addr = addrs["grpc"]
        self.metrics_addr = addrs["metrics"]
        # The plaintext health-only listener (--probe-addr), if any: the
        # only port a TLS server answers in plaintext.
        self.probe_addr = addrs.get("probe")
        self.wait_serving("")

    def wait_serving(self, service: str, timeout: float = 10.0) -> None:
        with grpc.insecure_channel(self.probe_addr or self.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service!r} not SERVING: {self.logs()}")
                time.sleep(0.02)

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.log.close()
        self._dir.cleanup()
        return code


@pytest.fixture(scope="module")
def testbed_all():
    tb = Testbed("all")
    yield tb
    assert tb.stop() == 0
