"""Acceptance test: the official KurrentDB Python client against `strata serve`.

Run with STRATA_GRPC=host:port pointing at a running server. Exits non-zero with a
message on the first failure. Every stream name is unique per run, so the script can
run against a store that already holds data (e.g. a shared PostgreSQL database).
"""

import os
import sys
import threading
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.events import NewEvents
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)

ADDR = os.environ["STRATA_GRPC"]
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


def event(kind, n):
    return NewEvent(type=kind, data=f'{{"n": {n}}}'.encode(), metadata=b'{"run": "' + RUN.encode() + b'"}')


# STRATA_URI, when set, is the whole connection string (TLS runs set it).
client = KurrentDBClient(uri=os.environ.get("STRATA_URI", f"kurrentdb://{ADDR}?tls=false"))

# --- append: new stream, exact revision, wrong revision --------------------------------
orders = f"order-{RUN}"
first = event("OrderPlaced", 0)
position0 = client.append_to_stream(orders, current_version=StreamState.NO_STREAM, events=first)
check(position0 > 0, f"commit positions start above 0, got {position0}")
position1 = client.append_to_stream(orders, current_version=0, events=event("OrderPaid", 1))
check(position1 > position0, "positions grow")
expect_error(
    WrongCurrentVersionError,
    lambda: client.append_to_stream(orders, current_version=0, events=event("X", 9)),
    "append at a stale revision (single event, Append call)",
)
expect_error(
    WrongCurrentVersionError,
    lambda: client.append_to_stream(orders, current_version=StreamState.NO_STREAM, events=[event("X", 9), event("X", 10)]),
    "append with no_stream to an existing stream (BatchAppend call)",
)
check(client.get_current_version(orders) == 1, "current version is 1")

# --- batch append and idempotent re-append -----------------------------------------------
batch = [event("ItemAdded", n) for n in range(2, 7)]
position_batch = client.append_to_stream(orders, current_version=1, events=batch)
again = client.append_to_stream(orders, current_version=1, events=batch)
check(again == position_batch, f"an exact retry returns the first result ({again} vs {position_batch})")
events = client.get_stream(orders)
check(len(events) == 7, f"7 events after the idempotent retry, got {len(events)}")
check([e.stream_position for e in events] == list(range(7)), "revisions 0..6")
check(events[0].id == first.id and events[0].type == "OrderPlaced", "ids and types round-trip")
check(events[0].data == first.data and events[0].metadata == first.metadata, "data and metadata round-trip")
check(events[0].content_type == "application/json", "content type round-trips")
check(events[0].recorded_at is not None, "recorded_at is set")

# --- reads both ways, from a revision, with a limit ----------------------------------------
backwards = client.get_stream(orders, backwards=True, limit=3)
check([e.stream_position for e in backwards] == [6, 5, 4], "backwards with a limit")
middle = client.get_stream(orders, stream_position=3, limit=2)
check([e.stream_position for e in middle] == [3, 4], "forwards from a revision")
expect_error(NotFoundError, lambda: client.get_stream(f"missing-{RUN}"), "reading an unknown stream")

# --- $all: positions, directions, filters -------------------------------------------------
head = client.get_commit_position()
check(head >= position_batch, "the head is at or after the last append")
all_events = [e for e in client.read_all(commit_position=position0) if e.stream_name == orders]
check(len(all_events) == 7, f"$all from a position sees our 7 events, got {len(all_events)}")
check(all_events[0].commit_position == position0, "reading from a commit position includes that event")
positions = [e.commit_position for e in all_events]
check(positions == sorted(positions) and len(set(positions)) == 7, "$all positions are strictly increasing")
back = list(client.read_all(backwards=True, limit=3))
check(len(back) == 3 and back[0].commit_position == head, "$all backwards starts at the head")
check(back[0].commit_position > back[1].commit_position, "$all backwards goes down")
only_paid = list(client.read_all(commit_position=position0, filter_include=["OrderPaid"]))
check([e.type for e in only_paid] == ["OrderPaid"], f"event-type regex filter, got {[e.type for e in only_paid]}")
by_prefix = list(client.read_all(filter_include=[f"order-{RUN}"], filter_by_stream_name=True, filter_by_prefix=True))
check(len(by_prefix) == 7, f"stream-name prefix filter, got {len(by_prefix)}")
excluded = list(client.read_all(commit_position=position0, filter_exclude=["Item.*"]))
check(all(not e.type.startswith("Item") for e in excluded), "exclude filter (negative lookahead)")
check(any(e.type == "OrderPaid" for e in excluded), "exclude filter keeps other events")

# --- catch-up and live subscriptions ----------------------------------------------------------
live_stream = f"live-{RUN}"
client.append_to_stream(live_stream, current_version=StreamState.NO_STREAM, events=[event("A", n) for n in range(3)])
subscription = client.subscribe_to_stream(live_stream, include_caught_up=True)
received, caught_up = [], False
for item in subscription:
    kind = type(item).__name__
    if kind == "CaughtUp":
        caught_up = True
        client.append_to_stream(live_stream, current_version=2, events=[event("A", 3), event("A", 4)])
        continue
    received.append(item.stream_position)
    if len(received) == 5:
        break
