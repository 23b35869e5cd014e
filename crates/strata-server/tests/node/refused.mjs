// Scenario 4: refusals. A wrong password and an unknown user are refused at
// authentication: gRPC UNAUTHENTICATED, which this client raises as
// AccessDeniedError (`convertToCommandError` in dist/utils/CommandError.js maps
// status UNAUTHENTICATED to it; the client has no NotAuthenticated error), on the
// gRPC paths (append, subscribe) and the Rust-bridge path (reads). A client that trusts another CA
// cannot connect; the same client with `tlsVerifyCert=false` can (so the CA was the
// reason).

import {
  admin, check, collect, connect, env, equal, expectError, grpc, kurrent, run, step,
  streamName, within,
} from "./lib/common.mjs";

const { jsonEvent, AccessDeniedError } = kurrent;
const UNAUTHENTICATED = grpc.status.UNAUTHENTICATED;
const event = () => jsonEvent({ type: "Refused", data: {} });

await run("refused.mjs", async () => {
  const stream = streamName("node-refused");
  await admin().appendToStream(stream, event());

  for (const [login, password, why] of [
    ["admin", "wrong-password", "a wrong password"],
    ["mallory", "changeit", "an unknown user"],
  ]) {
    step(why);
    const client = connect({ login, password });
    await expectError(`append with ${why}`, AccessDeniedError,
      () => client.appendToStream(stream, event()), { code: UNAUTHENTICATED });
    await expectError(`read with ${why}`, AccessDeniedError,
      () => collect(client.readStream(stream)));
    await expectError(`subscribe with ${why}`, AccessDeniedError, () =>
      within(10_000, "subscription", (async () => {
        for await (const _ of client.subscribeToStream(stream)) return;
      })()), { code: UNAUTHENTICATED });
  }

  step("a client trusting another CA cannot connect");
  // The handshake fails in the client. Subscriptions raise UnavailableError; appends
  // the unconverted UNAVAILABLE of the client's server-features probe
  // (dist/Client/ServerFeatures.js); reads through its Rust bridge UnavailableError.
  const otherCa = env("STRATA_OTHER_CA");
  const distrustful = connect({ login: "admin", password: "changeit", ca: otherCa });
  const UNAVAILABLE = grpc.status.UNAVAILABLE;
  const subscribeError = await expectError(
    "subscribe trusting another CA",
    kurrent.UnavailableError,
    () => within(10_000, "subscription", (async () => {
      for await (const _ of distrustful.subscribeToStream(stream)) return;
    })()),
    { code: UNAVAILABLE },
  );
  check(
    /certificate/.test(subscribeError.message),
    `the refusal names the certificate: ${subscribeError.message}`,
  );
  await expectError("append trusting another CA", Error,
    () => distrustful.appendToStream(stream, event()), { code: UNAVAILABLE });
  await expectError("read trusting another CA", kurrent.UnavailableError,
    () => collect(distrustful.readStream(stream)));

  step("trusting another CA, but with tlsVerifyCert=false: connects");
  const trusting = connect({
    login: "admin",
    password: "changeit",
    ca: otherCa,
    query: "&tlsVerifyCert=false",
  });
  const appended = await trusting.appendToStream(stream, event());
  equal(appended.nextExpectedRevision, 1n, "append without verifying the certificate");
  const read = await collect(trusting.readStream(stream));
  equal(read.length, 2, "events read without verifying the certificate");
});
