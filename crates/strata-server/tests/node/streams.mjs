// Scenario 1: as `admin` with a password, over TLS — appends with expected revisions,
// reads both ways, a filtered read of `$all`, a catch-up subscription that receives a
// live event, delete and tombstone, and the client's own errors for a wrong expected
// revision and a deleted stream.

import {
  admin, check, collect, equal, expectError, kurrent, run, step, streamName, within,
} from "./lib/common.mjs";

const {
  jsonEvent, NO_STREAM, STREAM_EXISTS, START, END, FORWARDS, BACKWARDS,
  streamNameFilter, eventTypeFilter,
  WrongExpectedVersionError, StreamNotFoundError, StreamDeletedError,
} = kurrent;

const ordered = (n) => jsonEvent({ type: "OrderPlaced", data: { n } });

await run("streams.mjs", async () => {
  const client = admin();
  const orders = streamName("node-orders");

  step("append with expected revision no_stream, then a revision");
  const first = await client.appendToStream(orders, [ordered(0), ordered(1)], {
    streamState: NO_STREAM,
  });
  check(first.success, "first append succeeded");
  equal(first.nextExpectedRevision, 1n, "revision after two events");
  check(first.position !== undefined, "the append result has a position");
  const second = await client.appendToStream(
    orders,
    jsonEvent({ type: "OrderShipped", data: { n: 2 } }),
    { streamState: 1n },
  );
  equal(second.nextExpectedRevision, 2n, "revision after the third event");
  check(
    second.position.commit > first.position.commit,
    `positions grow (${first.position.commit} then ${second.position.commit})`,
  );
  const existing = await client.appendToStream(orders, ordered(3), {
    streamState: STREAM_EXISTS,
  });
  equal(existing.nextExpectedRevision, 3n, "revision after stream_exists");

  step("wrong expected revisions: WrongExpectedVersionError");
  const stale = await expectError(
    "append at revision 1 to a stream at 3",
    WrongExpectedVersionError,
    () => client.appendToStream(orders, ordered(9), { streamState: 1n }),
  );
  equal(stale.streamName, orders, "WrongExpectedVersionError.streamName");
  equal(stale.expectedState, 1n, "WrongExpectedVersionError.expectedState");
  equal(stale.actualState, 3n, "WrongExpectedVersionError.actualState");
  const exists = await expectError(
    "append with no_stream to an existing stream",
    WrongExpectedVersionError,
    () => client.appendToStream(orders, ordered(9), { streamState: NO_STREAM }),
  );
  equal(exists.actualState, 3n, "actualState for no_stream");
  const missing = await expectError(
    "append with stream_exists to a missing stream",
    WrongExpectedVersionError,
    () =>
      client.appendToStream(streamName("node-missing"), ordered(9), {
        streamState: STREAM_EXISTS,
      }),
  );
  equal(missing.actualState, NO_STREAM, "actualState of a missing stream");

  step("read forwards and backwards");
  const forwards = await collect(client.readStream(orders, { direction: FORWARDS }));
  equal(forwards.map((e) => e.event.revision), [0n, 1n, 2n, 3n], "forward revisions");
  equal(
    forwards.map((e) => e.event.type),
    ["OrderPlaced", "OrderPlaced", "OrderShipped", "OrderPlaced"],
    "event types",
  );
  equal(forwards[1].event.data, { n: 1 }, "JSON data of revision 1");
  equal(forwards[0].event.streamId, orders, "streamId");
  check(forwards[0].event.isJson, "isJson");
  check(forwards[0].event.created instanceof Date, "created is a Date");
  const page = await collect(
    client.readStream(orders, { fromRevision: 1n, maxCount: 2 }),
  );
  equal(page.map((e) => e.event.revision), [1n, 2n], "two events from revision 1");
  const backwards = await collect(
    client.readStream(orders, { direction: BACKWARDS, fromRevision: END, maxCount: 3 }),
  );
  equal(backwards.map((e) => e.event.revision), [3n, 2n, 1n], "backward revisions");
  await expectError(
    "read a stream that does not exist",
    StreamNotFoundError,
    () => collect(client.readStream(streamName("node-nothing"))),
  );

  step("read $all with filters");
  const byStream = await collect(
    client.readAll({ filter: streamNameFilter({ prefixes: [orders] }), maxCount: 100 }),
  );
  equal(byStream.map((e) => e.event.streamId), [orders, orders, orders, orders], "$all by stream prefix");
  check(
    byStream.every((e) => e.event.position !== undefined),
    "events from $all have a position",
  );
  const shipped = await collect(
    client.readAll({
      filter: eventTypeFilter({ regex: "^OrderShipped$" }),
      maxCount: 100,
    }),
  );
  check(
    shipped.some((e) => e.event.streamId === orders && e.event.revision === 2n),
    "$all by event type finds the shipped event",
  );
  check(
    shipped.every((e) => e.event.type === "OrderShipped"),
    "$all by event type returns only that type",
  );
  const last = await collect(
    client.readAll({ direction: BACKWARDS, fromPosition: END, maxCount: 1 }),
  );
  equal(last.length, 1, "one event backwards from the end of $all");

  step("catch-up subscription: the history, then a live event");
  const subscription = client.subscribeToStream(orders, { fromRevision: START });
  let caughtUp = false;
  subscription.on("caughtUp", () => {
    caughtUp = true;
  });
  const received = [];
  await within(10_000, "subscription", (async () => {
    for await (const resolved of subscription) {
      received.push(resolved.event.revision);
      if (resolved.event.revision === 3n) {
        // The history is in: this one arrives live.
        await client.appendToStream(orders, ordered(4), { streamState: 3n });
      }
      if (resolved.event.revision === 4n) break;
    }
  })());
  await subscription.unsubscribe();
  equal(received, [0n, 1n, 2n, 3n, 4n], "revisions the subscription received");
  check(caughtUp, "the subscription reported caughtUp");

  step("delete: the stream reads as not found; appending recreates it");
  const deleted = await client.deleteStream(orders, { expectedRevision: 4n });
  check(deleted.position !== undefined, "deleteStream returns a position");
  await expectError(
    "read a deleted stream",
    StreamNotFoundError,
    () => collect(client.readStream(orders)),
  );
  const again = await client.appendToStream(orders, ordered(5));
  equal(again.nextExpectedRevision, 5n, "revision after appending to a deleted stream");
  const afterDelete = await collect(client.readStream(orders));
  equal(afterDelete.map((e) => e.event.revision), [5n], "what reads after the delete");

  step("tombstone: StreamDeletedError on append and read");
  const gone = streamName("node-gone");
  await client.appendToStream(gone, ordered(0));
  const tombstoned = await client.tombstoneStream(gone);
  check(tombstoned.position !== undefined, "tombstoneStream returns a position");
  const appendError = await expectError(
    "append to a tombstoned stream",
    StreamDeletedError,
    () => client.appendToStream(gone, ordered(1)),
  );
  equal(appendError.streamName, gone, "StreamDeletedError.streamName on append");
  await expectError(
    "read a tombstoned stream",
    StreamDeletedError,
    () => collect(client.readStream(gone)),
  );
  await expectError(
    "delete a tombstoned stream",
    StreamDeletedError,
    () => client.deleteStream(gone),
  );
});
