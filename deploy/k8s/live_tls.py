#!/usr/bin/env python3
"""Runs the tls overlay's environment with the real binary, on loopback.

check_manifests.py checks the rendered manifests' names and numbers; this
checks that what the tls overlay sets actually works: ingest, worker and
query are started with the rendered testbed-env ConfigMap (TLS, mutual TLS,
the probe address), their certificate files laid out as the kubelet lays
out a Secret volume (tls.crt -> ..data/tls.crt, ..data -> a timestamped
folder), against a redis-server of their own. Then:

- each probe port answers grpc.health.v1 in plaintext, "" and the served
  service SERVING, as the kubelet's gRPC probe asks (the probes' service
  names are the rendered readinessProbe's);
- each TLS port refuses a plaintext client;
- a simulator with the rendered testbed-sim ConfigMap (its client
  certificate, the CA), targets rewritten to the loopback ports (the
  dns:/// and https:// forms kept, the certificate naming localhost), runs
  load and --verify through query: exit 0, verification passed;
- each TLS port refuses a client without a certificate (mutual TLS);
- the server Secret is renewed the way the kubelet updates a volume (a new
  folder, ..data swapped in one rename) and ingest reloads it
  (server_tls_reloads_total{result="ok"} on /metrics) and serves the new
  certificate to new connections.

Makes its own CA and certificates with openssl. Exits 1 naming what failed.
Usage: live_tls.py --bin TESTBED --rendered RENDERED/tls.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_manifests import pod_spec, start_redis, stop_all, wait_for  # noqa: E402

SERVERS = ("ingest", "worker", "query")


def die(msg: str) -> None:
    sys.exit(f"live_tls: {msg}")


def clean_env() -> dict[str, str]:
    """This process's environment without testbed, OTel or Redis settings
    and with telemetry off: what the binary runs with besides the overlay's
    own environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTBED_", "OTEL_", "REDIS_"))}
    env["OTEL_SDK_DISABLED"] = "true"
    return env


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(work: Path) -> tuple[Path, Path]:
    key, crt = work / "ca.key", work / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=live-tls-ca")
    return crt, key


