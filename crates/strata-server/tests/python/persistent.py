"""Acceptance test: persistent subscriptions (competing consumers) with the official
KurrentDB Python client against `strata serve`.

Run with STRATA_GRPC=host:port pointing at a running server. Exits non-zero with a
message on the first failure. Stream and group names are unique per run, so the script
can run against a store that already holds data.

Every wait is bounded: subscriptions are read with a gRPC deadline and polls give up
after POLL_SECONDS, so a broken server fails the script instead of hanging it.
"""

import os
import sys
import threading
import time
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import AlreadyExistsError, NotFoundError

ADDR = os.environ["STRATA_GRPC"]
RUN = uuid.uuid4().hex[:8]
POLL_SECONDS = 15.0
# Deadline of each subscription call: far above what a healthy run needs.
READ_DEADLINE = 60.0


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.stderr.flush()
        # Not sys.exit: open subscriptions keep gRPC threads alive, which would block it.
        os._exit(1)


def expect_error(kind, action, message):
    try:
        action()
    except kind:
        return
    except Exception as error:  # noqa: BLE001
        check(False, f"{message}: expected {kind.__name__}, got {type(error).__name__}: {error}")
    check(False, f"{message}: expected {kind.__name__}, nothing was raised")


def eventually(what, condition):
    give_up = time.monotonic() + POLL_SECONDS
    while time.monotonic() < give_up:
        if condition():
            return
        time.sleep(0.05)
    check(False, f"never happened: {what}")


def new_events(kind, count):
    return [NewEvent(type=kind, data=f'{{"n": {n}}}'.encode()) for n in range(count)]


# STRATA_URI, when set, is the whole connection string (TLS runs set it).
client = KurrentDBClient(uri=os.environ.get("STRATA_URI", f"kurrentdb://{ADDR}?tls=false"))

# --- create, exists -----------------------------------------------------------------
jobs = f"ps-jobs-{RUN}"
workers = f"workers-{RUN}"
client.create_subscription_to_stream(
    workers, jobs, consumer_strategy="RoundRobin", min_checkpoint_count=1, max_checkpoint_count=1
)
expect_error(
    AlreadyExistsError,
    lambda: client.create_subscription_to_stream(workers, jobs),
    "creating a group twice",
)

# --- two competing consumers share the events, each exactly once --------------------
COUNT = 40
received = {0: [], 1: []}
lock = threading.Lock()
all_received = threading.Event()
errors = []
subscriptions = [
    client.read_subscription_to_stream(workers, jobs, event_buffer_size=5, timeout=READ_DEADLINE)
    for _ in range(2)
]


def work(index, subscription):
    try:
        for recorded in subscription:
            subscription.ack(recorded)
            with lock:
                received[index].append(recorded.id)
                if sum(len(ids) for ids in received.values()) >= COUNT:
                    all_received.set()
    except Exception as error:  # noqa: BLE001
        errors.append(error)
        all_received.set()


threads = [threading.Thread(target=work, args=(i, s), daemon=True) for i, s in enumerate(subscriptions)]
for thread in threads:
    thread.start()
# Appended after both consumers are connected, so round robin has both to choose from.
appended = new_events("JobQueued", COUNT)
client.append_to_stream(jobs, current_version=StreamState.NO_STREAM, events=appended)
check(all_received.wait(POLL_SECONDS), f"only {sum(map(len, received.values()))} of {COUNT} events arrived")
check(not errors, f"a consumer failed: {errors}")
# Every ack reached the server: the checkpoint is at the last event.
eventually(
    "the checkpoint reaches the last event",
    lambda: client.get_subscription_info(workers, jobs).last_checkpointed_event_position == str(COUNT - 1),
)
for subscription in subscriptions:
    subscription.stop()
for thread in threads:
    thread.join(POLL_SECONDS)
together = received[0] + received[1]
check(len(together) == len(set(together)), "an event was delivered to both consumers (or twice)")
check(set(together) == {e.id for e in appended}, "the consumers together received every event")
check(received[0] and received[1], f"both consumers got work: {len(received[0])} and {len(received[1])}")

