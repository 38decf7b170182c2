"""TLS rules for the rendered manifests (#23), called by check_manifests.py.

Each rule catches a mistake that a cluster would only show as failing pods
or calls:

- a server with TESTBED_TLS_CERT must set TESTBED_PROBE_ADDR, declare it as
  the container port "probe", and point every gRPC probe at it: the
  kubelet's gRPC probe speaks plaintext, so a probe on the TLS port fails
  and the pod never becomes ready (or is restarted);
- every TLS file (server, simulator and Redis client certificates, keys and
  CAs) lies under a volume mount without subPath (a subPath mount is never
  updated, so a renewed certificate would not reach the pod); from a Secret
  volume, the file is one of the keys cert-manager writes (tls.crt, tls.key,
  ca.crt) or one the volume's items name;
- a simulator with an https:// target sets TESTBED_TLS_CA (no system roots
  are loaded); a simulator target that is a Service of TLS servers is
  https://, or dns:/// with TESTBED_TLS_CA (plaintext calls to a TLS port
  all fail); servers asking for client certificates (TESTBED_TLS_CLIENT_CA)
  get one from the simulator (TESTBED_TLS_CLIENT_CERT);
- the probe port is in no Service (it is plaintext and for the kubelet);
- cert-manager.example.yaml makes every Secret an overlay mounts for TLS,
  with DNS names covering the names the simulator checks.

The functions return problems as (where, message) pairs; check_manifests.py
reports them with the rest.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import urlparse

import yaml

# Environment variables naming a PEM file the process reads.
TLS_FILE_ENVS = (
    "TESTBED_TLS_CERT", "TESTBED_TLS_KEY", "TESTBED_TLS_CLIENT_CA",
    "TESTBED_TLS_CA", "TESTBED_TLS_CLIENT_CERT", "TESTBED_TLS_CLIENT_KEY",
    "TESTBED_REDIS_TLS_CA", "TESTBED_REDIS_TLS_CERT", "TESTBED_REDIS_TLS_KEY",
)
# The keys of a kubernetes.io/tls Secret as cert-manager writes it.
SECRET_TLS_KEYS = {"tls.crt", "tls.key", "ca.crt"}
SIM_TARGETS = ("TESTBED_SIM_TARGET", "TESTBED_SIM_QUERY_TARGET")
GRPC_PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# The cert-manager resources that make the TLS overlay's Secrets (not
# rendered: kubernetes-validate has no schema for cert-manager's CRDs).
CERT_MANAGER_EXAMPLE = Path(__file__).resolve().parent / "components" / "tls" / "cert-manager.example.yaml"

Problems = list[tuple[str, str]]


def addr_port(addr: str | None) -> int | None:
    if not addr:
        return None
    try:
        return int(addr.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def server_problems(where: str, values: dict, container: dict, grpc_port: int) -> Problems:
    """Rule (a) for a server container (ingest, worker, query)."""
    if "TESTBED_TLS_CERT" not in values:
        return []
    out: Problems = []
    probe_port = addr_port(values.get("TESTBED_PROBE_ADDR"))
    if probe_port is None:
        return [(where, "serves TLS (TESTBED_TLS_CERT) but sets no TESTBED_PROBE_ADDR: the kubelet's gRPC "
                        "probes speak plaintext and would fail on the TLS port")]
    if probe_port == grpc_port:
        out.append((where, f"TESTBED_PROBE_ADDR port {probe_port} is the gRPC port"))
    declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if declared.get("probe") != probe_port:
        out.append((where, f"containerPort probe is {declared.get('probe')}, TESTBED_PROBE_ADDR listens on {probe_port}"))
    for kind in GRPC_PROBES:
        grpc = (container.get(kind) or {}).get("grpc")
        if grpc is not None and grpc.get("port") != probe_port:
            out.append((where, f"{kind} asks port {grpc.get('port')}, which serves TLS: the kubelet's gRPC probe "
                               f"speaks plaintext, point it at the probe port {probe_port}"))
    return out


def file_problems(where: str, values: dict, container: dict, spec: dict) -> Problems:
    """Rule (b): TLS files from a volume mount without subPath."""
    out: Problems = []
    for env in TLS_FILE_ENVS:
        path = values.get(env)
        if path and not path.startswith("<from "):
            out += path_problems(where, env, path, container, spec)
    return out


def path_problems(where: str, what: str, path: str, container: dict, spec: dict) -> Problems:
    """Rule (b) for one file the container reads (WHAT names the setting)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    path = posixpath.normpath(path)
    mounts = [m for m in container.get("volumeMounts", [])
              if path == posixpath.normpath(m["mountPath"])
              or path.startswith(posixpath.normpath(m["mountPath"]).rstrip("/") + "/")]
    if not mounts:
        return [(where, f"{what}={path} is in no volume mount (the image has no such file)")]
    # The innermost mount is the one the file comes from.
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    if "subPath" in mount or "subPathExpr" in mount:
        return [(where, f"{what}={path} comes through a subPath mount of volume {mount['name']}: "
                        "subPath mounts are never updated, so a renewed certificate would not reach the pod")]
    relative = posixpath.relpath(path, posixpath.normpath(mount["mountPath"]))
    secret = volumes.get(mount["name"], {}).get("secret")
    if secret is None:
        return []
    items = secret.get("items")
    names = {i["path"] for i in items} if items else SECRET_TLS_KEYS
    if relative not in names:
        return [(where, f"{what}={path}: Secret {secret.get('secretName')} mounted at {mount['mountPath']} "
                        f"holds {sorted(names)}, not {relative}")]
    return []


