// Scenario 2: users and stream ACLs. As `admin`: create `alice` (group `sales`) and
// `bob` through the Users service, read them, change and reset a password, disable
// and enable, delete. As `alice`: append to and read a stream whose `$acl` allows
// `sales`; `$all`, `$settings`, the stream's metadata and creating a persistent
// subscription are refused with AccessDeniedError; a persistent subscription that
// admin created is consumed (read, ack). `bob` (no group) is refused the stream.

import {
  admin, check, collect, connect, equal, expectError, grpc, kurrent, run, step,
  streamName, within,
} from "./lib/common.mjs";
import {
  changeUserPassword, createUser, deleteUser, disableUser, enableUser, getUser,
  listAllUsers, resetUserPassword,
} from "./lib/users.mjs";

const {
  jsonEvent, NO_STREAM, START,
  persistentSubscriptionToStreamSettingsFromDefaults,
  AccessDeniedError, LoginConflictError, LoginNotFoundError,
} = kurrent;

const UNAUTHENTICATED = grpc.status.UNAUTHENTICATED;
const sale = (n) => jsonEvent({ type: "SaleMade", data: { n } });

/** `login:password` must be refused at authentication (gRPC UNAUTHENTICATED). */
async function refusedLogin(login, password, why) {
  const client = connect({ login, password });
  await expectError(
    `${login} ${why}`,
    AccessDeniedError,
    () => getUser(client, login),
    { code: UNAUTHENTICATED },
  );
}

/** The next event `events` (a subscription's iterator) delivers. */
async function next(events, what) {
  const { value, done } = await within(10_000, what, events.next());
  if (done) throw new Error(`${what}: the subscription ended`);
  return value;
}

await run("users.mjs", async () => {
  const root = admin();

  step("create users, read them back");
  await createUser(root, "alice", "Alice Liddell", ["sales"], "alice-1");
  await createUser(root, "bob", "Bob", [], "bob-1");
  await expectError(
    "create alice twice",
    LoginConflictError,
    () => createUser(root, "alice", "Alice again", [], "x"),
  );
  const alice = await getUser(root, "alice");
  equal(
    [alice.loginName, alice.fullName, alice.groups, alice.disabled],
    ["alice", "Alice Liddell", ["sales"], false],
    "alice's details",
  );
  // KurrentDB's ticks: 100 ns units since the Unix epoch.
  const updated = Number(BigInt(alice.lastUpdated ?? 0) / 10_000n);
  check(
    Math.abs(updated - Date.now()) < 10 * 60_000,
    `alice's lastUpdated is about now (${alice.lastUpdated} ticks)`,
  );
  const logins = (await listAllUsers(root)).map((user) => user.loginName);
  for (const login of ["admin", "alice", "bob"]) {
    check(logins.includes(login), `listAllUsers includes ${login} (got ${logins})`);
  }
  await expectError(
    "getUser of a login that does not exist",
    LoginNotFoundError,
    () => getUser(root, "nobody"),
  );

  step("alice reads herself, may not manage users");
  const alice1 = connect({ login: "alice", password: "alice-1" });
  equal((await getUser(alice1, "alice")).loginName, "alice", "alice reads her own details");
  await expectError("alice lists users", AccessDeniedError, () => listAllUsers(alice1));
  await expectError(
    "alice creates a user",
    AccessDeniedError,
    () => createUser(alice1, "eve", "Eve", ["$admins"], "eve-1"),
  );

  step("changeUserPassword (as alice), resetUserPassword (as admin)");
  await changeUserPassword(alice1, "alice", "alice-1", "alice-2");
  await refusedLogin("alice", "alice-1", "with the password she changed");
  await getUser(connect({ login: "alice", password: "alice-2" }), "alice");
  await resetUserPassword(root, "alice", "alice-3");
  await refusedLogin("alice", "alice-2", "with the password admin reset");
  const as = connect({ login: "alice", password: "alice-3" });
  await getUser(as, "alice");

  step("disableUser, enableUser");
  await disableUser(root, "alice");
  equal((await getUser(root, "alice")).disabled, true, "alice disabled");
  await refusedLogin("alice", "alice-3", "while disabled");
  await enableUser(root, "alice");
  equal((await getUser(root, "alice")).disabled, false, "alice enabled again");
  await getUser(as, "alice");

  step("a stream whose $acl allows sales");
  const sales = streamName("node-sales");
  const acl = {
    readRoles: ["sales"],
    writeRoles: ["sales"],
    deleteRoles: ["$admins"],
    metaReadRoles: ["sales"],
    metaWriteRoles: ["$admins"],
  };
  await root.setStreamMetadata(sales, { acl });
  const { metadata } = await as.getStreamMetadata(sales);
  equal(metadata?.acl, acl, "the $acl alice reads back");

  const appended = await as.appendToStream(sales, [sale(0), sale(1)], {
    streamState: NO_STREAM,
  });
  equal(appended.nextExpectedRevision, 1n, "alice's append");
  const read = await collect(as.readStream(sales));
  equal(read.map((e) => e.event.data.n), [0, 1], "what alice reads");

  step("refusals for alice: $all, $settings, the stream's metadata");
  await expectError("alice reads $all", AccessDeniedError, () =>
    collect(as.readAll({ maxCount: 10 })),
  );
  await expectError("alice writes $settings", AccessDeniedError, () =>
    as.appendToStream("$settings", jsonEvent({ type: "Settings", data: {} })),
  );
  await expectError("alice sets the stream's metadata", AccessDeniedError, () =>
    as.setStreamMetadata(sales, { acl: { readRoles: ["$all"] } }),
  );
  await expectError("alice deletes the stream", AccessDeniedError, () =>
    as.deleteStream(sales),
  );

  step("bob is not in sales");
  const bob = connect({ login: "bob", password: "bob-1" });
  await expectError("bob appends", AccessDeniedError, () =>
    bob.appendToStream(sales, sale(9)),
  );
  await expectError("bob reads", AccessDeniedError, () =>
    collect(bob.readStream(sales)),
  );

  step("persistent subscriptions: admin creates, alice consumes, alice may not create");
  const settings = persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START });
  await root.createPersistentSubscriptionToStream(sales, "node-group", settings);
  await expectError("alice creates a group", AccessDeniedError, () =>
    as.createPersistentSubscriptionToStream(sales, "alice-group", settings),
  );
  // One event in flight at a time: the second delivery shows the first ack arrived.
  const consumer = as.subscribeToPersistentSubscriptionToStream(sales, "node-group", {
    bufferSize: 1,
  });
  const events = consumer[Symbol.asyncIterator]();
  const first = await next(events, "alice's first persistent event");
  equal([first.event.revision, first.event.data], [0n, { n: 0 }], "the first event");
  equal(first.retryCount, 0, "the first event's retryCount");
  await consumer.ack(first);
  const second = await next(events, "the event after the ack");
  equal(second.event.revision, 1n, "the event after the acked one");
  await consumer.ack(second);
  await consumer.unsubscribe();
  await expectError("bob consumes the group", AccessDeniedError, () =>
    next(
      bob.subscribeToPersistentSubscriptionToStream(sales, "node-group")[Symbol.asyncIterator](),
      "bob's persistent subscription",
    ),
  );

  step("deleteUser");
  await deleteUser(root, "bob");
  await expectError("getUser of a deleted user", LoginNotFoundError, () =>
    getUser(root, "bob"),
  );
  await refusedLogin("bob", "bob-1", "once deleted");
});