# --- get info, list, update ---------------------------------------------------------
info = client.get_subscription_info(workers, jobs)
check(info.group_name == workers and info.event_source == jobs, f"info names the group: {info}")
check(info.consumer_strategy == "RoundRobin", f"strategy is kept: {info.consumer_strategy}")
check(info.start_from == "0", f"start from the beginning: {info.start_from!r}")
client.update_subscription_to_stream(workers, jobs, max_retry_count=3)
check(client.get_subscription_info(workers, jobs).max_retry_count == 3, "update changes the settings")
listed = [(s.event_source, s.group_name) for s in client.list_subscriptions_to_stream(jobs)]
check(listed == [(jobs, workers)], f"list for the stream: {listed}")

# --- nack park, retries that park, replay -------------------------------------------
poison = f"ps-poison-{RUN}"
careful = f"careful-{RUN}"
client.create_subscription_to_stream(careful, poison, max_retry_count=1)
bad, retried, good = new_events("Mail", 3)
client.append_to_stream(poison, current_version=StreamState.NO_STREAM, events=[bad, retried, good])
# One event at a time, so each delivery follows the previous ack or nack.
subscription = client.read_subscription_to_stream(careful, poison, event_buffer_size=1, timeout=READ_DEADLINE)
first = next(subscription)
check(first.id == bad.id and first.retry_count == 0, "the first event comes first, not retried")
subscription.nack(first, "park")
second = next(subscription)
check(second.id == retried.id and second.retry_count == 0, "then the second")
subscription.nack(second, "retry")
again = next(subscription)
check(again.id == retried.id and again.retry_count == 1, f"a retried event comes back with retry_count 1, got {again.retry_count}")
subscription.nack(again, "retry")  # over max_retry_count=1: parked
third = next(subscription)
check(third.id == good.id, "the group moves on past parked events")
subscription.ack(third)
eventually(
    "two events are parked",
    lambda: client.get_subscription_info(careful, poison).parked_message_count == 2,
)
client.replay_parked_events(careful, poison)
replayed = [next(subscription), next(subscription)]
check([e.id for e in replayed] == [bad.id, retried.id], "replay delivers the parked events again, in order")
for recorded in replayed:
    subscription.ack(recorded)
eventually(
    "nothing is parked after the replay",
    lambda: client.get_subscription_info(careful, poison).parked_message_count == 0,
)
subscription.stop()

# --- a $all group with a stream filter ----------------------------------------------
everything = f"everything-{RUN}"
prefix = f"psall-{RUN}-"
client.create_subscription_to_all(
    everything, filter_include=[prefix + ".*"], filter_by_stream_name=True, from_end=True
)
a = new_events("A", 2)
client.append_to_stream(prefix + "a", current_version=StreamState.ANY, events=a)
client.append_to_stream(f"other-{RUN}", current_version=StreamState.ANY, events=new_events("O", 2))
b = new_events("B", 1)
client.append_to_stream(prefix + "b", current_version=StreamState.ANY, events=b)
subscription = client.read_subscription_to_all(everything, timeout=READ_DEADLINE)
got = []
for _ in range(3):
    recorded = next(subscription)
    subscription.ack(recorded)
    got.append((recorded.stream_name, recorded.id))
check(got == [(prefix + "a", a[0].id), (prefix + "a", a[1].id), (prefix + "b", b[0].id)], f"$all group filters by stream: {got}")
subscription.stop()
info = client.get_subscription_info(everything)
check(info.event_source == "$all", f"$all group's source: {info.event_source}")
groups = {(s.event_source, s.group_name) for s in client.list_subscriptions()}
check({(jobs, workers), (poison, careful), ("$all", everything)} <= groups, f"list shows every group: {groups}")

# --- delete -------------------------------------------------------------------------
client.delete_subscription(workers, jobs)
client.delete_subscription(careful, poison)
client.delete_subscription(everything)
expect_error(NotFoundError, lambda: client.get_subscription_info(workers, jobs), "info of a deleted group")
expect_error(NotFoundError, lambda: client.delete_subscription(everything), "deleting a deleted group")
check(client.list_subscriptions_to_stream(jobs) == [], "a deleted group is not listed")

print("persistent.py: all checks passed")
