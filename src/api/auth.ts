// Who may call what. One table (procedureAccess) says which role each RPC
// needs; authorize() is the whole decision, independent of any transport, so
// the Connect interceptor below and any other request path (e.g. a fast path
// for unary calls) share it.
//
//   no / malformed / unknown key            -> UNAUTHENTICATED
//   project key on an admin RPC              -> PERMISSION_DENIED
//   project key on a project it does not cover -> PERMISSION_DENIED
//
// With no keys configured (KeyRing null) every call is allowed: the server only
// starts that way when bound to loopback (server.ts).
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { apiKeyLengthMax } from "../limits.ts";
import type { ApiKey, KeyRing } from "./keys.ts";
import { requireId } from "./validate.ts";

/** public: no key needed (health checks, the published schema).
 * project: a project key covering every project the request names, or an admin key.
 * admin: an admin key. */
export type Access = "public" | "project" | "admin";

/** Every procedure Tally serves and the role it needs, keyed "package.Service/Method".
 * A procedure missing here needs an admin key: a new RPC is closed until someone
 * decides otherwise (a test checks every served method is listed). */
export const procedureAccess: Readonly<Record<string, Access>> = {
  "tally.budget.v1.BudgetService/RecordCost": "project",
  "tally.budget.v1.BudgetService/CheckBudget": "project",
  "tally.budget.v1.BudgetService/GetProjectCost": "project",
  "tally.budget.v1.BudgetService/GetProjectBudget": "project",
  "tally.budget.v1.BudgetService/SetProjectBudget": "admin",
  // Lists every project (the dashboard, `tally projects`, /metrics): operators only.
  "tally.budget.v1.BudgetService/ListProjects": "admin",
  // Holds, streams and record listings are a project's own business.
  "tally.budget.v1.BudgetService/ReleaseHold": "project",
  "tally.budget.v1.BudgetService/WatchBudget": "project",
  "tally.budget.v1.BudgetService/ListCostRecords": "project",
  // Load balancers and orchestrators probe health without credentials.
  "grpc.health.v1.Health/Check": "public",
  "grpc.health.v1.Health/Watch": "public",
  "grpc.health.v1.Health/List": "public",
  // Reflection serves the schema, which is the published contract (proto/ and
  // the generated clients are public) and holds no data.
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "public",
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "public",
};

/** "package.Service/Method" of a method, built once per method (it is part of
 * every call's auth decision and log line). */
const procedureNames = new WeakMap<DescMethod, string>();
export function procedureOf(method: DescMethod): string {
  let name = procedureNames.get(method);
  if (name === undefined) {
    name = `${method.parent.typeName}/${method.name}`;
    procedureNames.set(method, name);
  }
  return name;
}

export function accessOf(procedure: string): Access {
  return procedureAccess[procedure] ?? "admin";
}

/** The caller, once authenticated. keyId is safe to log; the key is never kept. */
export interface Principal {
  /** "open": no keys configured (loopback only); "anonymous": a public RPC without a key. */
  readonly role: "admin" | "project" | "open" | "anonymous";
  readonly keyId: string | null;
  covers(projectId: string): boolean;
}

const openPrincipal: Principal = { role: "open", keyId: null, covers: () => true };
const anonymousPrincipal: Principal = { role: "anonymous", keyId: null, covers: () => false };

function principalOf(key: ApiKey): Principal {
  if (key.role === "admin") return { role: "admin", keyId: key.id, covers: () => true };
  return {
    role: "project",
    keyId: key.id,
    covers: (projectId) => key.projects.has(projectId) || key.projectPrefixes.some((prefix) => projectId.startsWith(prefix)),
  };
}

/** The caller for the Connect handlers (set by authGate or authInterceptor);
 * null until authenticated. */
export const principalKey = createContextKey<Principal | null>(null, { description: "tally principal" });

/** Step 1: who is calling. `authorization` is the raw Authorization header
 * value (null when absent). Public procedures need no key. */
export function authenticate(keys: KeyRing | null, authorization: string | null, procedure: string): Principal {
  if (keys === null) return openPrincipal;
  if (accessOf(procedure) === "public") return anonymousPrincipal;
  if (authorization === null || authorization === "") {
    throw new ConnectError(`${procedure} needs an API key: send the header "Authorization: Bearer <key>"`, Code.Unauthenticated);
  }
  const match = /^Bearer +(\S+) *$/i.exec(authorization.length > apiKeyLengthMax + 16 ? "" : authorization);
  if (match === null) {
    throw new ConnectError('the Authorization header must be "Bearer <key>"', Code.Unauthenticated);
  }
  const key = keys.find(match[1]!);
  // Say nothing about why (unknown, revoked, mistyped): the key is not valid.
  if (key === undefined) throw new ConnectError("the API key is not valid", Code.Unauthenticated);
  return principalOf(key);
}

