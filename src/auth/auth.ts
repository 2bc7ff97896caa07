// Who may call what. One table (procedureAccess) says which role each RPC
// needs; authorize() is the whole decision, independent of any transport, so
// the Connect interceptor below and any other request path (e.g. a fast path
// for unary calls) share it.
//
//   no / malformed / unknown key            -> UNAUTHENTICATED
//   project key on an admin RPC              -> PERMISSION_DENIED
//   project key on a project it does not cover -> PERMISSION_DENIED
//     (except a read of a descendant of a project it covers: a key scoped to
//     an organisation or team reads its children, decision 0013)
//
// With no keys configured (KeyRing null) every call is allowed: the server only
// starts that way when bound to loopback (server.ts).
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { apiKeyLengthMax } from "../limits.ts";
import type { ApiKey, KeyRing } from "./keys.ts";
import type { KeyRateLimiter } from "./rate-limit.ts";
import { requireId } from "../api/validate.ts";
import { scopeCoversChain } from "../ledger/budget-tree.ts";

/** Reads a key may make of a descendant of a project it covers (a key scoped
 * to a parent reads its children's spend, budget, ledger and events). Writes
 * (RecordCost, CheckBudget, which may reserve, ReleaseHold) still need the
 * project itself: an organisation's key does not spend in a team's name. */
export const treeReadProcedures: ReadonlySet<string> = new Set([
  "tally.budget.v1.BudgetService/GetProjectCost",
  "tally.budget.v1.BudgetService/GetProjectBudget",
  "tally.budget.v1.BudgetService/ListCostRecords",
  "tally.budget.v1.BudgetService/WatchBudget",
]);

/** A project's chain, itself first then each ancestor (the store's parent
 * links), for tree reads. */
export type ChainOf = (projectId: string) => Promise<readonly string[]>;

/** The chains of the projects a tree read names that the key does not cover
 * itself (none for any other call): read before authorizeProjects, which
 * stays synchronous. */
export async function chainsForTreeRead(
  principal: Principal,
  procedure: string,
  projectIds: readonly string[],
  chainOf: ChainOf | undefined,
): Promise<ReadonlyMap<string, readonly string[]> | undefined> {
  if (chainOf === undefined || principal.role !== "project" || !treeReadProcedures.has(procedure)) return undefined;
  let chains: Map<string, readonly string[]> | undefined;
  for (const projectId of projectIds) {
    if (principal.covers(projectId)) continue;
    requireId("project_id", projectId);
    chains ??= new Map();
    chains.set(projectId, await chainOf(projectId));
  }
  return chains;
}

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
  // Archiving and deleting projects is operators' cleanup (issue 21): a project
  // key could otherwise hide or erase its own spend history.
  "tally.budget.v1.BudgetService/ArchiveProject": "admin",
  "tally.budget.v1.BudgetService/UnarchiveProject": "admin",
  "tally.budget.v1.BudgetService/DeleteProject": "admin",
  // The price catalog prices every project's calls: only operators change or
  // read it (a project's negotiated price is not another project's business).
  "tally.budget.v1.BudgetService/SetModelPrice": "admin",
  "tally.budget.v1.BudgetService/ListModelPrices": "admin",
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
  /** The key that authenticated (its expiry, rate limit, stored hash); null without one. */
  readonly key: ApiKey | null;
  covers(projectId: string): boolean;
}

const openPrincipal: Principal = { role: "open", keyId: null, key: null, covers: () => true };
const anonymousPrincipal: Principal = { role: "anonymous", keyId: null, key: null, covers: () => false };

function principalOf(key: ApiKey): Principal {
  if (key.role === "admin") return { role: "admin", keyId: key.id, key, covers: () => true };
  return {
    role: "project",
    keyId: key.id,
    key,
    covers: (projectId) => key.projects.has(projectId) || key.projectPrefixes.some((prefix) => projectId.startsWith(prefix)),
  };
}

/** The caller for the Connect handlers (set by authGate or authInterceptor);
 * null until authenticated. */
export const principalKey = createContextKey<Principal | null>(null, { description: "tally principal" });

/** Step 1: who is calling. `authorization` is the raw Authorization header
 * value (null when absent). Public procedures need no key. */
