#!/usr/bin/env python3
"""Checks the rendered Kubernetes manifests against the real `testbed` binary.

Called by scripts/check-deploy with the rendered overlays (one YAML file per
overlay, named OVERLAY.yaml) and the binary. Fails (exit 1) listing every
problem found:

- every flag and environment variable a testbed container is given exists
  in `testbed <subcommand> --help` (environment variables that are no flag,
  such as POD_NAME, must appear in the binary itself);
- the container ports are the ports TESTBED_GRPC_ADDR / TESTBED_METRICS_ADDR
  (or their defaults) name, and the probes use them;
- each server has native gRPC startup, readiness and liveness probes;
  liveness and startup ask for "", readiness for exactly the service the
  binary registers for that subcommand (asked of the running binary, see
  --live);
- the shutdown budget (base/shutdown-budget.yaml) adds up:
  terminationGracePeriodSeconds = preStop sleep + shutdown grace +
  telemetry flush timeout + margin; and every rendered server pod's
  terminationGracePeriodSeconds covers its preStop sleep,
  --shutdown-grace and --telemetry-flush-timeout plus that margin;
- images: never "latest" or untagged; IfNotPresent only with a digest;
- the restricted Pod Security Standard's fields, resources on every
  container, the recommended labels, namespaces, Service and PDB selectors
  that match pods, HPA / ScaledObject targets, KEDA triggers for every
  partition, Redis Cluster partitions spread evenly over the masters, the
  OTLP endpoint pointing at the collector Service of the observability
  overlay, NetworkPolicies that allow DNS over UDP and TCP;
- TLS (check_tls.py): a server serving TLS answers its probes on a
  plaintext TESTBED_PROBE_ADDR port, which no Service exposes; TLS files
  come from volume mounts without subPath; simulator targets and TLS
  settings fit the servers they call; cert-manager.example.yaml makes the
  Secrets the overlays mount;
- Redis TLS (check_redis_tls.py): an in-cluster Redis with a tls-port
  serves TLS only, from mounted files, probed with redis-cli --tls; its
  clients dial rediss:// with the CA and a client certificate; the
  example's Certificates make both Secrets from one issuer.

Usage: check_manifests.py --bin TESTBED --rendered DIR [--live]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import check_redis_tls
import check_tls

SUBCOMMANDS = ("all", "ingest", "worker", "query", "sim")
SERVERS = ("ingest", "worker", "query")
TESTBED_IMAGE = re.compile(r"(^|/)testbed(:|@|$)")
# Environment variables the binary reads that are not flags (telemetry
# resource, OpenTelemetry SDK). Each must also appear in the binary.
RUNTIME_ENV = {"POD_NAME", "POD_NAMESPACE", "NODE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "RUST_LOG"}
RECOMMENDED_LABELS = ("app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
KNOWN_CRDS = {("keda.sh/v1alpha1", "ScaledObject")}
# Every number of the servers' shutdown, stated once (see the file).
SHUTDOWN_BUDGET = Path(__file__).resolve().parent / "base" / "shutdown-budget.yaml"
# The memory the testbed's own pods may ask for (sum of requests at minimum
# replicas, Redis included): what fits next to the system on a 1 GiB Pi.
MEMORY_REQUEST_BUDGET_MI = 640

errors: list[str] = []


def fail(where: str, msg: str) -> None:
    errors.append(f"{where}: {msg}")


# --- the binary ------------------------------------------------------------

# Where an option's entry starts in clap's --help: the flag indented by 2
# ("  -h, --help") or 6 spaces; wrapped descriptions are indented by 10, and
# one starting with a flag's name ("--shutdown-grace") starts no entry.
HELP_ENTRY = re.compile(r"\n(?= {2,6}(?:-\w, )?--[a-z])")


def help_entries(binary: str, sub: str) -> tuple[str, list[tuple[str, str]]]:
    """`testbed SUB --help`, and each option's entry in it: (flag, text)."""
    out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, check=True).stdout
    entries = []
    for block in re.split(HELP_ENTRY, out):
        m = re.match(r"\s+(?:-\w, )?(--[a-z0-9-]+)", block)
        if m:
            entries.append((m.group(1), block))
    return out, entries


