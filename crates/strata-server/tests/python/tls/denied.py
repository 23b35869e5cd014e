"""Acceptance test: what the official KurrentDB Python client raises when strata refuses
it, as KurrentDB would: credentials that do not authenticate raise its
UnauthenticatedError; a user without the rights raises its AccessDeniedError for `$all`,
for a stream whose `$acl` excludes it, for `$settings`, and for persistent-subscription
management.

Run with STRATA_URI set to a `kurrentdb://bob:pw-bob@…?TlsCaFile=…` string for a user
without groups. Exits non-zero with a message on the first failure.
"""

import os
import sys
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import AccessDeniedError, UnauthenticatedError

URI = os.environ["STRATA_URI"]
RUN = uuid.uuid4().hex[:8]


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def expect_error(kind, action, message):
    try:
        action()
    except kind:
        return
    except Exception as error:  # noqa: BLE001
        check(False, f"{message}: expected {kind.__name__}, got {type(error).__name__}: {error}")
    check(False, f"{message}: expected {kind.__name__}, nothing was raised")


def event():
    return NewEvent(type="Tested", data=b"{}")


client = KurrentDBClient(uri=URI)

# Allowed: a stream without an ACL is open to every authenticated user.
mine = f"notes-{RUN}"
client.append_to_stream(mine, current_version=StreamState.NO_STREAM, events=[event()])
check(len(client.get_stream(mine)) == 1, "bob reads his own stream")

expect_error(AccessDeniedError, lambda: list(client.read_all(limit=1)), "reading $all")
expect_error(
    AccessDeniedError,
    lambda: next(iter(client.subscribe_to_all())),
    "subscribing to $all",
)
expect_error(
    AccessDeniedError,
    lambda: client.append_to_stream("$settings", current_version=StreamState.ANY, events=[event()]),
    "writing $settings",
)
# `restricted` has an $acl that names only `app` (set by the test before the run).
expect_error(
    AccessDeniedError,
    lambda: client.append_to_stream("restricted", current_version=StreamState.ANY, events=[event()]),
    "appending to a stream whose $acl excludes bob",
)
expect_error(AccessDeniedError, lambda: client.get_stream("restricted"), "reading it")
expect_error(
    AccessDeniedError,
    lambda: client.create_subscription_to_stream(f"group-{RUN}", mine),
    "creating a persistent subscription without $ops",
)

# Wrong password and unknown user: the client's own authentication error.
user_part, rest = URI.split("@", 1)
for wrong in (f"kurrentdb://bob:wrong@{rest}", f"kurrentdb://nobody:pw@{rest}"):
    other = KurrentDBClient(uri=wrong)
    expect_error(UnauthenticatedError, lambda: other.get_stream(mine), f"credentials {wrong.split('@')[0]}")

print("denied.py: all checks passed")