/** Step 2: may this principal's role call this procedure at all. */
export function authorizeProcedure(principal: Principal, procedure: string): void {
  if (accessOf(procedure) === "admin" && principal.role === "project") {
    throw new ConnectError(`${procedure} needs an admin key; key "${principal.keyId}" is a project key`, Code.PermissionDenied);
  }
}

/** Step 3: may this principal touch these projects. Project keys must cover
 * every id; an id that is not even valid is INVALID_ARGUMENT, as the handler
 * would say. */
export function authorizeProjects(principal: Principal, procedure: string, projectIds: readonly string[]): void {
  if (principal.role !== "project") return;
  if (projectIds.length === 0) {
    throw new ConnectError(`${procedure} names no project; key "${principal.keyId}" may only act on its own projects`, Code.PermissionDenied);
  }
  for (const projectId of projectIds) {
    requireId("project_id", projectId);
    if (!principal.covers(projectId)) {
      throw new ConnectError(`key "${principal.keyId}" does not cover project "${projectId}"`, Code.PermissionDenied);
    }
  }
}

/** The whole decision for one request: the principal, or a ConnectError. */
export function authorize(keys: KeyRing | null, authorization: string | null, procedure: string, projectIds: readonly string[]): Principal {
  const principal = authenticate(keys, authorization, procedure);
  authorizeProcedure(principal, procedure);
  authorizeProjects(principal, procedure, projectIds);
  return principal;
}

/** The projects a request message names: its project_id (and project_ids, if a
 * future message carries several). Public RPCs name none. */
export function projectIdsOf(message: unknown): string[] {
  const m = message as { projectId?: unknown; projectIds?: unknown };
  const ids: string[] = [];
  if (typeof m.projectId === "string") ids.push(m.projectId);
  if (Array.isArray(m.projectIds)) for (const id of m.projectIds) if (typeof id === "string") ids.push(id);
  return ids;
}

/** Connect's request gate: runs once the headers are in, before the body is
 * read, decompressed or parsed, so a caller without a valid key (or a project
 * key on an admin RPC) costs the server no body work. `onDenied` lets the
 * server log the refusal (interceptors never see gated calls). */
export function authGate(keys: () => KeyRing | null, onDenied?: (procedure: string, error: ConnectError, principal: Principal | null) => void) {
  return (ctx: HandlerContext): void => {
    const procedure = procedureOf(ctx.method);
    let principal: Principal | null = null;
    try {
      const ring = keys();
      // Without keys nobody's header is read (reading it builds a Headers).
      principal = ring === null ? openPrincipal : authenticate(ring, ctx.requestHeader.get("authorization"), procedure);
      authorizeProcedure(principal, procedure);
    } catch (error) {
      onDenied?.(procedure, ConnectError.from(error), principal);
      throw error;
    }
    ctx.values.set(principalKey, principal);
  };
}

/** The Connect adapter for the per-project check: the request message names
 * the projects, so this runs once it is decoded (for client streams, on every
 * message). Authenticates here too if no gate did, so it is safe on its own. */
export function authInterceptor(keys: () => KeyRing | null): Interceptor {
  return (next) => async (req) => {
    const procedure = procedureOf(req.method);
    let principal = req.contextValues.get(principalKey);
    if (principal === null) {
      const ring = keys();
      principal = ring === null ? openPrincipal : authenticate(ring, req.header.get("authorization"), procedure);
      // Set before the checks below, so a denied call is logged with its key id.
      req.contextValues.set(principalKey, principal);
      authorizeProcedure(principal, procedure);
    }
    if (principal.role !== "project") return next(req);
    const scoped = principal;
    if (!req.stream) {
      authorizeProjects(scoped, procedure, projectIdsOf(req.message));
      return next(req);
    }
    const messages = req.message;
    return next({
      ...req,
      message: (async function* () {
        for await (const message of messages) {
          authorizeProjects(scoped, procedure, projectIdsOf(message));
          yield message;
        }
      })(),
    });
  };
}