def help_of(binary: str, sub: str) -> tuple[set[str], set[str], dict[str, str]]:
    """Flags, env vars and flag defaults of `testbed SUB --help`."""
    out, entries = help_entries(binary, sub)
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", out, re.M))
    envs = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", out))
    defaults = {}
    for flag, block in entries:
        d = re.search(r"\[default: ([^\]]+)\]", block)
        if d:
            defaults[flag] = d.group(1)
    return flags, envs, defaults


def env_of_flag(binary: str, sub: str) -> dict[str, str]:
    """env var -> flag, from `--help`."""
    mapping = {}
    for flag, block in help_entries(binary, sub)[1]:
        e = re.search(r"\[env: ([A-Z0-9_]+)[=\]]", block)
        if e:
            mapping[e.group(1)] = flag
    return mapping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registered_services(binary: str) -> dict[str, set[str]]:
    """Starts each server subcommand against a Redis of its own on loopback
    and asks it, over gRPC reflection, which services it serves; checks each
    answers SERVING on grpc.health.v1. Returns {subcommand: {service}}."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    work = Path(tempfile.mkdtemp(prefix="check-manifests-"))
    procs: list[subprocess.Popen] = []
    found: dict[str, set[str]] = {}
    try:
        port = start_redis(work, procs)
        for sub in SERVERS:
            addr_file = work / f"{sub}.json"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTBED_", "OTEL_", "REDIS_"))}
            env["OTEL_SDK_DISABLED"] = "true"
            proc = subprocess.Popen(
                [binary, sub, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
                 "--addr-file", str(addr_file), "--redis-url", f"redis://127.0.0.1:{port}/0",
                 "--key-prefix", f"check-manifests-{os.getpid()}", "--shutdown-grace", "2s"],
                env=env, stdout=subprocess.DEVNULL, stderr=open(work / f"{sub}.log", "w"))
            procs.append(proc)
            if not wait_for(lambda: proc.poll() is not None or addr_file.exists() and addr_file.stat().st_size > 0, 30):
                sys.exit(f"check_manifests: testbed {sub} did not write --addr-file in 30 s")
            if proc.poll() is not None:
                sys.exit(f"check_manifests: testbed {sub} exited {proc.returncode}:\n"
                         + (work / f"{sub}.log").read_text())
            grpc_addr = json.loads(addr_file.read_text())["grpc"]
            with grpc.insecure_channel(grpc_addr) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                # Poll health (never sleep): "" goes SERVING once it serves,
                # each service once its dependency probe has seen Redis.
                def serving(name: str) -> bool:
                    try:
                        return health.Check(health_pb2.HealthCheckRequest(service=name), timeout=1).status \
                            == health_pb2.HealthCheckResponse.SERVING
                    except grpc.RpcError:
                        return False
                if not wait_for(lambda: serving(""), 20):
                    sys.exit(f"check_manifests: testbed {sub}: overall health never SERVING")
                services = {s for s in ProtoReflectionDescriptorDatabase(channel).get_services()
                            if not s.startswith(("grpc.health.", "grpc.reflection."))}
                for name in services:
                    if not wait_for(lambda: serving(name), 20):
                        fail(f"testbed {sub}", f"{name} is registered but never SERVING with Redis up")
                found[sub] = services
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                fail(f"testbed {sub}", f"SIGTERM: exit {code}, expected 0 within the grace")
    finally:
        stop_all(procs, work)
    return found


def start_redis(work: Path, procs: list[subprocess.Popen]) -> int:
    """A redis-server of the caller's own on a free loopback port, kept in
    procs (stop_all ends it); returns the port."""
    redis_server = shutil.which("redis-server")
    if not redis_server:
        sys.exit("check_manifests: redis-server not found (scripts/setup-tools installs it)")
    for _ in range(5):
        port = free_port()
        redis = subprocess.Popen(
            [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(redis)
        if wait_for(lambda: redis.poll() is not None or redis_ping(port), 10) and redis.poll() is None:
            return port
    sys.exit("check_manifests: could not start redis-server on a free port")


def stop_all(procs: list[subprocess.Popen], work: Path) -> None:
    """Ends the processes started (SIGTERM, then SIGKILL after 10 s) and
    removes their folder."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(work, ignore_errors=True)


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    return cond()


