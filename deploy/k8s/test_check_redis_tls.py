"""The Redis TLS rules of check_manifests.py (check_redis_tls.py) fail on the
mistakes they are for: each test breaks the rendered redis-tls overlay (or
the base) in one way and asserts the exact problems reported. Run by
scripts/check-deploy:

    TESTBED_BIN=target/debug/testbed .venv/bin/pytest -q deploy/k8s/test_check_redis_tls.py

Needs the binary (for `testbed <sub> --help`) and the venv's kubectl.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_redis_tls  # noqa: E402
from test_check_tls import container, helps, obj, problems, render, with_only  # noqa: E402,F401

SERVERS = ("ingest", "worker", "query")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {"redis-tls": render("overlays/redis-tls"), "base": render("base")}


@pytest.fixture
def rt(rendered) -> list[dict]:
    return copy.deepcopy(rendered["redis-tls"])


def redis_conf(objs: list[dict]) -> dict:
    """The data of the ConfigMap the Redis StatefulSet mounts as its config."""
    return obj(objs, "ConfigMap", "redis-config")["data"]


def edit_conf(objs: list[dict], old: str, new: str) -> None:
    data = redis_conf(objs)
    assert old in data["redis.conf"], old
    data["redis.conf"] = data["redis.conf"].replace(old, new)


def set_data(objs: list[dict], cm: str, key: str, value: str | None) -> None:
    data = obj(objs, "ConfigMap", cm)["data"]
    if value is None:
        del data[key]
    else:
        data[key] = value


def test_redis_tls_overlay_passes(rt, helps):
    """The overlay as committed has no problem."""
    assert problems(rt, helps, "redis-tls") == []


def test_base_passes(rendered, helps):
    """The plaintext base has no problem either (the rules stay quiet)."""
    assert problems(copy.deepcopy(rendered["base"]), helps, "base") == []


def test_plaintext_url_to_tls_redis(rt, helps):
    """redis:// to a TLS-only Redis is reported for each server."""
    set_data(rt, "testbed-redis", "url", "redis://redis.testbed.svc.cluster.local:6379/0")
    with_only(problems(rt, helps, "redis-tls"), "is plaintext, the in-cluster Redis serves TLS only", 3)


def test_rediss_to_plaintext_redis(rendered, helps):
    """rediss:// to the base's plaintext Redis is reported for each server."""
    base = copy.deepcopy(rendered["base"])
    set_data(base, "testbed-redis", "url", "rediss://redis.testbed.svc.cluster.local:6379/0")
    with_only(problems(base, helps, "base"), "rediss:// but the in-cluster Redis serves no TLS", 3)


def test_missing_client_certificate(rt, helps):
    """Without TESTBED_REDIS_TLS_CERT, Redis (tls-auth-clients) refuses each
    server."""
    set_data(rt, "testbed-env", "TESTBED_REDIS_TLS_CERT", None)
    with_only(problems(rt, helps, "redis-tls"), "TESTBED_REDIS_TLS_CERT is not set", 3)


def test_missing_ca(rt, helps):
    """Without TESTBED_REDIS_TLS_CA, the private CA's certificate is refused."""
    set_data(rt, "testbed-env", "TESTBED_REDIS_TLS_CA", None)
    with_only(problems(rt, helps, "redis-tls"), "TESTBED_REDIS_TLS_CA is not set", 3)


def test_plaintext_port_left_open(rt, helps):
    """A plaintext port beside the tls-port is reported."""
    edit_conf(rt, "port 0\n", "port 6380\n")
    with_only(problems(rt, helps, "redis-tls"), "serves plaintext on port 6380 beside tls-port 6379", 1)


def test_probe_without_tls(rt, helps):
    """The base's plaintext redis-cli probes fail against TLS only."""
    redis = container(rt, "StatefulSet", "redis")
    for kind in ("startupProbe", "readinessProbe"):
        redis[kind]["exec"]["command"] = ["redis-cli", "-p", "6379", "ping"]
    with_only(problems(rt, helps, "redis-tls"), "runs redis-cli without --tls --cacert --cert --key", 2)