def target_host(target: str) -> tuple[str, str]:
    """(scheme, host) of a simulator target: https://H:P, http://H:P,
    dns:///H:P (or dns://RESOLVER/H:P)."""
    url = urlparse(target)
    if url.scheme == "dns":
        return "dns", url.path.lstrip("/").rsplit(":", 1)[0]
    return url.scheme, url.hostname or ""


def sim_problems(where: str, values: dict, servers_of, namespace: str | None) -> Problems:
    """Rule (c) for a simulator container. servers_of(host, namespace) gives
    the environments of the testbed containers behind the Service that host
    names (empty when it names none)."""
    out: Problems = []
    has_ca = "TESTBED_TLS_CA" in values
    for env in SIM_TARGETS:
        target = values.get(env)
        if not target:
            continue
        scheme, host = target_host(target)
        if scheme == "https" and not has_ca:
            out.append((where, f"{env} {target} is https:// but TESTBED_TLS_CA is not set (no system roots are "
                               "loaded: the simulator refuses it)"))
        servers = servers_of(host, namespace)
        if any("TESTBED_TLS_CERT" in s for s in servers):
            if scheme == "http" or (scheme == "dns" and not has_ca):
                out.append((where, f"{env} {target} speaks plaintext to servers that serve TLS: use https:// "
                                   "(or dns:/// with TESTBED_TLS_CA)"))
            if any("TESTBED_TLS_CLIENT_CA" in s for s in servers) and "TESTBED_TLS_CLIENT_CERT" not in values:
                out.append((where, f"{env} {target}: those servers require a client certificate "
                                   "(TESTBED_TLS_CLIENT_CA) and TESTBED_TLS_CLIENT_CERT is not set"))
    return out


def probe_service_problems(overlay: str, services: dict, probe_ports: dict) -> Problems:
    """The probe port stays out of every Service. probe_ports maps
    (namespace, frozenset of pod labels) -> probe port of those pods."""
    out: Problems = []
    for (ns, sname), svc in services.items():
        selector = svc["spec"].get("selector", {})
        for (pns, labels), port in probe_ports.items():
            if pns != ns or not selector or any(dict(labels).get(k) != v for k, v in selector.items()):
                continue
            for p in svc["spec"]["ports"]:
                if p.get("targetPort", p["port"]) in ("probe", port):
                    out.append((f"{overlay}: Service/{sname}", f"exposes the plaintext probe port {port}: keep it "
                                                               "for the kubelet"))
    return out


def cert_manager_certificates(path: Path | None = None) -> dict[str, dict]:
    """secretName -> spec of each Certificate in the example ({} if absent)."""
    path = path or CERT_MANAGER_EXAMPLE
    if not path.exists():
        return {}
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return {d["spec"]["secretName"]: d["spec"] for d in docs if d.get("kind") == "Certificate"}


def example_problems(where: str, secret: str, usage: str, names: set[str], certificates: dict) -> Problems:
    """A Secret an overlay mounts for TLS is made by the example's
    Certificate, for the right usage, naming every host clients check."""
    cert = certificates.get(secret)
    if cert is None:
        return [(where, f"Secret {secret} is made by no Certificate in {CERT_MANAGER_EXAMPLE.name}")]
    out: Problems = []
    if usage not in cert.get("usages", []):
        out.append((where, f"{CERT_MANAGER_EXAMPLE.name}: Certificate for {secret} lacks usage {usage!r}"))
    missing = sorted(names - set(cert.get("dnsNames", [])))
    if missing:
        out.append((where, f"{CERT_MANAGER_EXAMPLE.name}: Certificate for {secret} does not name {missing}, "
                           "which the simulator checks the certificate against"))
    return out


def secret_of(path: str | None, container: dict, spec: dict) -> str | None:
    """The Secret a file of the container comes from, if any."""
    if not path:
        return None
    path = posixpath.normpath(path)
    mounts = [m for m in container.get("volumeMounts", [])
              if path.startswith(posixpath.normpath(m["mountPath"]).rstrip("/") + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), {})
    return volume.get("secret", {}).get("secretName")