export function authenticate(keys: KeyRing | null, authorization: string | null, procedure: string, nowMs?: number): Principal {
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
  // Only the key's holder gets this far: telling them why saves a support call.
  refuseExpired(key, nowMs);
  return principalOf(key);
}

/** The clock is read only for keys that expire (most calls never do). */
function refuseExpired(key: ApiKey, nowMs: number | undefined): void {
  const { expiresAtMs } = key;
  if (expiresAtMs !== null && (nowMs ?? Date.now()) >= expiresAtMs) {
    throw new ConnectError(`API key "${key.id}" expired at ${new Date(expiresAtMs).toISOString()}`, Code.Unauthenticated);
  }
}

/** Step 1b: a key with a rate limit spends one call of it (RESOURCE_EXHAUSTED
 * when it has none left). Applied once per call, where it is authenticated. */
export function admitRate(limiter: KeyRateLimiter | undefined, principal: Principal): void {
  const key = principal.key;
  if (limiter === undefined || key === null || key.rateLimitPerSecond === null) return;
  limiter.take(key.id, key.sha256.toString("hex"), key.rateLimitPerSecond);
}

/** Step 2: may this principal's role call this procedure at all. */
export function authorizeProcedure(principal: Principal, procedure: string): void {
  if (accessOf(procedure) === "admin" && principal.role === "project") {
    throw new ConnectError(`${procedure} needs an admin key; key "${principal.keyId}" is a project key`, Code.PermissionDenied);
  }
}

/** Step 3: may this principal touch these projects. Project keys must cover
 * every id, or for a tree read an ancestor of it (`chains`, read by
 * chainsForTreeRead); an id that is not even valid is INVALID_ARGUMENT, as the
 * handler would say. */
