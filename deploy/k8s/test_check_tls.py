"""The TLS rules of check_manifests.py (check_tls.py) fail on the mistakes
they are for: each test breaks the rendered tls overlay (or base) in one
way and asserts the exact problems reported. Run by scripts/check-deploy:

    TESTBED_BIN=target/debug/testbed .venv/bin/pytest -q deploy/k8s/test_check_tls.py

Needs the binary (for `testbed <sub> --help`) and the venv's kubectl.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import check_manifests  # noqa: E402
import check_tls  # noqa: E402

BIN = os.environ.get("TESTBED_BIN", str(HERE.parent.parent / "target" / "debug" / "testbed"))
COLLECTOR = ("otel-collector", "observability", 4317)


def render(path: str) -> list[dict]:
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run([str(kubectl), "kustomize", str(HERE / path)], capture_output=True, text=True,
                         check=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


@pytest.fixture(scope="module")
def helps() -> dict:
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"{BIN} not found: build it or set TESTBED_BIN")
    h = {sub: (*check_manifests.help_of(BIN, sub), check_manifests.env_of_flag(BIN, sub))
         for sub in check_manifests.SUBCOMMANDS}
    h["binary"] = Path(BIN).read_bytes()
    return h


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {"tls": render("overlays/tls"), "base": render("base")}


def problems(objs: list[dict], helps: dict, name: str = "tls") -> list[str]:
    """What check_manifests reports for these objects (its service names
    unchecked: no --live here)."""
    check_manifests.errors.clear()
    check_manifests.check_overlay(name, objs, BIN, helps, None, COLLECTOR, 2)
    found = list(check_manifests.errors)
    check_manifests.errors.clear()
    return found


def obj(objs: list[dict], kind: str, name: str) -> dict:
    """The object of that kind whose name is NAME or NAME-<kustomize hash>."""
    return next(o for o in objs if o["kind"] == kind and (o["metadata"]["name"] == name
                or o["metadata"]["name"].rsplit("-", 1)[0] == name))


def container(objs: list[dict], kind: str, name: str) -> dict:
    return check_manifests.pod_spec(obj(objs, kind, name))["containers"][0]


def with_only(found: list[str], text: str, count: int) -> None:
    assert len(found) == count and all(text in f for f in found), "\n".join(found)


@pytest.fixture
def tls(rendered) -> list[dict]:
    return copy.deepcopy(rendered["tls"])


def test_the_overlays_pass(rendered, helps):
    """The tls overlay and the base, unchanged, have no problem."""
    assert problems(copy.deepcopy(rendered["tls"]), helps) == []
    assert problems(copy.deepcopy(rendered["base"]), helps, "base") == []


def test_tls_without_probe_addr(tls, helps):
    """(a) Servers serving TLS without TESTBED_PROBE_ADDR: each of the three."""
    del obj(tls, "ConfigMap", "testbed-env")["data"]["TESTBED_PROBE_ADDR"]
    with_only(problems(tls, helps), "serves TLS (TESTBED_TLS_CERT) but sets no TESTBED_PROBE_ADDR", 3)


def test_probe_on_the_tls_port(tls, helps):
    """(a) One probe left on the TLS port."""
    container(tls, "Deployment", "ingest")["readinessProbe"]["grpc"]["port"] = 50051
    found = problems(tls, helps)
    with_only(found, "readinessProbe asks port 50051, which serves TLS", 1)
    assert found[0].startswith("tls: Deployment/ingest")


def test_probe_port_not_declared(tls, helps):
    """(a) The probe port missing from the container's ports."""
    c = container(tls, "Deployment", "query")
    c["ports"] = [p for p in c["ports"] if p["name"] != "probe"]
    with_only(problems(tls, helps), "containerPort probe is None, TESTBED_PROBE_ADDR listens on 8086", 1)


def test_tls_given_as_flags(rendered, helps):
    """(a), (b) --tls-cert in args counts like TESTBED_TLS_CERT."""
    base = copy.deepcopy(rendered["base"])
    container(base, "Deployment", "worker")["args"] += ["--tls-cert", "/tls/tls.crt", "--tls-key=/tls/tls.key"]
    found = problems(base, helps, "base")
    assert len(found) == 3, "\n".join(found)
    assert sum("TESTBED_TLS_CERT=/tls/tls.crt is in no volume mount" in f for f in found) == 1
    assert sum("TESTBED_TLS_KEY=/tls/tls.key is in no volume mount" in f for f in found) == 1
    assert sum("sets no TESTBED_PROBE_ADDR" in f for f in found) == 1


def test_subpath_mounts(tls, helps):
    """(b) The Secret's files mounted one by one through subPath."""
    c = container(tls, "Deployment", "ingest")
    c["volumeMounts"] = [{"name": "tls", "mountPath": f"/etc/testbed/tls/{k}", "subPath": k, "readOnly": True}
                         for k in ("tls.crt", "tls.key", "ca.crt")]
    found = problems(tls, helps)
    with_only(found, "subPath mounts are never updated", 3)
    assert {f.split(": ")[2].split("=")[0] for f in found} \
        == {"TESTBED_TLS_CERT", "TESTBED_TLS_KEY", "TESTBED_TLS_CLIENT_CA"}


