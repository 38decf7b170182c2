"""A real browser (Debian's headless chromium) on the two pages a first run
shows: the live status page of a running `testbed all` and the HTML report
of `testbed sim --output html`. Each is read back with --dump-dom and its
figures compared with the run's own; screenshots are kept under
target/browser/ (CI artifacts; docs/img/ holds copies for the README).

Without chromium the tests skip, except in CI (CI=true), where they fail:
scripts/setup-tools installs it.
"""

import html.parser
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

SHOTS = ROOT / "target" / "browser"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is missing in CI: scripts/setup-tools installs it")
    pytest.skip("chromium is not installed (scripts/setup-tools installs it)")


def browse(url: str, screenshot: pathlib.Path, size: str) -> str:
    """The page's DOM after load, as chromium serialises it; and a screenshot."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", f"--window-size={size}"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = subprocess.run([*base, f"--screenshot={screenshot}", url],
                          capture_output=True, timeout=120, check=False)
    assert screenshot.stat().st_size > 10_000, shot.stderr.decode(errors="replace")[-2000:]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, timeout=120, check=True)
    return dom.stdout.decode()


class Page(html.parser.HTMLParser):
    """Text by element id, the ids of <svg data-chart>, and table cells."""

    def __init__(self, dom: str):
        super().__init__()
        self.text: dict[str, str] = {}
        self.charts: list[str] = []
        self.services: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self._service: str | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg" and "data-chart" in attrs:
            self.charts.append(attrs["data-chart"])
        if "data-service" in attrs:
            self._service = attrs["data-service"]
            self.services[self._service] = ""
        if tag not in ("meta", "br", "rect", "line", "polyline", "img"):
            self._open.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break
        if tag == "td":
            self._service = None

    def handle_data(self, data):
        for _, id_ in self._open:
            if id_:
                self.text[id_] = self.text.get(id_, "") + data
        if self._service is not None:
            self.services[self._service] += data


@pytest.fixture(scope="module")
def run(testbed_all):
    """One verified experiment against testbed all, its report as HTML."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    report = SHOTS / "report.html"
    scenario = SHOTS / "ramp.toml"
    scenario.write_text(
        'name = "browser-test"\n'
        '[[phase]]\nkind = "ramp"\nfrom = 100\nto = 3000\nduration = "3s"\n'
        '[[phase]]\nkind = "hold"\nrate = 3000\nduration = "2s"\n'
    )
    out = subprocess.run(
        [str(BIN), "sim", "--target", f"http://{testbed_all.addr}", "--scenario", str(scenario),
         "--sample-interval", "250ms", "--verify", "--output", "html",
         "--output-file", str(report)],
        capture_output=True, timeout=120, check=True,
    ).stdout.decode()
    accepted = int(re.search(r"accepted (\d+)", out).group(1))
    return testbed_all, report, accepted


def test_report_page_in_chromium(run):
    """The report shows the verdict with the run's event count, its figures
    and one SVG per chart, as a browser renders it."""
    _, report, accepted = run
    page = Page(browse(report.as_uri(), SHOTS / "report.png", "1400,2420"))
    assert page.text["verdict"] == f"Verification PASSED: {accepted} events processed exactly once"
    assert page.text["events-accepted"] == str(accepted)
    assert page.text["events-sent"] == str(accepted)
    assert page.charts == ["rate", "latency-over-time", "distribution", "status", "retries", "kinds"]
    assert "free of coordinated omission" in page.text["method"]


def test_status_page_in_chromium(run):
    """The live status page of testbed all shows every service SERVING and
    the pipeline's totals equal to what the run sent, as a browser renders it."""
    testbed, _, accepted = run
    page = Page(browse(f"http://{testbed.metrics_addr}/", SHOTS / "status.png", "1000,1100"))
    assert page.text["role"] == "all"
    assert page.services == {
        "": "SERVING",
        "testbed.v1.IngestService": "SERVING",
        "testbed.v1.WorkerControlService": "SERVING",
        "testbed.v1.QueryService": "SERVING",
    }
    stages = page.text["throughput-per-stage"]
    # The run was verified before the page was read: every accepted event
    # was appended and processed, once.
    assert f"ingest (appended){accepted}" in stages
    assert f"worker (processed){accepted}" in stages
    assert "RUNNING" in page.text["workers"]
    assert page.text["backlog-per-partition"].startswith("partitionbacklogpendingoldest pending (s)0")
