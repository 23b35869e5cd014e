"""Acceptance test: the official KurrentDB Python client, trusting a CA that did not
sign the server's certificate, must not connect (nor append, nor read).

Run with STRATA_URI set to a `kurrentdb://…?TlsCaFile=…` string naming the wrong CA.
Exits non-zero if any call succeeds.
"""

import os
import sys

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

URI = os.environ["STRATA_URI"]

try:
    client = KurrentDBClient(uri=URI)
    client.append_to_stream(
        "wrong-ca",
        current_version=StreamState.ANY,
        events=[NewEvent(type="ShouldFail", data=b"{}")],
    )
except Exception as error:  # noqa: BLE001 - any refusal will do; success is the failure
    print(f"refused as expected: {type(error).__name__}")
    sys.exit(0)

print("FAILED: a client trusting another CA connected and appended", file=sys.stderr)
sys.exit(1)