def test_files_outside_any_mount(tls, helps):
    """(b) The volume mount forgotten on one Deployment."""
    del container(tls, "Deployment", "worker")["volumeMounts"]
    with_only(problems(tls, helps), "is in no volume mount (the image has no such file)", 3)


def test_a_key_the_secret_does_not_have(tls, helps):
    """(b) A file name that is no key of a kubernetes.io/tls Secret."""
    obj(tls, "ConfigMap", "testbed-env")["data"]["TESTBED_TLS_KEY"] = "/etc/testbed/tls/tls.pem"
    with_only(problems(tls, helps), "holds ['ca.crt', 'tls.crt', 'tls.key'], not tls.pem", 3)


def test_sim_without_ca(tls, helps):
    """(c) The simulator without TESTBED_TLS_CA: its https:// query target is
    refused and its dns:/// ingest target would be plaintext (Job and CronJob)."""
    del obj(tls, "ConfigMap", "testbed-sim")["data"]["TESTBED_TLS_CA"]
    found = problems(tls, helps)
    assert len(found) == 4, "\n".join(found)
    assert sum("TESTBED_SIM_QUERY_TARGET https://query.testbed.svc.cluster.local:50051 is https:// but "
               "TESTBED_TLS_CA is not set" in f for f in found) == 2
    assert sum("TESTBED_SIM_TARGET dns:///ingest-headless.testbed.svc.cluster.local:50051 speaks plaintext" in f
               for f in found) == 2


def test_https_target_without_ca_in_the_base(rendered, helps):
    """(c) An https:// target given to the plaintext base's simulator alone."""
    base = copy.deepcopy(rendered["base"])
    obj(base, "ConfigMap", "testbed-sim")["data"]["TESTBED_SIM_QUERY_TARGET"] = "https://query:50051"
    with_only(problems(base, helps, "base"), "is https:// but TESTBED_TLS_CA is not set", 2)


def test_plaintext_target_to_tls_servers(tls, helps):
    """(c) An http:// target at servers that serve TLS."""
    obj(tls, "ConfigMap", "testbed-sim")["data"]["TESTBED_SIM_QUERY_TARGET"] = "http://query.testbed:50051"
    with_only(problems(tls, helps), "speaks plaintext to servers that serve TLS", 2)


def test_sim_without_client_certificate(tls, helps):
    """(c) Servers asking for client certificates, a simulator without one."""
    data = obj(tls, "ConfigMap", "testbed-sim")["data"]
    del data["TESTBED_TLS_CLIENT_CERT"], data["TESTBED_TLS_CLIENT_KEY"]
    with_only(problems(tls, helps), "those servers require a client certificate", 4)


def test_service_on_the_probe_port(tls, helps):
    """The plaintext probe port added to a Service."""
    obj(tls, "Service", "ingest")["spec"]["ports"].append({"name": "probe", "port": 8086, "targetPort": "probe"})
    with_only(problems(tls, helps), "tls: Service/ingest: exposes the plaintext probe port 8086", 1)


def test_certificate_without_a_checked_name(tls, helps, tmp_path, monkeypatch):
    """The example's server Certificate without the headless Service's name
    (the simulator's dns:/// target checks it), and the simulator's without
    the client auth usage."""
    docs = list(yaml.safe_load_all(check_tls.CERT_MANAGER_EXAMPLE.read_text()))
    for d in docs:
        if d["kind"] == "Certificate" and d["spec"]["secretName"] == "testbed-tls":
            d["spec"]["dnsNames"].remove("ingest-headless.testbed.svc.cluster.local")
        if d["kind"] == "Certificate" and d["spec"]["secretName"] == "testbed-sim-tls":
            d["spec"]["usages"].remove("client auth")
    example = tmp_path / "cert-manager.example.yaml"
    example.write_text(yaml.safe_dump_all(docs))
    monkeypatch.setattr(check_tls, "CERT_MANAGER_EXAMPLE", example)
    found = problems(tls, helps)
    assert len(found) == 3, "\n".join(found)
    assert sum("Certificate for testbed-tls does not name ['ingest-headless.testbed.svc.cluster.local']" in f
               for f in found) == 1
    assert sum("Certificate for testbed-sim-tls lacks usage 'client auth'" in f for f in found) == 2


def test_secret_no_certificate_makes(tls, helps):
    """A Secret mounted for TLS that the example does not make."""
    for o in tls:
        spec = check_manifests.pod_spec(o)
        for v in (spec or {}).get("volumes", []):
            if v.get("secret", {}).get("secretName") == "testbed-tls":
                v["secret"]["secretName"] = "testbed-server-tls"
    with_only(problems(tls, helps), "Secret testbed-server-tls is made by no Certificate", 1)
