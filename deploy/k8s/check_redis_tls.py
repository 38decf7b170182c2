"""Redis TLS rules for the rendered manifests (#21), called by
check_manifests.py for every overlay.

The in-cluster Redis (the StatefulSet "redis", its redis.conf from the
ConfigMap mounted as volume "config") and its clients must agree; each rule
catches a mistake a cluster would only show as pods that never get ready:

- a Redis with a tls-port serves TLS only (port 0): a plaintext port left
  open beside it is a way round the client certificates;
- its tls-cert-file, tls-key-file and tls-ca-cert-file lie under a volume
  mount without subPath, from the Secret's keys (check_tls.path_problems);
- its container port "redis" (what the Service targets) is the tls-port,
  and its probes reach it: a redis-cli exec probe passes --tls and the
  port, and with tls-auth-clients (Redis' default) --cert and --key; a
  tcpSocket probe asks the tls-port;
- a testbed server whose REDIS_URL names that Redis uses rediss:// and its
  port when Redis serves TLS (redis:// when it does not), sets
  TESTBED_REDIS_TLS_CA, and with tls-auth-clients TESTBED_REDIS_TLS_CERT
  and TESTBED_REDIS_TLS_KEY;
- a KEDA redis trigger polling that Redis in plaintext (components/keda
  with redis-tls) is reported;
- components/redis-tls/cert-manager.example.yaml makes Redis' Secret (server
  auth, client auth for the probes, every name REDIS_URL dials) and the
  clients' Secret (client auth) from one issuer, so each side's ca.crt
  verifies the other.

Functions return problems as (where, message) pairs.
"""

from __future__ import annotations

import re
from pathlib import Path

import check_tls

Problems = list[tuple[str, str]]
REDIS_TLS_FILES = ("tls-cert-file", "tls-key-file", "tls-ca-cert-file")
CERT_MANAGER_EXAMPLE = Path(__file__).resolve().parent / "components" / "redis-tls" / "cert-manager.example.yaml"


def parse_conf(text: str) -> dict[str, str]:
    """redis.conf directives (the last of a repeated one wins, as in Redis)."""
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key.lower()] = value.strip().strip('"')
    return conf


def auth_clients(conf: dict) -> bool:
    return conf.get("tls-auth-clients", "yes") not in ("no", "optional")