# --- manifests ---------------------------------------------------------------

def pod_spec(obj: dict) -> dict | None:
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return obj["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def matches(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        val = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and val not in expr["values"]:
            return False
        if op == "NotIn" and val in expr["values"]:
            return False
        if op == "Exists" and val is None:
            return False
        if op == "DoesNotExist" and val is not None:
            return False
    return True


def shutdown_margin(path: Path) -> float:
    """Checks that the shutdown budget adds up; returns its margin (s)."""
    spec = yaml.safe_load(path.read_text())["spec"]
    pre = spec["preStopSleepSeconds"]
    grace = duration_s(spec["shutdownGrace"])
    flush = duration_s(spec["telemetryFlushTimeout"])
    margin = spec["marginSeconds"]
    tgps = spec["terminationGracePeriodSeconds"]
    if tgps != pre + grace + flush + margin:
        fail(os.path.relpath(path), f"terminationGracePeriodSeconds {tgps} != preStop {pre} s + shutdownGrace {grace:g} s "
                        f"+ telemetryFlushTimeout {flush:g} s + margin {margin} s = {pre + grace + flush + margin:g}")
    if margin <= 0:
        fail(os.path.relpath(path), f"marginSeconds {margin}: the process needs a moment to exit after the flush")
    return margin


def duration_s(text: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def mebibytes(q: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi)?", str(q))
    if not m:
        return float("nan")
    return float(m.group(1)) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, None: 1 / 2**20}[m.group(2)]


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def check_overlay(name: str, objs: list[dict], binary: str, helps: dict, registered: dict | None,
                  collector: tuple[str, str, int] | None, margin: float) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind.get("ConfigMap", [])}
    services = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in by_kind.get("Service", [])}
    workloads = [o for o in objs if pod_spec(o) is not None]
    namespaces = {o["metadata"]["name"]: o for o in by_kind.get("Namespace", [])}

    for o in objs:
        where = f"{name}: {o['kind']}/{o['metadata']['name']}"
        labels = o["metadata"].get("labels", {})
        for label in RECOMMENDED_LABELS:
            if label not in labels:
                fail(where, f"missing label {label}")
        if o["kind"] not in CLUSTER_SCOPED and not o["metadata"].get("namespace"):
            fail(where, "no namespace")
        if "/" in o["apiVersion"] and not o["apiVersion"].split("/")[0].endswith(".k8s.io") \
                and o["apiVersion"].split("/")[0] not in ("apps", "batch", "policy", "autoscaling") \
                and (o["apiVersion"], o["kind"]) not in KNOWN_CRDS:
            fail(where, f"unknown custom resource {o['apiVersion']} {o['kind']}")

    for ns_name, ns in namespaces.items():
        labels = ns["metadata"].get("labels", {})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            fail(f"{name}: Namespace/{ns_name}", "does not enforce the restricted Pod Security Standard")

    memory_requests = 0.0
    testbed_containers = []  # (workload, pod spec, container, subcommand, its environment)
    autoscaled = {o["spec"]["scaleTargetRef"]["name"] for o in by_kind.get("HorizontalPodAutoscaler", [])}
    autoscaled |= {o["spec"]["scaleTargetRef"]["name"] for o in by_kind.get("ScaledObject", [])}
    for w in workloads:
        where = f"{name}: {w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        psc = spec.get("securityContext", {})
        annotations = w["metadata"].get("annotations", {})
        skips = " ".join(v for k, v in annotations.items() if k.startswith("checkov.io/skip"))
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            fail(where, "pod must set runAsNonRoot: true and a numeric runAsUser")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(where, "pod seccompProfile must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False and "CKV_K8S_38" not in skips:
            fail(where, "automountServiceAccountToken must be false")
        if w["kind"] in ("Deployment", "StatefulSet") and w["metadata"]["name"] in autoscaled \
                and "replicas" in w["spec"]:
            fail(where, "autoscaled, so it must not set replicas (each apply would override the autoscaler)")
        replicas = w["spec"].get("replicas", 1) if w["kind"] in ("Deployment", "StatefulSet") else 1
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            if hpa["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]:
                replicas = hpa["spec"].get("minReplicas", 1)
        for so in by_kind.get("ScaledObject", []):
            if so["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]:
                replicas = so["spec"].get("minReplicaCount", 0)
        for c in spec["containers"]:
            cwhere = f"{where} container {c['name']}"
            csc = c.get("securityContext", {})
            if csc.get("allowPrivilegeEscalation") is not False or csc.get("readOnlyRootFilesystem") is not True \
                    or csc.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(cwhere, "needs allowPrivilegeEscalation false, readOnlyRootFilesystem true, drop [ALL]")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        fail(cwhere, f"no {part}.{r}")
            if w["kind"] in ("Deployment", "StatefulSet") and o_namespace(w) == "testbed":
                memory_requests += mebibytes(res.get("requests", {}).get("memory", "0")) * replicas
            image = c["image"]
            policy = c.get("imagePullPolicy")
            if image.endswith(":latest") or (":" not in image.rsplit("/", 1)[-1] and "@" not in image):
                fail(cwhere, f"image {image} is untagged or latest")
            if policy == "IfNotPresent" and "@sha256:" not in image:
                fail(cwhere, f"IfNotPresent with a tag ({image}) can run a stale image: pin a digest or use Always")
            if policy == "Never" and name != "kind":
                fail(cwhere, "imagePullPolicy Never outside the kind overlay")
            if TESTBED_IMAGE.search(image):
                found = check_testbed_container(cwhere, w, spec, c, configmaps, binary, helps, registered,
                                                services, collector, margin)
                if found:
                    testbed_containers.append((w, spec, c, *found))
    check_overlay_tls(name, testbed_containers, services)
    for problem in check_redis_tls.problems(name, objs, configmaps, testbed_containers):
        fail(*problem)
    if memory_requests:
        print(f"  {name}: testbed namespace memory requests at minimum replicas: {memory_requests:.0f} MiB")
    if memory_requests > MEMORY_REQUEST_BUDGET_MI:
        fail(name, f"testbed namespace asks for {memory_requests:.0f} MiB of memory at minimum replicas, "
                   f"over the {MEMORY_REQUEST_BUDGET_MI} MiB budget of a 1 GiB node")

    # Services and PDBs select pods that exist; target ports are declared.
    for (ns, sname), svc in services.items():
        sel = {"matchLabels": svc["spec"].get("selector", {})}
        pods = [w for w in workloads if o_namespace(w) == ns and matches(sel, pod_labels(w))]
        if not pods:
            fail(f"{name}: Service/{sname}", "selects no pod template")
        for port in svc["spec"]["ports"]:
            tp = port.get("targetPort", port["port"])
            declared = {p.get("name") for w in pods for c in pod_spec(w)["containers"] for p in c.get("ports", [])} \
                | {p["containerPort"] for w in pods for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
            if pods and tp not in declared:
                fail(f"{name}: Service/{sname}", f"targetPort {tp} is no container port of its pods")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(pdb["spec"]["selector"], pod_labels(w)) for w in workloads if w["kind"] == "Deployment"):
            fail(f"{name}: PodDisruptionBudget/{pdb['metadata']['name']}", "selects no Deployment's pods")
    deployments = {w["metadata"]["name"] for w in workloads if w["kind"] == "Deployment"}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        where = f"{name}: HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            fail(where, "targets no Deployment")
        beh = hpa["spec"].get("behavior", {})
        if "stabilizationWindowSeconds" not in beh.get("scaleDown", {}) \
                or "stabilizationWindowSeconds" not in beh.get("scaleUp", {}):
            fail(where, "needs scaleUp and scaleDown stabilization windows")
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])] \
        + [s["spec"]["scaleTargetRef"]["name"] for s in by_kind.get("ScaledObject", [])]
    for t in set(targets):
        if targets.count(t) > 1:
            fail(name, f"{t} has more than one autoscaler (an HPA and a ScaledObject fight)")

    env = configmaps_with_prefix(configmaps, "testbed-env")
    partitions = int(env.get("TESTBED_PARTITIONS", helps["ingest"][2]["--partitions"]))
    prefix = env.get("TESTBED_KEY_PREFIX", helps["ingest"][2]["--key-prefix"])
    in_cluster_redis = any(s["metadata"]["name"] == "redis" for s in by_kind.get("StatefulSet", []))
    for so in by_kind.get("ScaledObject", []):
        where = f"{name}: ScaledObject/{so['metadata']['name']}"
        # components/keda's triggers name the base's Redis (a host:port,
        # no TLS, no credentials): not an external or clustered one.
        if not in_cluster_redis or env.get("REDIS_CLUSTER") == "true":
            fail(where, "components/keda works only with the base's single in-cluster Redis (its triggers poll "
                        "redis.testbed.svc.cluster.local:6379 in plaintext); it does not combine with "
                        "external-redis or redis-cluster (deploy/README.md, \"Autoscaling\")")
            continue
        streams = sorted(t["metadata"].get("stream", "") for t in so["spec"]["triggers"] if t["type"] == "redis-streams")
        want = sorted(f"{{{prefix}:p{p}}}:stream" for p in range(partitions))
        if streams != want:
            fail(where, f"triggers cover streams {streams}, the {partitions} partitions are {want}")
        for t in so["spec"]["triggers"]:
            if t["metadata"].get("consumerGroup") != "workers":
                fail(where, "consumerGroup must be \"workers\" (crates/stream keys.rs)")
            host = t["metadata"].get("address", "").split(":")[0]
            if not service_for_host(host, services):
                fail(where, f"address {host} is no Service of this overlay")
    if env.get("REDIS_CLUSTER") == "true":
        masters = [0, 0, 0]
        for p in range(partitions):
            slot = crc16(f"{prefix}:p{p}".encode()) % 16384
            masters[0 if slot <= 5460 else 1 if slot <= 10922 else 2] += 1
        if max(masters) - min(masters) > 1:
            fail(name, f"--partitions {partitions} with --key-prefix {prefix} puts {masters} partitions "
                       "on the three masters: pick a prefix/count that spreads them")

    netpols = by_kind.get("NetworkPolicy", [])
    if workloads and netpols:
        names = {n["metadata"]["name"] for n in netpols}
        if "allow-all" not in names:
            if "default-deny" not in names:
                fail(name, "no default-deny NetworkPolicy")
            dns = [p for n in netpols for r in n["spec"].get("egress", []) for p in r.get("ports", [])
                   if p.get("port") == 53]
            if {p.get("protocol") for p in dns} != {"UDP", "TCP"}:
                fail(name, "DNS egress must allow port 53 over both UDP and TCP")


