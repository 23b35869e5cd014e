// Scenario 3: a client certificate whose common name is `alice` (signed by the test
// CA, clientAuth usage) authenticates as alice with `userCertFile`/`userKeyFile`, with
// no password: she may use a stream her group may, and is refused `$all` as alice
// (not admin) would be. A certificate naming no user is refused at authentication.

import {
  admin, collect, connect, env, equal, expectError, grpc, kurrent, run, step,
  streamName, within,
} from "./lib/common.mjs";
import { createUser, getUser } from "./lib/users.mjs";

const { jsonEvent, NO_STREAM, AccessDeniedError } = kurrent;
const UNAUTHENTICATED = grpc.status.UNAUTHENTICATED;

/** A client that presents the certificate `cert`/`key` and sends no credentials. */
function withCertificate(cert, key) {
  const files =
    `&userCertFile=${encodeURIComponent(cert)}&userKeyFile=${encodeURIComponent(key)}`;
  return connect({ query: files });
}

await run("certificate.mjs", async () => {
  const root = admin();
  await createUser(root, "alice", "Alice Liddell", ["sales"], "alice-password");
  const sales = streamName("node-certified");
  await root.setStreamMetadata(sales, {
    acl: { readRoles: ["sales"], writeRoles: ["sales"] },
  });

  step("alice by certificate: append, read, her own details");
  const alice = withCertificate(env("STRATA_ALICE_CERT"), env("STRATA_ALICE_KEY"));
  const appended = await alice.appendToStream(
    sales,
    jsonEvent({ type: "Certified", data: { by: "certificate" } }),
    { streamState: NO_STREAM },
  );
  equal(appended.nextExpectedRevision, 0n, "alice's append by certificate");
  const read = await collect(alice.readStream(sales));
  equal(read.map((e) => e.event.data), [{ by: "certificate" }], "what alice reads");
  equal((await getUser(alice, "alice")).loginName, "alice", "who the certificate is");

  step("the certificate is alice, not an administrator");
  await expectError("alice (certificate) reads $all", AccessDeniedError, () =>
    collect(alice.readAll({ maxCount: 1 })),
  );
  await expectError("alice (certificate) reads admin's details", AccessDeniedError, () =>
    getUser(alice, "admin"),
  );

  step("a certificate naming no user: refused at authentication");
  // The server answers every call on this connection UNAUTHENTICATED, as KurrentDB's
  // authentication middleware does when the certificate's user cannot log in. What the
  // client raises depends on its path: a subscription converts the status
  // (AccessDeniedError); commands that first ask for the server's features (append,
  // here) get the probe's unconverted gRPC error (dist/Client/ServerFeatures.js
  // rejects with it as is); reads through its Rust bridge report UnavailableError,
  // as they do for any failed connection.
  const nobody = withCertificate(env("STRATA_NOBODY_CERT"), env("STRATA_NOBODY_KEY"));
  await expectError(
    "subscribe with a certificate for an unknown login",
    AccessDeniedError,
    () => within(10_000, "subscription", (async () => {
      for await (const _ of nobody.subscribeToStream(sales)) return;
    })()),
    { code: UNAUTHENTICATED },
  );
  await expectError(
    "append with a certificate for an unknown login",
    Error,
    () => nobody.appendToStream(sales, jsonEvent({ type: "Nope", data: {} })),
    { code: UNAUTHENTICATED },
  );
  await expectError(
    "read with a certificate for an unknown login",
    kurrent.UnavailableError,
    () => collect(nobody.readStream(sales)),
  );
  const after = await collect(root.readStream(sales));
  equal(after.length, 1, "events in the stream after the refusals");
});