export function authorizeProjects(
  principal: Principal,
  procedure: string,
  projectIds: readonly string[],
  chains?: ReadonlyMap<string, readonly string[]>,
): void {
  if (principal.role !== "project") return;
  if (projectIds.length === 0) {
    throw new ConnectError(
      `${procedure} names no project; key "${principal.keyId}" may only act on its own projects`,
      Code.PermissionDenied,
    );
  }
  for (const projectId of projectIds) {
    requireId("project_id", projectId);
    if (principal.covers(projectId)) continue;
    const chain = treeReadProcedures.has(procedure) ? chains?.get(projectId) : undefined;
    if (chain === undefined || !scopeCoversChain(chain, (id) => principal.covers(id))) {
      const above = chain === undefined ? "" : " nor any project above it";
      throw new ConnectError(`key "${principal.keyId}" does not cover project "${projectId}"${above}`, Code.PermissionDenied);
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

/** An open stream's caller checked again against the current keys (after a
 * reload): its key must still exist and still allow the procedure and the
 * projects the request named (null: not re-checked, e.g. a client stream).
 * Throws as authorize() would; a key that is gone or expired is
 * UNAUTHENTICATED. Returns when the key expires (null: never). */
export function reauthorize(
  keys: KeyRing | null,
  principal: Principal,
  procedure: string,
  projectIds: readonly string[] | null,
  nowMs?: number,
  chains?: ReadonlyMap<string, readonly string[]>,
): number | null {
  if (keys === null || principal.key === null) return null;
  const key = keys.byDigest(principal.key.sha256.toString("hex"));
  if (key === undefined) throw new ConnectError(`API key "${principal.keyId}" was revoked; this stream ends`, Code.Unauthenticated);
  refuseExpired(key, nowMs);
  const current = principalOf(key);
  authorizeProcedure(current, procedure);
  // A tree read stays allowed by the chain read when the stream started.
  if (projectIds !== null) authorizeProjects(current, procedure, projectIds, chains);
  return key.expiresAtMs;
}

/** A response stream that ends with `check`'s error as soon as it throws:
 * checked before every message, whenever `changed` fires (a key reload) and
 * at the instant `check` returns (the key's expiry), so a revoked or expired
 * key neither receives another message nor keeps an idle stream open. The
 * source is told to stop (return()) without waiting for it. */
async function* endWhenDenied<T>(
  source: AsyncIterable<T>,
  check: () => number | null,
  changed: (listener: () => void) => () => void,
): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let wake: () => void = () => {};
  const unsubscribe = changed(() => wake());
  let timer: NodeJS.Timeout | undefined;
  let timerAtMs: number | null = null;
  // setTimeout holds at most 2^31-1 ms (~24 days): a later expiry re-arms.
  const armAt = (atMs: number | null) => {
    if (atMs === timerAtMs) return;
    clearTimeout(timer);
    timerAtMs = atMs;
    if (atMs === null) return;
    const fire = () => {
      if (Date.now() >= atMs) wake();
      else timer = setTimeout(fire, Math.min(atMs - Date.now(), 2 ** 31 - 1)).unref();
    };
    timer = setTimeout(fire, Math.min(Math.max(0, atMs - Date.now()), 2 ** 31 - 1)).unref();
  };
  const checkAndArm = () => armAt(check());
  let finished = false;
  try {
    for (;;) {
      checkAndArm();
      const next = iterator.next();
      let result: IteratorResult<T> | "changed";
      do {
        result = await Promise.race([next, new Promise<"changed">((resolve) => (wake = () => resolve("changed")))]);
        if (result === "changed") checkAndArm();
      } while (result === "changed");
      if (result.done) {
        finished = true;
        return;
      }
      checkAndArm();
      yield result.value;
    }
  } finally {
    unsubscribe();
    clearTimeout(timer);
    if (!finished) void iterator.return?.(undefined).catch(() => undefined);
  }
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
export function authGate(
  keys: () => KeyRing | null,
  onDenied?: (procedure: string, error: ConnectError, principal: Principal | null) => void,
  limiter?: KeyRateLimiter,
) {
  return (ctx: HandlerContext): void => {
    const procedure = procedureOf(ctx.method);
    let principal: Principal | null = null;
    try {
      const ring = keys();
      // Without keys nobody's header is read (reading it builds a Headers).
      principal = ring === null ? openPrincipal : authenticate(ring, ctx.requestHeader.get("authorization"), procedure);
      authorizeProcedure(principal, procedure);
      admitRate(limiter, principal);
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
export function authInterceptor(
  keys: () => KeyRing | null,
  keysChanged: (listener: () => void) => () => void = () => () => {},
  limiter?: KeyRateLimiter,
  chainOf?: ChainOf,
): Interceptor {
  return (next) => async (req) => {
    const procedure = procedureOf(req.method);
    let principal = req.contextValues.get(principalKey);
    if (principal === null) {
      const ring = keys();
      principal = ring === null ? openPrincipal : authenticate(ring, req.header.get("authorization"), procedure);
      // Set before the checks below, so a denied call is logged with its key id.
      req.contextValues.set(principalKey, principal);
      authorizeProcedure(principal, procedure);
      admitRate(limiter, principal);
    }
    const caller = principal;
    // For a request stream: the projects its messages named so far, for
    // re-checking an open response stream after a key reload.
    let named: Set<string> | undefined;
    let chains: ReadonlyMap<string, readonly string[]> | undefined;
    if (!req.stream) {
      if (caller.role === "project") {
        const ids = projectIdsOf(req.message);
        chains = await chainsForTreeRead(caller, procedure, ids, chainOf);
        authorizeProjects(caller, procedure, ids, chains);
      }
    } else if (caller.key !== null) {
      const messages = req.message;
      const seen = (named = new Set<string>());
      req = {
        ...req,
        message: (async function* () {
          for await (const message of messages) {
            const ids = projectIdsOf(message);
            if (caller.role === "project") {
              const read = await chainsForTreeRead(caller, procedure, ids, chainOf);
              if (read !== undefined) chains = new Map([...(chains ?? []), ...read]);
              authorizeProjects(caller, procedure, ids, chains);
            }
            for (const id of ids) seen.add(id);
            yield message;
          }
        })(),
      };
    }
    const res = await next(req);
    // A stream may outlive its key: revoking a key (or narrowing its projects)
    // ends the caller's open streams too, not only its next call.
    if (!res.stream || caller.key === null) return res;
    const requestProjects = req.stream ? null : projectIdsOf(req.message);
    const projectIds = () => requestProjects ?? (named === undefined || named.size === 0 ? null : [...named]);
    return {
      ...res,
      message: endWhenDenied(res.message, () => reauthorize(keys(), caller, procedure, projectIds(), undefined, chains), keysChanged),
    };
  };
}
