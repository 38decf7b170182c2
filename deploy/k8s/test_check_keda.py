"""components/keda combines only with the base's single in-cluster Redis:
check_manifests.py rejects it with external-redis, redis-cluster and
redis-tls, naming the reason, and passes overlays/keda. Each combination is
rendered from a temporary kustomization. Run by scripts/check-deploy:

    TESTBED_BIN=target/debug/testbed .venv/bin/pytest -q deploy/k8s/test_check_keda.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_check_tls import helps, problems, render  # noqa: E402,F401


def render_with(tmp_path: Path, *components: str) -> list[dict]:
    """The base with these components, in this order (kustomize takes only
    relative paths)."""
    rel = lambda p: os.path.relpath(HERE / p, tmp_path)  # noqa: E731
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel("base")], "components": [rel(f"components/{c}") for c in components]}))
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run([str(kubectl), "kustomize", str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def test_keda_overlay_passes(helps):
    """overlays/keda (the base's Redis) has no problem."""
    assert problems(render("overlays/keda"), helps, "keda") == []


@pytest.mark.parametrize("redis", ["external-redis", "redis-cluster"])
def test_keda_with_another_redis_is_rejected(tmp_path, helps, redis):
    """keda with an external or clustered Redis: one clear problem, nothing else."""
    found = problems(render_with(tmp_path, redis, "keda"), helps, "combined")
    assert found == ["combined: ScaledObject/worker: components/keda works only with the base's single in-cluster "
                     "Redis (its triggers poll redis.testbed.svc.cluster.local:6379 in plaintext); it does not "
                     "combine with external-redis or redis-cluster (deploy/README.md, \"Autoscaling\")"], found


def test_keda_with_redis_tls_is_rejected(tmp_path, helps):
    """keda with redis-tls: its plaintext trigger against TLS-only Redis."""
    found = problems(render_with(tmp_path, "redis-tls", "keda"), helps, "combined")
    assert len(found) == 1 and "polls redis.testbed.svc.cluster.local:6379 in plaintext, Redis serves TLS only" \
        in found[0], found
