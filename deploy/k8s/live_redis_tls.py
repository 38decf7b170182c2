#!/usr/bin/env python3
"""Runs the redis-tls overlay's Redis and its clients with the real
binaries, on loopback.

check_redis_tls.py checks the rendered manifests' names and numbers; this
checks that what the overlay sets works:

- a real redis-server runs the rendered redis.conf (TLS only, client
  certificates required), only its port, data folder and bind address
  moved to loopback, its certificate files laid out as the kubelet lays out
  a Secret volume;
- the StatefulSet's rendered startup and readiness probe commands (paths
  and port moved likewise) answer PONG; redis-cli in plaintext, and over
  TLS without a client certificate, do not;
- ingest, worker and query run with the rendered testbed-env and REDIS_URL
  (rediss://, its host:port moved to localhost and the loopback port, the
  certificate naming localhost), and answer the kubelet's gRPC probes (the
  rendered service names) SERVING;
- a simulator run against them with --verify passes (every accepted event
  processed exactly once, through that Redis);
- SIGTERM: each exits 0.

Makes its own CA and certificates with openssl (as the example's
cert-manager Certificates: Redis' for server and client auth, the clients'
for client auth). Exits 1 naming what failed.
Usage: live_redis_tls.py --bin TESTBED --rendered RENDERED/redis-tls.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_manifests import free_port, stop_all, wait_for  # noqa: E402
from check_redis_tls import parse_conf  # noqa: E402
from live_tls import clean_env, configmap, container, health, issue, make_ca, relocate, secret_volume  # noqa: E402

SERVERS = ("ingest", "worker", "query")


def die(msg: str) -> None:
    sys.exit(f"live_redis_tls: {msg}")


def moved(command: list[str], mount: str, local: Path, port: int) -> list[str]:
    """A probe command with the mount's paths and the port moved."""
    out = [str(local / a[len(mount) + 1:]) if a.startswith(mount + "/") else a for a in map(str, command)]
    if "-p" in out[:-1]:
        out[out.index("-p") + 1] = str(port)
    return out


