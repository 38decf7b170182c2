"""Interop: `/metrics` negotiated as OpenMetrics, read by the real Python
`prometheus-client` parser, carries exemplars (trace ids) on the buckets of
the end-to-end latency and RPC server duration histograms.

No OTLP endpoint is configured: spans are still made and sampled (the
default sampler is parentbased_always_on), which is all exemplars need.
"""

import json
import re
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import conftest
from conftest import tool

# What Prometheus 2.x sends; Prometheus 3 lists the same types with other q values.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
                     "application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


@pytest.fixture(scope="module")
def testbed():
    tb = conftest.Testbed("all", env={"OTEL_TRACES_SAMPLER": "parentbased_always_on",
                             "OTEL_SDK_DISABLED": "false"})
    yield tb
    assert tb.stop() == 0


def scrape(tb: conftest.Testbed, accept: str | None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://{tb.metrics_addr}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def bucket_exemplars(text: str, family: str) -> list:
    """(le, labels, exemplar) of every bucket sample of the histogram
    `family` that has an exemplar ([] while the family has no series yet)."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    if family not in families:
        return []
    assert families[family].type == "histogram", families[family]
    return [(s.labels["le"], s.labels, s.exemplar) for s in families[family].samples
            if s.name == family + "_bucket" and s.exemplar is not None]


def publish_traced(tb: conftest.Testbed) -> None:
    """One event published with grpcurl under the caller's trace TRACE_ID."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {"events": [{"event_id": "exemplar-1", "device_id": "pi-01", "observed_at": now,
                        "metric": {"name": "fan", "value": 3, "unit": "1"}}]}
    out = subprocess.run(
        [tool("grpcurl"), "-plaintext", "-H", f"traceparent: 00-{TRACE_ID}-b7ad6b7169203331-01",
         "-d", json.dumps(body), tb.addr, "testbed.v1.IngestService/Publish"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out)["acceptedCount"] == 1


def test_openmetrics_exemplars_parse_with_prometheus_client(testbed):
    """prometheus-client parses the whole OpenMetrics text, and a bucket of
    pipeline_e2e_latency_seconds and one of rpc_server_duration_seconds
    (the Publish call) carry an exemplar of the caller's trace, within the
    bucket's bound."""
    publish_traced(testbed)
    deadline = time.monotonic() + 10
    while True:
        content_type, text = scrape(testbed, PROMETHEUS_ACCEPT)
        # The worker applies the entry a moment after Publish returns.
        e2e = bucket_exemplars(text, "pipeline_e2e_latency_seconds")
        if e2e or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    rpc = [(le, labels, ex) for le, labels, ex in
           bucket_exemplars(text, "rpc_server_duration_seconds")
           if labels.get("rpc_method") == "Publish"]
    for name, found in [("pipeline_e2e_latency_seconds", e2e),
                        ("rpc_server_duration_seconds", rpc)]:
        assert len(found) == 1, (name, found, text)
        le, _, exemplar = found[0]
        assert HEX32.fullmatch(exemplar.labels["trace_id"]), exemplar
        assert exemplar.labels["trace_id"] == TRACE_ID, exemplar
        assert HEX16.fullmatch(exemplar.labels["span_id"]), exemplar
        assert 0 <= exemplar.value <= float(le), (le, exemplar)
        assert abs(float(exemplar.timestamp) - time.time()) < 60, exemplar
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1


def test_classic_text_is_unchanged_without_openmetrics(testbed):
    """Without an OpenMetrics Accept (curl, promtool pipelines) /metrics stays
    the classic text format: no exemplars, no `# EOF`, counters' TYPE with
    `_total`."""
    for accept in [None, "*/*", "text/plain;version=0.0.4"]:
        content_type, text = scrape(testbed, accept)
        assert content_type == "text/plain; version=0.0.4", accept
        assert " # {" not in text and "# EOF" not in text, accept
        assert "# TYPE worker_events_processed_total counter" in text, accept
