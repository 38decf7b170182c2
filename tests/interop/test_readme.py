"""Interop: the grpcurl and `buf curl` commands of README.md's "Calling it
by hand" section, run exactly as written against `testbed all`.

Every line of the section's ```sh blocks is a command; `localhost:50051` is
replaced by the test server's address and the tools are found in .venv/bin.
Each command must match exactly one expectation below and each expectation
must be used, so a command added to the README without a check here, or a
check whose command left the README, fails the suite.
"""

import json
import os
import re
import subprocess
import time

from conftest import ROOT, VENV_BIN
from test_tools import expect_bad_request, json_stream

PLACEHOLDER = "localhost:50051"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Calling it by hand\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)
    return [line for block in blocks for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def ok_json(proc) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def expect_list(proc):
    assert proc.returncode == 0, proc.stderr
    for service in ["grpc.health.v1.Health", "testbed.v1.IngestService",
                    "testbed.v1.QueryService", "testbed.v1.WorkerControlService"]:
        assert service in proc.stdout.split(), proc.stdout


def expect_described(symbol: str, kind: str, member: str):
    def check(proc):
        assert proc.returncode == 0, proc.stderr
        assert f"{symbol} is a {kind}" in proc.stdout and member in proc.stdout, proc.stdout
    return check


def expect_publish(proc):
    reply = ok_json(proc)
    assert reply["acceptedCount"] == 1, reply
    assert [(r["index"], r["field"]) for r in reply["rejections"]] == \
        [(1, "events[1].device_id")], reply


def expect_device(proc):
    assert ok_json(proc)["device"]["deviceId"] == "pi-01"


def expect_pipeline(proc):
    assert "time" in ok_json(proc)["stats"]


def expect_status(proc):
    assert len(ok_json(proc)["group"]["partitions"]) == 4


def expect_watch(proc):
    assert proc.returncode != 0 and "DeadlineExceeded" in proc.stderr, proc.stderr
    messages = json_stream(proc.stdout)
    assert len(messages) >= 2 and all("time" in m["stats"] for m in messages), proc.stdout


def expect_serving(proc):
    assert ok_json(proc) == {"status": "SERVING"}


def expect_methods(proc):
    assert proc.returncode == 0, proc.stderr
    assert "testbed.v1.IngestService/PublishStream" in proc.stdout.split(), proc.stdout


# (a substring identifying the command, its check); matched in order, first wins.
EXPECTATIONS = [
    ("grpcurl -plaintext localhost:50051 list", expect_list),
    ("describe testbed.v1.IngestService",
     expect_described("testbed.v1.IngestService", "service", "rpc PublishStream (")),
    ("describe testbed.v1.QueryService",
     expect_described("testbed.v1.QueryService", "service", "rpc WatchPipelineStats (")),
    ("describe testbed.v1.WorkerControlService",
     expect_described("testbed.v1.WorkerControlService", "service", "rpc GetStatus (")),
    ("describe grpc.health.v1.Health",
     expect_described("grpc.health.v1.Health", "service", "rpc Watch (")),
    ("describe testbed.v1.PublishRequest",
     expect_described("testbed.v1.PublishRequest", "message", "events = 1;")),
    ("-d '{}' localhost:50051 testbed.v1.IngestService/Publish", expect_bad_request),
    ("testbed.v1.IngestService/Publish", expect_publish),
    ("testbed.v1.QueryService/GetDeviceStats", expect_device),
    ("testbed.v1.QueryService/GetPipelineStats", expect_pipeline),
    ("buf curl --protocol grpc --http2-prior-knowledge --list-methods", expect_methods),
    ("testbed.v1.WorkerControlService/GetStatus", expect_status),
    ("testbed.v1.QueryService/WatchPipelineStats", expect_watch),
    ("grpc.health.v1.Health/Check", expect_serving),
]

# Read after the write: the worker folds published events asynchronously.
EVENTUAL = {"testbed.v1.QueryService/GetDeviceStats"}


def test_readme_commands_run_as_written(testbed_all):
    commands = readme_commands()
    assert len(commands) >= len(EXPECTATIONS), commands
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    used = set()
    for command in commands:
        assert PLACEHOLDER in command, command
        index, (needle, expect) = next(
            ((i, e) for i, e in enumerate(EXPECTATIONS) if e[0] in command), (None, (None, None)))
        assert expect is not None, f"README command without a check in this test: {command}"
        used.add(index)
        runnable = command.replace(PLACEHOLDER, testbed_all.addr)
        deadline = time.monotonic() + (10 if needle in EVENTUAL else 0)
        while True:
            proc = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True,
                                  timeout=60, env=env)
            try:
                expect(proc)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    unused = [EXPECTATIONS[i][0] for i in range(len(EXPECTATIONS)) if i not in used]
    assert not unused, f"checks whose command is no longer in the README: {unused}"