def test_probe_without_client_certificate(rt, helps):
    """A probe with --tls but no certificate fails against tls-auth-clients."""
    command = container(rt, "StatefulSet", "redis")["readinessProbe"]["exec"]["command"]
    i = command.index("--cert")
    del command[i:i + 4]  # --cert FILE --key FILE
    with_only(problems(rt, helps, "redis-tls"), "readinessProbe runs redis-cli without --cert --key", 1)


def test_redis_file_outside_mounts(rt, helps):
    """A tls-cert-file no volume provides is reported."""
    edit_conf(rt, "tls-cert-file /etc/redis/tls/tls.crt", "tls-cert-file /etc/ssl/redis.crt")
    found = problems(rt, helps, "redis-tls")
    assert any("redis.conf tls-cert-file=/etc/ssl/redis.crt is in no volume mount" in f for f in found), found


def test_redis_file_through_subpath(rt, helps):
    """Redis' certificate through a subPath mount (never updated) is reported."""
    mount = next(m for m in container(rt, "StatefulSet", "redis")["volumeMounts"] if m["name"] == "tls")
    mount["mountPath"] = "/etc/redis/tls/tls.crt"
    mount["subPath"] = "tls.crt"
    found = problems(rt, helps, "redis-tls")
    assert any("tls-cert-file=/etc/redis/tls/tls.crt comes through a subPath mount" in f for f in found), found


def test_example_certificate_names(rt, helps):
    """A server Certificate that does not name REDIS_URL's host is reported."""
    certificates = check_redis_tls.check_tls.cert_manager_certificates(check_redis_tls.CERT_MANAGER_EXAMPLE)
    certificates["testbed-redis-tls"]["dnsNames"] = ["redis"]
    found = _redis_problems(rt, helps, certificates)
    assert found == [("redis-tls: cert-manager.example.yaml", "Certificate for testbed-redis-tls does not name "
                      "['redis.testbed.svc.cluster.local'], which REDIS_URL dials")], found


def test_example_issuers_differ(rt, helps):
    """Client and server certificates from different issuers are reported."""
    certificates = check_redis_tls.check_tls.cert_manager_certificates(check_redis_tls.CERT_MANAGER_EXAMPLE)
    certificates["testbed-redis-client-tls"]["issuerRef"] = {"name": "testbed-ca", "kind": "Issuer"}
    found = _redis_problems(rt, helps, certificates)
    assert len(found) == 1 and "have different issuers" in found[0][1], found


def _redis_problems(objs: list[dict], helps: dict, certificates: dict) -> list[tuple[str, str]]:
    """check_redis_tls's problems with another set of example Certificates."""
    import check_manifests

    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    containers = []
    for w in objs:
        spec = check_manifests.pod_spec(w)
        if spec is None or w["metadata"]["name"] not in SERVERS:
            continue
        c = spec["containers"][0]
        values = dict(configmaps[next(r["configMapRef"]["name"] for r in c["envFrom"]
                                      if r["configMapRef"]["name"].startswith("testbed-env"))])
        values["REDIS_URL"] = obj(objs, "ConfigMap", "testbed-redis")["data"]["url"]
        containers.append((w, spec, c, w["metadata"]["name"], values))
    assert len(containers) == 3
    return check_redis_tls.problems("redis-tls", objs, configmaps, containers, certificates)


def test_combines_with_tls_in_either_order(tmp_path, helps):
    """components/tls and components/redis-tls together, in either order,
    render the same objects but for the order of the volumes (both Secret
    volumes on each server) and pass every rule."""
    from test_check_keda import render_with

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = render_with(tmp_path / "a", "tls", "redis-tls")
    second = render_with(tmp_path / "b", "redis-tls", "tls")
    for objs in (first, second):
        for sub in SERVERS:
            spec = obj(objs, "Deployment", sub)["spec"]["template"]["spec"]
            spec["volumes"].sort(key=lambda v: v["name"])
            spec["containers"][0]["volumeMounts"].sort(key=lambda m: m["name"])
    assert first == second
    for sub in SERVERS:
        spec = obj(first, "Deployment", sub)["spec"]["template"]["spec"]
        assert sorted(v["secret"]["secretName"] for v in spec["volumes"]) == ["testbed-redis-client-tls",
                                                                              "testbed-tls"]
    assert problems(first, helps, "tls+redis-tls") == []