def pong(command: list[str]) -> bool:
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0 and run.stdout.strip() == "PONG"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rendered", required=True, type=Path)
    args = ap.parse_args()
    for tool in ("redis-server", "redis-cli", "openssl"):
        if not shutil.which(tool):
            die(f"{tool} not found (scripts/setup-tools installs it)")
    objs = [o for o in yaml.safe_load_all(args.rendered.read_text()) if o]
    conf_text = configmap(objs, "redis-config")["redis.conf"]
    conf = parse_conf(conf_text)
    if conf.get("port") != "0" or "tls-port" not in conf:
        die(f"{args.rendered}: redis.conf is not TLS only (port {conf.get('port')}, tls-port {conf.get('tls-port')})")
    server_env = configmap(objs, "testbed-env")
    url = configmap(objs, "testbed-redis")["url"]
    if not url.startswith("rediss://"):
        die(f"{args.rendered}: REDIS_URL {url} is not rediss://")
    rspec, redis = container(objs, "StatefulSet", "redis")
    redis_mount = next(m["mountPath"] for m in redis["volumeMounts"]
                       if any(v["name"] == m["name"] and "secret" in v for v in rspec["volumes"]))

    work = Path(tempfile.mkdtemp(prefix="live-redis-tls-"))
    procs: list[subprocess.Popen] = []
    base_env = clean_env()
    try:
        ca = make_ca(work)
        server = dict(zip(("tls.crt", "tls.key"), issue(
            work, ca, "redis", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth")))
        client = dict(zip(("tls.crt", "tls.key"), issue(work, ca, "testbed", "extendedKeyUsage=clientAuth")))
        redis_local, client_local = work / "redis-tls", work / "client-tls"
        secret_volume(redis_local, {**server, "ca.crt": ca[0].read_bytes()}, 1)
        secret_volume(client_local, {**client, "ca.crt": ca[0].read_bytes()}, 1)

        # The rendered redis.conf, only where it listens and writes moved.
        port = free_port()
        (work / "data").mkdir()
        text = conf_text.replace(redis_mount + "/", str(redis_local) + "/")
        text = re.sub(r"(?m)^tls-port .*$", f"tls-port {port}", text)
        text = re.sub(r"(?m)^dir .*$", f"dir {work / 'data'}", text)
        text = re.sub(r"(?m)^bind .*$", "bind 127.0.0.1", text)
        (work / "redis.conf").write_text(text)
        log = open(work / "redis.log", "w")
        procs.append(subprocess.Popen(["redis-server", str(work / "redis.conf")], stdout=log, stderr=log))

        probes = {kind: moved(redis[kind]["exec"]["command"], redis_mount, redis_local, port)
                  for kind in ("startupProbe", "readinessProbe") if "exec" in redis.get(kind, {})}
        if not probes:
            die("the Redis StatefulSet has no exec probe to run")
        for kind, command in probes.items():
            if not wait_for(lambda: procs[0].poll() is not None or pong(command), 20) or procs[0].poll() is not None:
                die(f"Redis {kind} {command} never answered PONG:\n" + (work / "redis.log").read_text()[-2000:])
        if pong(["redis-cli", "-p", str(port), "ping"]):
            die("Redis answered a plaintext PING: it must serve TLS only")
        if pong(["redis-cli", "--tls", "--cacert", str(redis_local / "ca.crt"), "-p", str(port), "ping"]):
            die("Redis answered a TLS client without a certificate: tls-auth-clients is off")
        print(f"  redis-server {conf_text.count(chr(10))}-line rendered redis.conf on 127.0.0.1:{port}: "
              f"probes ({', '.join(probes)}) PONG; plaintext and certificate-less clients refused")

        addrs: dict[str, dict] = {}
        servers: list[subprocess.Popen] = []
        for sub in SERVERS:
            spec, c = container(objs, "Deployment", sub)
            mounts = {m["mountPath"]: client_local for m in c.get("volumeMounts", [])}
            env = {**base_env, **relocate(server_env, mounts)}
            env.update({k: "127.0.0.1:0" for k in ("TESTBED_GRPC_ADDR", "TESTBED_METRICS_ADDR", "TESTBED_PROBE_ADDR")
                        if k in env})
            env.update(REDIS_URL=re.sub(r"^rediss://([^@/]*@)?[^/]+", lambda m: f"rediss://{m.group(1) or ''}"
                                        f"localhost:{port}", url),
                       TESTBED_KEY_PREFIX=f"live-redis-tls-{os.getpid()}", TESTBED_SHUTDOWN_GRACE="2s")
            addr_file = work / f"{sub}.json"
            slog = open(work / f"{sub}.log", "w")
            proc = subprocess.Popen([args.bin, sub, "--addr-file", str(addr_file)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=slog)
            procs.append(proc)
            servers.append(proc)
            if not wait_for(lambda: proc.poll() is not None or addr_file.exists() and addr_file.stat().st_size > 0, 30) \
                    or proc.poll() is not None:
                die(f"testbed {sub} did not start:\n" + (work / f"{sub}.log").read_text()[-3000:])
            addrs[sub] = json.loads(addr_file.read_text())
            probe_addr = addrs[sub].get("probe", addrs[sub]["grpc"])
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                service = c[kind]["grpc"].get("service", "")
                if not wait_for(lambda: health(probe_addr, service) == "SERVING", 20):
                    die(f"testbed {sub}: {kind} service {service!r}: {health(probe_addr, service)} "
                        f"(REDIS_URL {env['REDIS_URL']}):\n" + (work / f"{sub}.log").read_text()[-3000:])
            how = "with a client certificate" if "TESTBED_REDIS_TLS_CERT" in env else "without a client certificate"
            print(f"  {sub}: rediss:// {how}, probes SERVING on {probe_addr}")

        report = work / "report.json"
        run = subprocess.run([args.bin, "sim", "--target", f"http://{addrs['ingest']['grpc']}",
                              "--query-target", f"http://{addrs['query']['grpc']}", "--verify",
                              "--rate", "200", "--duration", "2s", "--devices", "10", "--verify-timeout", "30s",
                              "--output", "json", "--output-file", str(report)],
                             env=base_env, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            die(f"the simulator exited {run.returncode}:\n{run.stderr[-3000:]}")
        result = json.loads(report.read_text())
        verification = result.get("verification") or {}
        if verification.get("passed") is not True or result["total"]["accepted"] != result["total"]["sent"]:
            die(f"the simulator's run did not verify: {result['total']} {verification}")
        print(f"  simulator: {result['total']['accepted']} of {result['total']['sent']} events accepted, "
              f"--verify passed ({sum(verification.get('processed', []))} processed through Redis over TLS)")
        for sub, proc in zip(SERVERS, servers):
            proc.send_signal(signal.SIGTERM)
            if proc.wait(timeout=15) != 0:
                die(f"testbed {sub}: SIGTERM: exit {proc.returncode}")
        print(f"  {', '.join(SERVERS)}: SIGTERM -> exit 0")
    finally:
        stop_all(procs, work)


if __name__ == "__main__":
    main()