def o_namespace(o: dict) -> str | None:
    return o["metadata"].get("namespace")


def configmaps_with_prefix(configmaps: dict, prefix: str) -> dict:
    for cname, data in configmaps.items():
        if cname == prefix or re.fullmatch(re.escape(prefix) + r"-[a-z0-9]{10}", cname):
            return data
    return {}


def service_for_host(host: str, services: dict) -> bool:
    parts = host.split(".")
    if len(parts) >= 2:
        return (parts[1], parts[0]) in services or (len(parts) >= 3 and (parts[2], parts[1]) in services)
    return any(k[1] == parts[0] for k in services)


def check_testbed_container(where, w, spec, c, configmaps, binary, helps, registered, services, collector,
                            margin):
    args = c.get("args", [])
    if not args or args[0] not in SUBCOMMANDS:
        fail(where, f"args must start with a subcommand {SUBCOMMANDS}, got {args[:1]}")
        return
    sub = args[0]
    flags, envs, defaults = helps[sub][:3]
    for a in args[1:]:
        if a.startswith("--") and a.split("=", 1)[0] not in flags:
            fail(where, f"flag {a} is not in `testbed {sub} --help`")
    values: dict[str, str] = {}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref:
            data = configmaps_with_prefix(configmaps, ref["name"])
            if not data and not ref.get("optional"):
                fail(where, f"envFrom ConfigMap {ref['name']} is not in the overlay")
            values.update(data)
    for e in c.get("env", []):
        values[e["name"]] = e.get("value", "<from " + next(iter(e.get("valueFrom", {"?": 0}))) + ">")
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            data = configmaps_with_prefix(configmaps, ref["name"])
            if ref["key"] not in data:
                fail(where, f"env {e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
            else:
                values[e["name"]] = data[ref["key"]]
    env_flag = helps[sub][3]
    # Flags given as args override the environment, as clap does.
    env_of = {flag: env for env, flag in env_flag.items()}
    for i, a in enumerate(args[1:], start=1):
        flag, eq, value = a.partition("=")
        if flag in env_of:
            if eq:
                values[env_of[flag]] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                values[env_of[flag]] = args[i + 1]
    blob = helps["binary"]
    for var in values:
        if var in envs:
            continue
        if var in RUNTIME_ENV and var.encode() in blob:
            continue
        fail(where, f"env {var} is neither in `testbed {sub} --help` nor read by the binary")
    for problem in check_tls.file_problems(where, values, c, spec):
        fail(*problem)
    if sub == "sim":
        return sub, values
    # Ports: what the process binds is what the pod declares and probes.
    grpc_port = int((values.get("TESTBED_GRPC_ADDR") or defaults["--grpc-addr"]).rsplit(":", 1)[1])
    metrics_port = int((values.get("TESTBED_METRICS_ADDR") or defaults["--metrics-addr"]).rsplit(":", 1)[1])
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("grpc") != grpc_port:
        fail(where, f"containerPort grpc is {ports.get('grpc')}, the process listens on {grpc_port}")
    if ports.get("metrics") != metrics_port:
        fail(where, f"containerPort metrics is {ports.get('metrics')}, the process serves /metrics on {metrics_port}")
    # TLS: the probes on the plaintext probe port (check_tls.py).
    tls = "TESTBED_TLS_CERT" in values
    probe_port = check_tls.addr_port(values.get("TESTBED_PROBE_ADDR"))
    for problem in check_tls.server_problems(where, values, c, grpc_port):
        fail(*problem)
    # Probes: native gRPC, on the gRPC (or plaintext probe) port, the right
    # service names.
    want_ready = registered.get(sub) if registered is not None else None
    for kind, want in (("startupProbe", {""}), ("livenessProbe", {""}), ("readinessProbe", want_ready)):
        probe = c.get(kind)
        if not probe or "grpc" not in probe:
            fail(where, f"{kind} must be a native grpc probe")
            continue
        if not tls and probe["grpc"].get("port") not in (grpc_port, probe_port):
            fail(where, f"{kind} port {probe['grpc'].get('port')} is not the gRPC port {grpc_port}"
                        + (f" or the probe port {probe_port}" if probe_port else ""))
        service = probe["grpc"].get("service", "")
        if kind == "readinessProbe":
            if service in ("", None):
                fail(where, "readinessProbe must ask for the service's full name, not \"\"")
            elif want is not None and {service} != want:
                fail(where, f"readinessProbe service {service!r}, but `testbed {sub}` registers {sorted(want)}")
        elif want is not None and service not in want:
            fail(where, f"{kind} service {service!r} must be \"\" (the process as a whole)")
    # Shutdown: preStop sleep, then the drain (--shutdown-grace), then the
    # final flush (--telemetry-flush-timeout), then exit, all before the
    # kubelet's SIGKILL, with the budget's margin.
    grace = duration_s(values.get("TESTBED_SHUTDOWN_GRACE") or defaults["--shutdown-grace"])
    flush = duration_s(values.get("TESTBED_TELEMETRY_FLUSH_TIMEOUT") or defaults["--telemetry-flush-timeout"])
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if tgps < pre + grace + flush + margin:
        fail(where, f"terminationGracePeriodSeconds {tgps} < preStop {pre} s + --shutdown-grace {grace:g} s "
                    f"+ --telemetry-flush-timeout {flush:g} s + margin {margin:g} s "
                    f"({SHUTDOWN_BUDGET.name}): the kubelet would SIGKILL a process still draining or flushing")
    if not pre:
        fail(where, "no preStop sleep: SIGTERM would arrive while endpoints still send new calls")
    # The event store and the collector are Services that exist.
    url = values.get("REDIS_URL", "")
    for part in url.split(","):
        m = re.match(r"rediss?://(?:[^@/]*@)?([^:/]+)", part)
        if m and not service_for_host(m.group(1), services):
            fail(where, f"REDIS_URL host {m.group(1)} is no Service of this overlay")
    if values.get("REDIS_CLUSTER") == "true" and "--redis-cluster" not in env_flag.values():
        fail(where, "REDIS_CLUSTER is set but the binary has no --redis-cluster")
    endpoint = values.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and collector:
        m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", endpoint)
        if not m or (m.group(1), m.group(2), int(m.group(3))) != collector:
            fail(where, f"OTEL_EXPORTER_OTLP_ENDPOINT {endpoint} is not the observability overlay's collector "
                        f"{collector[0]}.{collector[1]}.svc.cluster.local:{collector[2]} by its full name")
    return sub, values


def check_overlay_tls(name: str, containers: list, services: dict) -> None:
    """The rules across containers (check_tls.py): simulator targets fit the
    servers behind them, no Service exposes a probe port, and the
    cert-manager example makes every Secret mounted for TLS."""
    def servers_of(host: str, namespace: str | None) -> list[tuple[dict, dict, dict, dict]]:
        parts = host.split(".")
        svc = services.get((parts[1] if len(parts) > 1 else namespace, parts[0]))
        if svc is None or not svc["spec"].get("selector"):
            return []
        return [(w, spec, c, values) for w, spec, c, sub, values in containers
                if sub != "sim" and o_namespace(w) == o_namespace(svc)
                and matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(w))]

    certificates = check_tls.cert_manager_certificates()
    server_names: dict[str, set[str]] = {}  # server Secret -> names the simulator checks
    client_secrets: set[str] = set()
    for w, spec, c, sub, values in containers:
        where = f"{name}: {w['kind']}/{w['metadata']['name']} container {c['name']}"
        if sub != "sim":
            secret = check_tls.secret_of(values.get("TESTBED_TLS_CERT"), c, spec)
            if secret:
                server_names.setdefault(secret, set())
            continue
        for problem in check_tls.sim_problems(where, values, lambda h, ns: [s[3] for s in servers_of(h, ns)],
                                              o_namespace(w)):
            fail(*problem)
        for env in check_tls.SIM_TARGETS:
            scheme, host = check_tls.target_host(values.get(env, ""))
            for _, sspec, sc, svalues in servers_of(host, o_namespace(w)):
                secret = check_tls.secret_of(svalues.get("TESTBED_TLS_CERT"), sc, sspec)
                if secret and scheme in ("https", "dns"):
                    server_names.setdefault(secret, set()).add(values.get("TESTBED_TLS_SERVER_NAME") or host)
        client = check_tls.secret_of(values.get("TESTBED_TLS_CLIENT_CERT"), c, spec)
        if client:
            client_secrets.add(client)
            for problem in check_tls.example_problems(where, client, "client auth", set(), certificates):
                fail(*problem)
    for secret, names in sorted(server_names.items()):
        for problem in check_tls.example_problems(name, secret, "server auth", names, certificates):
            fail(*problem)
    probe_ports = {}
    for w, spec, c, sub, values in containers:
        port = check_tls.addr_port(values.get("TESTBED_PROBE_ADDR"))
        if port:
            probe_ports[(o_namespace(w), frozenset(pod_labels(w).items()))] = port
    for problem in check_tls.probe_service_problems(name, services, probe_ports):
        fail(*problem)
    serving = sorted(w["metadata"]["name"] for w, _, _, sub, v in containers if sub != "sim" and "TESTBED_TLS_CERT" in v)
    if serving:
        clients = sorted(w["metadata"]["name"] for w, _, _, sub, v in containers if sub == "sim" and "TESTBED_TLS_CA" in v)
        print(f"  {name}: TLS served by {serving} (probes on their probe ports), "
              f"TLS clients {clients}; Secrets {sorted(server_names)} (server), {sorted(client_secrets)} (client) "
              f"made by {check_tls.CERT_MANAGER_EXAMPLE.name}")