def issue(work: Path, ca: tuple[Path, Path], name: str, ext: str) -> tuple[bytes, bytes]:
    """A P-256 certificate and its PKCS#8 key, signed by the CA (what the
    example's cert-manager Certificates make)."""
    key, csr, crt, extfile = (work / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    extfile.write_text(ext + "\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-out", str(crt), "-days", "2", "-extfile", str(extfile))
    return crt.read_bytes(), key.read_bytes()


def secret_volume(mount: Path, files: dict[str, bytes], version: int) -> None:
    """Writes files the way the kubelet updates a Secret volume: into a new
    folder, then ..data swapped to it in one rename; the visible names are
    symlinks through ..data."""
    mount.mkdir(parents=True, exist_ok=True)
    folder = mount / f"..v{version}"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(folder.name)
    os.replace(tmp, mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")


def configmap(objs: list[dict], name: str) -> dict:
    return next(o["data"] for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(name + "-"))


def container(objs: list[dict], kind: str, name: str) -> tuple[dict, dict]:
    o = next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
    return pod_spec(o), pod_spec(o)["containers"][0]


def relocate(env: dict, mounts: dict[str, Path]) -> dict:
    """The environment with file paths under a mount moved to the local
    folder standing in for that mount."""
    out = {}
    for k, v in env.items():
        for mount_path, local in mounts.items():
            if v.startswith(mount_path.rstrip("/") + "/"):
                v = str(local / v[len(mount_path.rstrip("/")) + 1:])
        out[k] = v
    return out


def health(addr: str, service: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1).status
            return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as e:
            return f"error {e.code().name}"


def peer_certificate(addr: str, ca: Path, client: tuple[Path, Path]) -> bytes:
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(str(client[0]), str(client[1]))
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.getpeercert(binary_form=True)


def refusal_without_client_cert(addr: str, ca: Path) -> str:
    """What a TLS client that trusts the CA but has no certificate of its
    own gets: the server's alert, or "accepted"."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            return "accepted" if tls.recv(1) else "closed without an alert"
    except ssl.SSLError as e:
        return str(e.reason)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rendered", required=True, type=Path)
    args = ap.parse_args()
    objs = [o for o in yaml.safe_load_all(args.rendered.read_text()) if o]
    server_env = configmap(objs, "testbed-env")
    sim_env = configmap(objs, "testbed-sim")
    if "TESTBED_TLS_CERT" not in server_env:
        die(f"{args.rendered}: testbed-env sets no TESTBED_TLS_CERT")

    work = Path(tempfile.mkdtemp(prefix="live-tls-"))
    procs: list[subprocess.Popen] = []
    base_env = clean_env()
    try:
        ca = make_ca(work)
        names = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
        server_files = dict(zip(("tls.crt", "tls.key"), issue(work, ca, "server", names)))
        server_files["ca.crt"] = ca[0].read_bytes()
        sim_files = dict(zip(("tls.crt", "tls.key"), issue(work, ca, "simulator", "extendedKeyUsage=clientAuth")))
        sim_files["ca.crt"] = ca[0].read_bytes()
        server_mount, sim_mount = work / "server-tls", work / "sim-tls"
        secret_volume(server_mount, server_files, 1)
        secret_volume(sim_mount, sim_files, 1)

        port = start_redis(work, procs)

        addrs: dict[str, dict] = {}
        for sub in SERVERS:
            spec, c = container(objs, "Deployment", sub)
            mounts = {m["mountPath"]: server_mount for m in c.get("volumeMounts", [])}
            env = {**base_env, **relocate(server_env, mounts)}
            # Free ports on loopback for the addresses the overlay sets.
            env.update({k: "127.0.0.1:0" for k in ("TESTBED_GRPC_ADDR", "TESTBED_METRICS_ADDR", "TESTBED_PROBE_ADDR")
                        if k in env})
            env.update(REDIS_URL=f"redis://127.0.0.1:{port}/0", TESTBED_KEY_PREFIX=f"live-tls-{os.getpid()}",
                       TESTBED_SHUTDOWN_GRACE="2s")
            addr_file = work / f"{sub}.json"
            log = open(work / f"{sub}.log", "w")
            proc = subprocess.Popen([args.bin, sub, "--addr-file", str(addr_file)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
            procs.append(proc)
            if not wait_for(lambda: proc.poll() is not None or addr_file.exists() and addr_file.stat().st_size > 0, 30) \
                    or proc.poll() is not None:
                die(f"testbed {sub} did not start:\n" + (work / f"{sub}.log").read_text())
            addrs[sub] = json.loads(addr_file.read_text())
            if "probe" not in addrs[sub]:
                die(f"testbed {sub}: no probe address in --addr-file {addrs[sub]}")
            # The kubelet's probes, in plaintext, on the probe port.
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                service = c[kind]["grpc"].get("service", "")
                if not wait_for(lambda: health(addrs[sub]["probe"], service) == "SERVING", 20):
                    die(f"testbed {sub}: {kind} service {service!r} on the probe port: "
                        f"{health(addrs[sub]['probe'], service)}")
            got = health(addrs[sub]["grpc"], "")
            if got != "error UNAVAILABLE":
                die(f"testbed {sub}: a plaintext health check on the TLS port got {got}, expected it refused")
            print(f"  {sub}: probes SERVING in plaintext on {addrs[sub]['probe']}; "
                  f"{addrs[sub]['grpc']} refuses plaintext")

        def sim() -> subprocess.CompletedProcess:
            spec, c = container(objs, "Job", "simulator")
            mounts = {m["mountPath"]: sim_mount for m in c.get("volumeMounts", [])}
            env = {**base_env, **relocate(sim_env, mounts)}
            for var, sub in (("TESTBED_SIM_TARGET", "ingest"), ("TESTBED_SIM_QUERY_TARGET", "query")):
                scheme = env[var].split(":", 1)[0]
                port = addrs[sub]["grpc"].rsplit(":", 1)[1]
                env[var] = f"dns:///localhost:{port}" if scheme == "dns" else f"{scheme}://localhost:{port}"
            env.update(TESTBED_SIM_DURATION="2s", TESTBED_SIM_RATE="200", TESTBED_SIM_DEVICES="10",
                       TESTBED_SIM_VERIFY_TIMEOUT="30s", TESTBED_LOG_FORMAT="human",
                       TESTBED_SIM_OUTPUT_FILE=str(work / "report.json"))
            return subprocess.run([args.bin, "sim"], env=env, capture_output=True, text=True, timeout=120)

        run = sim()
        if run.returncode != 0:
            die(f"the simulator with the overlay's environment exited {run.returncode}:\n{run.stderr[-3000:]}")
        report = json.loads((work / "report.json").read_text())
        verification = report.get("verification") or {}
        if sim_env.get("TESTBED_SIM_VERIFY") == "true" and verification.get("passed") is not True:
            die(f"the simulator's --verify through query did not pass: {verification}")
        print(f"  simulator (dns:/// ingest, https:// query, client certificate): exit 0, "
              f"{report['total']['accepted']} of {report['total']['sent']} events accepted, "
              f"--verify through query passed ({sum(verification.get('processed', []))} processed)")
        # Without a client certificate: the servers end the handshake (TLS
        # 1.3 sends the alert after the client's Finished, so read it).
        for sub in SERVERS:
            reason = refusal_without_client_cert(addrs[sub]["grpc"], ca[0])
            if "CERTIFICATE_REQUIRED" not in reason:
                die(f"testbed {sub}: a client without a certificate got {reason!r}, expected it refused")
        print(f"  {', '.join(SERVERS)}: a client without a certificate is refused ({reason})")

        # Renewal: a new certificate in a new folder, ..data swapped.
        before = peer_certificate(addrs["ingest"]["grpc"], ca[0], (sim_mount / "tls.crt", sim_mount / "tls.key"))
        renewed = dict(zip(("tls.crt", "tls.key"), issue(work, ca, "server-renewed", names)))
        secret_volume(server_mount, {**renewed, "ca.crt": ca[0].read_bytes()}, 2)
        metrics = f"http://{addrs['ingest']['metrics']}/metrics"

        def reloaded() -> bool:
            text = urllib.request.urlopen(metrics, timeout=2).read().decode()
            return any(line.startswith("server_tls_reloads_total") and 'result="ok"' in line
                       and float(line.rsplit(" ", 1)[1]) >= 1 for line in text.splitlines())
        interval = server_env.get("TESTBED_TLS_RELOAD_INTERVAL", "5s")
        if not wait_for(reloaded, 20):
            die(f"ingest did not count a TLS reload within 20 s of the renewal (--tls-reload-interval {interval})")
        after = peer_certificate(addrs["ingest"]["grpc"], ca[0], (sim_mount / "tls.crt", sim_mount / "tls.key"))
        if after == before or after != ssl.PEM_cert_to_DER_cert(renewed["tls.crt"].decode()):
            die("after the reload, ingest still presents the old certificate")
        print("  ingest: renewed Secret volume reloaded (server_tls_reloads_total{result=\"ok\"}), "
              "new connections get the new certificate")
        for sub, proc in zip(SERVERS, procs[1:]):
            proc.send_signal(signal.SIGTERM)
            if proc.wait(timeout=15) != 0:
                die(f"testbed {sub}: SIGTERM: exit {proc.returncode}")
    finally:
        stop_all(procs, work)


if __name__ == "__main__":
    main()
