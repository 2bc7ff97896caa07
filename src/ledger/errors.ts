// Domain errors of the ledger. The API layer maps each to one Connect code
// (src/api/errors.ts); nothing here knows about transports.

/** A total would leave the int64 range: refused, nothing written. */
export class TotalOverflowError extends Error {
  override name = "TotalOverflowError";
  constructor(projectId: string, quantity: string) {
    super(`project "${projectId}": adding this record would overflow its ${quantity} beyond the int64 maximum; nothing was recorded`);
  }
}

/** The same idempotency key was used before with a different payload. */
export class IdempotencyConflictError extends Error {
  override name = "IdempotencyConflictError";
  constructor(projectId: string, requestId: string, difference: string, done: "recorded" | "reserved" = "recorded") {
    super(
      `project "${projectId}": request_id "${requestId}" was already ${done} with a different payload (${difference}); nothing was ${done}`,
    );
  }
}

/** A reservation's retry (same request_id) came after the hold it placed was
 * settled, released or expired: answering with that hold would hand out one
 * that no longer reserves anything, placing another would break the key. */
export class ReservationEndedError extends Error {
  override name = "ReservationEndedError";
  constructor(projectId: string, requestId: string, holdId: string, why: string) {
    super(
      `project "${projectId}": request_id "${requestId}" already reserved hold "${holdId}", which is no longer active (${why}); nothing was reserved: reserve again with a new request_id`,
    );
  }
}

/** A project's currency cannot change once it has recorded costs. */
export class CurrencyLockedError extends Error {
  override name = "CurrencyLockedError";
  constructor(projectId: string, current: string, requested: string) {
    super(`project "${projectId}" already recorded costs in ${current}; its currency cannot change to ${requested}`);
  }
}

/** The write queue is full: the caller should back off and retry. */
export class QueueFullError extends Error {
  override name = "QueueFullError";
  constructor(depthMax: number) {
    super(`write queue is full (${depthMax} writes waiting); nothing was written, retry with the same request_id`);
  }
}

/** The unit of work no longer accepts writes (shutting down). */
export class ClosedError extends Error {
  override name = "ClosedError";
  constructor() {
    super("the server is shutting down and accepts no new writes; retry against another instance or after restart");
  }
}

/** The caller's deadline passed before its write was committed: nothing written. */
export class DeadlinePassedError extends Error {
  override name = "DeadlinePassedError";
  constructor() {
    super("the deadline passed before the write was committed; nothing was written");
  }
}

/** The database failed a whole transaction (I/O, lock, connection): nothing in
 * it was written. Retrying with the same request_id is safe. With action
 * "read": a read could not reach the database (nothing to undo; retry). */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
  constructor(cause: unknown, action: "write" | "read" = "write") {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(
      action === "write"
        ? `the database could not commit the write (${reason}); nothing was written, retry with the same request_id`
        : `the database could not be read (${reason}); retry later`,
      { cause },
    );
  }
}

/** RecordCost named a hold that is not active: unknown, of another project,
 * already settled or released, or expired. Nothing was recorded. */
export class HoldNotActiveError extends Error {
  override name = "HoldNotActiveError";
  constructor(projectId: string, holdId: string, why: string) {
    super(`project "${projectId}": hold "${holdId}" is not active (${why}); nothing was recorded: record the cost again without hold_id`);
  }
}

/** ReleaseHold named a hold that is not active; nothing changed. */
export class HoldNotFoundError extends Error {
  override name = "HoldNotFoundError";
  constructor(holdId: string, why: string) {
    super(`hold "${holdId}" is not active (${why}); nothing was released`);
  }
}

/** A project has as many active holds as allowed; nothing was reserved. */
export class HoldLimitError extends Error {
  override name = "HoldLimitError";
  constructor(projectId: string, max: number) {
    super(
      `project "${projectId}" already has ${max} active holds (the maximum); settle or release some, or wait for them to expire; nothing was reserved`,
    );
  }
}