def check_compose(path: Path, helps: dict) -> None:
    """Flags and environment variables of the compose file's testbed
    services exist in `testbed <sub> --help` (or are read by the binary)."""
    doc = yaml.safe_load(path.read_text())
    count = 0
    for sname, svc in doc["services"].items():
        if not TESTBED_IMAGE.search(str(svc.get("image", "")).replace("${TESTBED_IMAGE:-", "").rstrip("}")):
            continue
        count += 1
        where = f"{path}: service {sname}"
        cmd = svc.get("command", [])
        if not cmd or cmd[0] not in SUBCOMMANDS:
            fail(where, f"command must start with a subcommand, got {cmd[:1]}")
            continue
        flags, envs = helps[cmd[0]][:2]
        for a in cmd[1:]:
            if str(a).startswith("--") and str(a).split("=", 1)[0] not in flags:
                fail(where, f"flag {a} is not in `testbed {cmd[0]} --help`")
        env = svc.get("environment", {})
        for var in env:
            if var not in envs and not (var in RUNTIME_ENV and var.encode() in helps["binary"]):
                fail(where, f"env {var} is neither in `testbed {cmd[0]} --help` nor read by the binary")
        # Compose SIGKILLs stop_grace_period (default 10 s) after SIGTERM:
        # the drain and the final flush must fit in it.
        defaults = helps[cmd[0]][2]
        stop = duration_s(str(svc.get("stop_grace_period", "10s")))
        grace = duration_s(str(env.get("TESTBED_SHUTDOWN_GRACE") or defaults["--shutdown-grace"]))
        flush = duration_s(str(env.get("TESTBED_TELEMETRY_FLUSH_TIMEOUT") or defaults["--telemetry-flush-timeout"]))
        if cmd[0] in SERVERS and stop <= grace + flush:
            fail(where, f"stop_grace_period {stop:g} s <= --shutdown-grace {grace:g} s + "
                        f"--telemetry-flush-timeout {flush:g} s: compose would SIGKILL a process still "
                        "draining or flushing")
    print(f"  {path}: {count} testbed services, flags and env vars checked")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rendered", required=True, type=Path)
    ap.add_argument("--compose", type=Path, help="also check a compose file's testbed services")
    ap.add_argument("--live", action="store_true",
                    help="start the binary to learn the services each subcommand registers")
    args = ap.parse_args()

    helps = {sub: (*help_of(args.bin, sub), env_of_flag(args.bin, sub)) for sub in SUBCOMMANDS}
    helps["binary"] = Path(args.bin).read_bytes()
    registered = registered_services(args.bin) if args.live else None
    if registered is not None:
        for sub, names in sorted(registered.items()):
            print(f"  testbed {sub} registers {sorted(names)} (reflection; each SERVING with Redis up)")

    overlays = {p.stem: [o for o in yaml.safe_load_all(p.read_text()) if o] for p in sorted(args.rendered.glob("*.yaml"))}
    collector = None
    for o in overlays.get("observability", []):
        if o["kind"] == "Service" and o["metadata"]["name"] == "otel-collector":
            port = next(p["port"] for p in o["spec"]["ports"] if p["port"] == 4317)
            collector = ("otel-collector", o["metadata"]["namespace"], port)
    if collector is None:
        fail("observability", "no otel-collector Service with port 4317")
    before = len(errors)
    margin = shutdown_margin(SHUTDOWN_BUDGET)
    print(f"  {SHUTDOWN_BUDGET.name}: margin {margin} s, {'adds up' if len(errors) == before else 'FAILED'}")
    for name, objs in overlays.items():
        before = len(errors)
        check_overlay(name, objs, args.bin, helps, registered, collector, margin)
        print(f"  {name}: {len(objs)} objects, {'ok' if len(errors) == before else 'FAILED'}")
    if args.compose:
        check_compose(args.compose, helps)
    if errors:
        print("\n".join(f"  FAILED: {e}" for e in errors))
        sys.exit(1)


if __name__ == "__main__":
    main()