def in_cluster_redis(name: str, objs: list[dict], configmaps: dict):
    """(where, pod spec, redis container, conf, service name) of the
    in-cluster Redis, or None when the overlay has none."""
    sts = next((o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis"), None)
    if sts is None:
        return None
    spec = sts["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "redis")
    volume = next((v for v in spec.get("volumes", []) if v["name"] == "config" and "configMap" in v), None)
    if volume is None:
        return None
    data = configmaps.get(volume["configMap"]["name"], {})
    return (f"{name}: StatefulSet/redis", spec, container, parse_conf(data.get("redis.conf", "")),
            sts["spec"].get("serviceName", "redis"))


def redis_problems(where: str, spec: dict, container: dict, conf: dict) -> Problems:
    """The Redis side: TLS only, its files, its port and its probes."""
    if "tls-port" not in conf:
        return []
    tls_port = int(conf["tls-port"])
    out: Problems = []
    if conf.get("port", "6379") != "0":
        out.append((where, f"redis.conf serves plaintext on port {conf.get('port', '6379')} beside tls-port "
                           f"{tls_port}: set port 0, or clients get round the certificates"))
    for key in REDIS_TLS_FILES:
        if key not in conf:
            out.append((where, f"redis.conf has a tls-port but no {key}"))
        else:
            out += check_tls.path_problems(where, f"redis.conf {key}", conf[key], container, spec)
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports.get("redis") != tls_port:
        out.append((where, f"containerPort redis is {ports.get('redis')}, Redis serves TLS on {tls_port}"))
    for kind in check_tls.GRPC_PROBES:
        probe = container.get(kind) or {}
        command = [str(a) for a in probe.get("exec", {}).get("command", [])]
        if command[:1] == ["redis-cli"]:
            port = command[command.index("-p") + 1] if "-p" in command[:-1] else "6379"
            missing = [f for f in ("--tls", "--cacert") if f not in command]
            if auth_clients(conf):
                missing += [f for f in ("--cert", "--key") if f not in command]
            if missing:
                out.append((where, f"{kind} runs redis-cli without {' '.join(missing)}: Redis serves TLS only"
                                   + (" and asks for a client certificate" if auth_clients(conf) else "")
                                   + ", so the probe fails"))
            if port != str(tls_port):
                out.append((where, f"{kind} asks port {port}, Redis serves TLS on {tls_port}"))
        socket_port = probe.get("tcpSocket", {}).get("port")
        if socket_port is not None and socket_port not in (tls_port, "redis"):
            out.append((where, f"{kind} tcpSocket port {socket_port} is not Redis' tls-port {tls_port}"))
    return out


def client_problems(where: str, values: dict, service: str, conf: dict) -> Problems:
    """A testbed server's REDIS_URL against the in-cluster Redis it names."""
    out: Problems = []
    for part in values.get("REDIS_URL", "").split(","):
        m = re.match(r"(rediss?)://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", part.strip())
        if not m or m.group(2).split(".")[0] != service:
            continue
        scheme, port = m.group(1), int(m.group(3) or 6379)
        if "tls-port" not in conf:
            if scheme == "rediss":
                out.append((where, f"REDIS_URL {part} is rediss:// but the in-cluster Redis serves no TLS"))
            continue
        if scheme != "rediss":
            out.append((where, f"REDIS_URL {part} is plaintext, the in-cluster Redis serves TLS only: use rediss://"))
        if port != int(conf["tls-port"]):
            out.append((where, f"REDIS_URL {part} dials port {port}, Redis serves TLS on {conf['tls-port']}"))
        if "TESTBED_REDIS_TLS_CA" not in values:
            out.append((where, "TESTBED_REDIS_TLS_CA is not set: Redis' certificate (a private CA's) would be "
                               "checked against the system roots and refused"))
        if auth_clients(conf):
            for env in ("TESTBED_REDIS_TLS_CERT", "TESTBED_REDIS_TLS_KEY"):
                if env not in values:
                    out.append((where, f"{env} is not set: Redis asks for a client certificate "
                                       "(tls-auth-clients) and refuses the connection without one"))
    return out


def example_problems(name: str, server_secret: str | None, client_secrets: set[str], hosts: set[str],
                     certificates: dict) -> Problems:
    """The cert-manager example makes the Secrets the overlay mounts."""
    where = f"{name}: {CERT_MANAGER_EXAMPLE.name}"
    out: Problems = []
    server = certificates.get(server_secret) if server_secret else None
    if server_secret and server is None:
        out.append((where, f"no Certificate makes Redis' Secret {server_secret}"))
    if server is not None:
        for usage in ("server auth", "client auth"):
            if usage not in server.get("usages", []):
                out.append((where, f"Certificate for {server_secret} lacks usage {usage!r}"))
        missing = sorted(hosts - set(server.get("dnsNames", [])))
        if missing:
            out.append((where, f"Certificate for {server_secret} does not name {missing}, which REDIS_URL dials"))
    for secret in sorted(client_secrets):
        cert = certificates.get(secret)
        if cert is None:
            out.append((where, f"no Certificate makes the Redis client Secret {secret}"))
            continue
        if "client auth" not in cert.get("usages", []):
            out.append((where, f"Certificate for {secret} lacks usage 'client auth'"))
        if server is not None and cert.get("issuerRef") != server.get("issuerRef"):
            out.append((where, f"Certificates for {secret} and {server_secret} have different issuers: "
                               "neither side's ca.crt would verify the other"))
    return out


def problems(name: str, objs: list[dict], configmaps: dict, containers: list,
             certificates: dict | None = None) -> Problems:
    """Every rule for one rendered overlay. containers: (workload, pod spec,
    container, subcommand, environment) of each testbed container."""
    redis = in_cluster_redis(name, objs, configmaps)
    if redis is None:
        return []
    where, spec, container, conf, service = redis
    out = redis_problems(where, spec, container, conf)
    hosts, client_secrets = set(), set()
    for w, cspec, c, sub, values in containers:
        if sub == "sim":
            continue
        cwhere = f"{name}: {w['kind']}/{w['metadata']['name']} container {c['name']}"
        out += client_problems(cwhere, values, service, conf)
        if "tls-port" in conf:
            secret = check_tls.secret_of(values.get("TESTBED_REDIS_TLS_CERT"), c, cspec)
            if secret:
                client_secrets.add(secret)
            hosts |= {m.group(1) for m in re.finditer(r"rediss://(?:[^@/,]*@)?([^:/,]+)", values.get("REDIS_URL", ""))}
    if "tls-port" in conf:
        for so in (o for o in objs if o["kind"] == "ScaledObject"):
            for t in so["spec"].get("triggers", []):
                meta = t.get("metadata", {})
                if t.get("type", "").startswith("redis") and meta.get("address", "").split(".")[0] == service \
                        and meta.get("enableTLS") != "true":
                    out.append((f"{name}: ScaledObject/{so['metadata']['name']}",
                                f"trigger {t['type']} polls {meta['address']} in plaintext, Redis serves TLS "
                                "only: components/keda does not combine with redis-tls (deploy/README.md, \"Autoscaling\")"))
                    break
        if certificates is None:
            certificates = check_tls.cert_manager_certificates(CERT_MANAGER_EXAMPLE)
        server_secret = check_tls.secret_of(conf.get("tls-cert-file"), container, spec)
        out += example_problems(name, server_secret, client_secrets, hosts, certificates)
        if not out:
            print(f"  {name}: Redis serves TLS only on {conf['tls-port']} (Secret {server_secret}), "
                  f"clients rediss:// with certificates from {sorted(client_secrets)}")
    return out