/** A WatchBudget subscriber fell behind by the whole queue and was dropped, or
 * the server has as many watchers as it allows. */
export class WatchOverloadError extends Error {
  override name = "WatchOverloadError";
}

/** A write to an archived project (RecordCost, a reservation, SetProjectBudget). */
export class ProjectArchivedError extends Error {
  override name = "ProjectArchivedError";
  constructor(projectId: string, archivedAtMs: number) {
    super(
      `project "${projectId}" is archived (since ${new Date(archivedAtMs).toISOString()}): its totals are kept and readable, writes are refused; unarchive it (UnarchiveProject, \`tally projects unarchive\`) to write again`,
    );
  }
}

/** Archive, unarchive or delete of a project that has neither totals nor a budget. */
export class ProjectNotFoundError extends Error {
  override name = "ProjectNotFoundError";
  constructor(projectId: string) {
    super(`project "${projectId}" does not exist (it never recorded a cost nor had a budget set)`);
  }
}

/** DeleteProject of a project still in use: nothing was deleted. */
export class ProjectInUseError extends Error {
  override name = "ProjectInUseError";
  constructor(projectId: string, why: string) {
    super(`project "${projectId}" ${why}: nothing was deleted`);
  }
}

/** SetProjectBudget's parent_id would close a loop in the tree of budgets. */
export class BudgetCycleError extends Error {
  override name = "BudgetCycleError";
  constructor(projectId: string, parentId: string, cycle: readonly string[]) {
    super(`project "${projectId}" cannot have parent "${parentId}": that would make a cycle (${cycle.join(" -> ")}); nothing was changed`);
  }
}

/** SetProjectBudget's parent_id would make a tree deeper than allowed. */
export class BudgetTreeDepthError extends Error {
  override name = "BudgetTreeDepthError";
  constructor(projectId: string, parentId: string, path: readonly string[], depthMax: number) {
    super(
      `project "${projectId}" cannot have parent "${parentId}": the tree would have ${path.length} levels (${path.join(" > ")}) and a tree of budgets has at most ${depthMax}; nothing was changed`,
    );
  }
}

/** SetProjectBudget named a parent that does not exist. */
export class ParentNotFoundError extends Error {
  override name = "ParentNotFoundError";
  constructor(projectId: string, parentId: string) {
    super(
      `project "${projectId}": parent project "${parentId}" does not exist (it never recorded a cost nor had a budget set: set its budget first); nothing was changed`,
    );
  }
}

/** A tree of budgets has one currency and one time zone (rolled-up amounts
 * and calendar windows must mean the same at every level). */
export class BudgetTreeMismatchError extends Error {
  override name = "BudgetTreeMismatchError";
}

/** The domain errors a store op may fail with (OpResult), by name: a store that
 * applies ops in another thread sends {name, message} and the caller revives
 * the same class, so `instanceof` (and so the API's error mapping) holds. */
const opErrorClasses = {
  TotalOverflowError,
  IdempotencyConflictError,
  CurrencyLockedError,
  HoldNotActiveError,
  HoldNotFoundError,
  HoldLimitError,
  ReservationEndedError,
  ProjectArchivedError,
  ProjectNotFoundError,
  ProjectInUseError,
  BudgetCycleError,
  BudgetTreeDepthError,
  ParentNotFoundError,
  BudgetTreeMismatchError,
} as const;

export type OpErrorName = keyof typeof opErrorClasses;

export function isOpError(error: unknown): error is Error & { name: OpErrorName } {
  return error instanceof Error && Object.hasOwn(opErrorClasses, error.name) && error instanceof opErrorClasses[error.name as OpErrorName];
}

/** An op error of this class with this exact message (its constructor, which
 * builds the message from parts, is not run again). */
export function reviveOpError(name: string, message: string): Error {
  if (!Object.hasOwn(opErrorClasses, name)) throw new Error(`invariant: "${name}" is not a store op error (${message})`);
  const error = Reflect.construct(Error, [message], opErrorClasses[name as OpErrorName]) as Error;
  error.name = name;
  return error;
}
