// What every acceptance script shares: the installed client, the connection strings
// for the server under test, and checks that fail the script with a clear message.
//
// The client is installed by `tests/kurrentdb_node.rs` outside the source tree (in
// `STRATA_NODE_DIR`), so it is loaded with a `require` rooted there: ES modules do
// not look packages up through NODE_PATH.

import { createRequire } from "node:module";
import { join } from "node:path";
import { randomUUID } from "node:crypto";

/** An environment variable the Rust test sets; its absence is a harness error. */
export function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set (run through tests/kurrentdb_node.rs)`);
  }
  return value;
}

const require = createRequire(join(env("STRATA_NODE_DIR"), "package.json"));

/** `@kurrent/kurrentdb-client`. */
export const kurrent = require("@kurrent/kurrentdb-client");
/** The gRPC library the client uses (for status codes). */
export const grpc = require("@grpc/grpc-js");

/** A fresh stream name with `prefix`. */
export function streamName(prefix) {
  return `${prefix}-${randomUUID()}`;
}

/**
 * The connection string to the server under test over TLS, trusting `ca`
 * (default: the test CA), with `login:password` if given and `query` appended.
 */
export function connectionString({ login, password, ca, query = "" } = {}) {
  const user =
    login === undefined
      ? ""
      : `${encodeURIComponent(login)}:${encodeURIComponent(password)}@`;
  const caFile = encodeURIComponent(ca ?? env("STRATA_CA"));
  return `kurrentdb://${user}${env("STRATA_GRPC")}?tls=true&tlsCAFile=${caFile}${query}`;
}

const clients = [];

/** A client for `connectionString(options)`, disposed of when the script ends. */
export function connect(options) {
  const client = kurrent.KurrentDBClient.connectionString(connectionString(options));
  clients.push(client);
  return client;
}

/** The default administrator, with its password. */
export function admin() {
  return connect({ login: "admin", password: "changeit" });
}

export function check(condition, message) {
  if (!condition) {
    throw new Error(`check failed: ${message}`);
  }
}

export function equal(actual, expected, what) {
  const show = (v) =>
    JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));
  if (show(actual) !== show(expected)) {
    throw new Error(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

/** Describes an error for messages: its class, type, gRPC code and message. */
export function describe(error) {
  if (!(error instanceof Error)) {
    return String(error);
  }
  const code = error.code === undefined ? "" : ` code=${error.code}`;
  const type = error.type === undefined ? "" : ` type=${error.type}`;
  return `${error.constructor.name}${type}${code}: ${error.message}`;
}

/**
 * Runs `action` (a function returning a promise), which must fail with an instance
 * of `ErrorClass` (and gRPC status `code`, if given); returns the error.
 */
export async function expectError(what, ErrorClass, action, { code } = {}) {
  let result;
  try {
    result = await action();
  } catch (error) {
    if (!(error instanceof ErrorClass)) {
      throw new Error(
        `${what}: expected ${ErrorClass.name}, got ${describe(error)}`,
        { cause: error },
      );
    }
    if (code !== undefined && error.code !== code) {
      throw new Error(
        `${what}: expected ${ErrorClass.name} with gRPC code ${code}, got ${describe(error)}`,
        { cause: error },
      );
    }
    return error;
  }
  throw new Error(
    `${what}: expected ${ErrorClass.name}, but it succeeded (${describe(result)})`,
  );
}

/** Every event of an async iterable (a read), in order. */
export async function collect(iterable) {
  const events = [];
  for await (const resolved of iterable) {
    events.push(resolved);
  }
  return events;
}

/** `promise`, or a failure naming `what` after `ms` milliseconds. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs the script's `body` and exits: 0 when it completes, 1 with the error
 * (and its cause) on stderr otherwise. Each step is logged to stdout.
 */
export async function run(name, body) {
  const started = Date.now();
  try {
    await body();
  } catch (error) {
    console.error(`${name}: FAILED: ${describe(error)}`);
    console.error(error.stack);
    if (error.cause) {
      console.error(`caused by: ${describe(error.cause)}`);
    }
    process.exit(1);
  }
  await Promise.allSettled(clients.map((client) => client.dispose()));
  console.log(`${name}: ok (${Date.now() - started} ms)`);
  process.exit(0);
}

/** Logs a step of the scenario. */
export function step(message) {
  console.log(`- ${message}`);
}
