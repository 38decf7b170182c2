"""The process harness and tokens shared by the Python client's tests.

The harness is tests/interop's (TESTBED_BIN, 127.0.0.1:0 with --addr-file,
readiness by a health check): loaded from there rather than copied. The
client package is imported from clients/python/src, the code this
repository generates, not an installed copy. (A module of its own name, not
conftest, so that one pytest run can collect tests/interop as well.)
"""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))

_spec = importlib.util.spec_from_file_location("interop_harness", ROOT / "tests" / "interop" / "conftest.py")
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)
Testbed = _harness.Testbed
make_pki = _harness.make_pki

# A write token and an admin token for the auth tests (secrets >= 16 bytes).
WRITE_TOKEN = "py-client-write-secret-0001"
ADMIN_TOKEN = "py-client-admin-secret-0001"
