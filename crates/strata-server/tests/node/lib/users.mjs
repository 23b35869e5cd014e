// User management for the Node client. `@kurrent/kurrentdb-client` 1.3.1 has no
// user-management calls of its own (its EventStoreDB predecessor had none either),
// but it ships the generated stubs of KurrentDB's `Users` service. These helpers call
// them the way the client's own commands call theirs (compare
// `dist/persistentSubscription/deletePersistentSubscriptionToStream.js`): through the
// client's channel (`execute`, so the same TLS settings and client certificate) with
// its credentials (`callArguments`), and with its error conversion
// (`convertToCommandError`: `LoginNotFoundError`, `LoginConflictError`,
// `AccessDeniedError`, …).

import { kurrent } from "./common.mjs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(join(process.env.STRATA_NODE_DIR, "package.json"));
const generated = "@kurrent/kurrentdb-client/generated/kurrentdb/protocols/v1";
const pb = require(`${generated}/usermanagement_pb`);
const { UsersClient } = require(`${generated}/usermanagement_grpc_pb`);

/** One unary call of the Users service, named `name` for the client's debug log. */
function unary(client, name, method, request, options) {
  return client.execute(UsersClient, name, (users) =>
    new Promise((resolve, reject) => {
      users[method](request, ...client.callArguments(options ?? {}), (error) => {
        if (error) return reject(kurrent.convertToCommandError(error));
        return resolve();
      });
    }),
  );
}

/** The `Details` stream: every user (no login) or one. */
function details(client, login, options) {
  const request = new pb.DetailsReq();
  if (login !== undefined) {
    request.setOptions(new pb.DetailsReq.Options().setLoginName(login));
  }
  return client.execute(UsersClient, "userDetails", (users) =>
    new Promise((resolve, reject) => {
      const found = [];
      const stream = users.details(request, ...client.callArguments(options ?? {}));
      stream.on("data", (response) => {
        const user = response.getUserDetails();
        found.push({
          loginName: user.getLoginName(),
          fullName: user.getFullName(),
          groups: user.getGroupsList(),
          disabled: user.getDisabled(),
          lastUpdated: user.getLastUpdated()?.getTicksSinceEpoch(),
        });
      });
      stream.on("error", (error) => reject(kurrent.convertToCommandError(error)));
      stream.on("end", () => resolve(found));
    }),
  );
}

export function createUser(client, login, fullName, groups, password, options) {
  const request = new pb.CreateReq().setOptions(
    new pb.CreateReq.Options()
      .setLoginName(login)
      .setFullName(fullName)
      .setGroupsList(groups)
      .setPassword(password),
  );
  return unary(client, "createUser", "create", request, options);
}

export async function getUser(client, login, options) {
  const found = await details(client, login, options);
  if (found.length !== 1) {
    throw new Error(`getUser(${login}): expected one user, got ${found.length}`);
  }
  return found[0];
}

export function listAllUsers(client, options) {
  return details(client, undefined, options);
}

export function changeUserPassword(client, login, currentPassword, newPassword, options) {
  const request = new pb.ChangePasswordReq().setOptions(
    new pb.ChangePasswordReq.Options()
      .setLoginName(login)
      .setCurrentPassword(currentPassword)
      .setNewPassword(newPassword),
  );
  return unary(client, "changeUserPassword", "changePassword", request, options);
}

export function resetUserPassword(client, login, newPassword, options) {
  const request = new pb.ResetPasswordReq().setOptions(
    new pb.ResetPasswordReq.Options().setLoginName(login).setNewPassword(newPassword),
  );
  return unary(client, "resetUserPassword", "resetPassword", request, options);
}

export function disableUser(client, login, options) {
  const request = new pb.DisableReq().setOptions(
    new pb.DisableReq.Options().setLoginName(login),
  );
  return unary(client, "disableUser", "disable", request, options);
}

export function enableUser(client, login, options) {
  const request = new pb.EnableReq().setOptions(
    new pb.EnableReq.Options().setLoginName(login),
  );
  return unary(client, "enableUser", "enable", request, options);
}

export function deleteUser(client, login, options) {
  const request = new pb.DeleteReq().setOptions(
    new pb.DeleteReq.Options().setLoginName(login),
  );
  return unary(client, "deleteUser", "delete", request, options);
}