subscription.stop()
check(caught_up, "a stream subscription reports caught up")
check(received == [0, 1, 2, 3, 4], f"stream subscription: history then live, got {received}")

resumed = client.subscribe_to_stream(live_stream, stream_position=2)
got = []
for item in resumed:
    got.append(item.stream_position)
    if len(got) == 2:
        break
resumed.stop()
check(got == [3, 4], f"a stream subscription from a revision starts after it, got {got}")

all_sub = client.subscribe_to_all(commit_position=position0, filter_include=[f"live-{RUN}"], filter_by_stream_name=True, filter_by_prefix=True, include_checkpoints=True, include_caught_up=True)
seen, resume_at = [], None
for item in all_sub:
    kind = type(item).__name__
    if kind in ("Checkpoint", "CaughtUp"):
        if kind == "CaughtUp" and len(seen) == 5:
            client.append_to_stream(live_stream, current_version=4, events=event("A", 5))
        continue
    seen.append((item.stream_position, item.commit_position))
    if len(seen) == 3:
        resume_at = item.commit_position
    if len(seen) == 6:
        break
all_sub.stop()
check([s for s, _ in seen] == [0, 1, 2, 3, 4, 5], f"$all subscription with a filter: history then live, got {seen}")

after = client.subscribe_to_all(commit_position=resume_at, filter_include=[f"live-{RUN}"], filter_by_stream_name=True, filter_by_prefix=True)
rest = []
for item in after:
    rest.append(item.stream_position)
    if len(rest) == 3:
        break
after.stop()
check(rest == [3, 4, 5], f"resuming $all from a position delivers what follows it, got {rest}")

# --- metadata -----------------------------------------------------------------------------------
metadata, version = client.get_stream_metadata(orders)
check(metadata == {} and version == StreamState.NO_STREAM, "no metadata yet")
client.set_stream_metadata(orders, metadata={"$maxCount": 2, "owner": "sales"}, current_version=StreamState.NO_STREAM)
metadata, version = client.get_stream_metadata(orders)
check(metadata.get("owner") == "sales" and version == 0, f"metadata round-trips, got {metadata} v{version}")
check([e.stream_position for e in client.get_stream(orders)] == [5, 6], "$maxCount is honoured on reads")

# --- delete and tombstone ----------------------------------------------------------------------
doomed = f"doomed-{RUN}"
client.append_to_stream(doomed, current_version=StreamState.NO_STREAM, events=event("A", 0))
expect_error(WrongCurrentVersionError, lambda: client.delete_stream(doomed, current_version=5), "delete at a wrong revision")
client.delete_stream(doomed, current_version=0)
expect_error(NotFoundError, lambda: client.get_stream(doomed), "a soft-deleted stream reads as not found")
client.append_to_stream(doomed, current_version=StreamState.ANY, events=event("A", 1))
check([e.stream_position for e in client.get_stream(doomed)] == [1], "a soft-deleted stream revives with continued revisions")
client.tombstone_stream(doomed, current_version=StreamState.ANY)
expect_error(StreamIsDeletedError, lambda: client.get_stream(doomed), "reading a tombstoned stream")
# KurrentDB answers the single-event Append call with FAILED_PRECONDITION "... is deleted.",
# which this client maps to FailedPreconditionError (the batch path maps it to StreamIsDeletedError).
try:
    client.append_to_stream(doomed, current_version=StreamState.ANY, events=event("A", 2))
    check(False, "appending to a tombstoned stream (Append) must fail")
except FailedPreconditionError as error:
    check("is deleted" in str(error), f"the error says the stream is deleted: {error}")
expect_error(StreamIsDeletedError, lambda: client.append_to_stream(doomed, current_version=StreamState.ANY, events=[event("A", 2), event("A", 3)]), "appending to a tombstoned stream (BatchAppend)")

# --- multi-stream append (v2 AppendSession) ---------------------------------------------------------
a, b = f"multi-a-{RUN}", f"multi-b-{RUN}"
commit = client.multi_append_to_stream([
    NewEvents(stream_name=a, events=[event("A", 0)], current_version=StreamState.NO_STREAM),
    NewEvents(stream_name=b, events=[event("B", 0), event("B", 1)], current_version=StreamState.NO_STREAM),
])
check(commit > 0, "multi-stream append returns a position")
check(len(client.get_stream(a)) == 1 and len(client.get_stream(b)) == 2, "both streams were written")
expect_error(
    WrongCurrentVersionError,
    lambda: client.multi_append_to_stream([
        NewEvents(stream_name=a, events=[event("A", 1)], current_version=0),
        NewEvents(stream_name=b, events=[event("B", 2)], current_version=0),
    ]),
    "a multi-stream append with one wrong revision",
)
check(len(client.get_stream(a)) == 1, "a failed multi-stream append writes nothing (all or nothing)")

# --- concurrent appenders through one client -------------------------------------------------------
shared = f"shared-{RUN}"
errors = []


def writer(k):
    try:
        for n in range(20):
            client.append_to_stream(shared, current_version=StreamState.ANY, events=event("W", k * 100 + n))
    except Exception as error:  # noqa: BLE001
        errors.append(error)


threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(not errors, f"concurrent appends: {errors[:1]}")
check(len(client.get_stream(shared)) == 80, "80 concurrent appends all recorded")

client.close()
print("streams.py: all checks passed")
