// Maps the ledger's domain errors to Connect codes, in one table: one code per
// kind of failure, the domain message kept, the original as `cause`. Applied
// once, around every method of a service (withErrorMapping), so handlers
// validate and answer and never catch; the router, the unary fast path and
// in-memory transports all call the wrapped methods.
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  BudgetCycleError,
  BudgetTreeDepthError,
  BudgetTreeMismatchError,
  ClosedError,
  CurrencyLockedError,
  DeadlinePassedError,
  HoldLimitError,
  HoldNotActiveError,
  HoldNotFoundError,
  IdempotencyConflictError,
  ProjectArchivedError,
  ProjectInUseError,
  ProjectNotFoundError,
  ParentNotFoundError,
  QueueFullError,
  ReservationEndedError,
  StoreUnavailableError,
  TotalOverflowError,
  WatchOverloadError,
} from "../ledger/errors.ts";
import { NoCatalogError, NoPriceError, OccurredAtRangeError, PriceConflictError, PriceCurrencyError } from "../ledger/price-catalog.ts";
import { CostOverflowError } from "../ledger/pricing.ts";

type ErrorClass = abstract new (...args: never[]) => Error;

/** Domain error -> Connect code. Anything else thrown is a bug (an invariant
 * broken): INTERNAL, never a retryable code, with the cause kept for the log. */
const codeOfError: ReadonlyArray<readonly [ErrorClass, Code]> = [
  [IdempotencyConflictError, Code.AlreadyExists],
  [PriceConflictError, Code.AlreadyExists],
  [OccurredAtRangeError, Code.InvalidArgument],
  [NoPriceError, Code.FailedPrecondition],
  [PriceCurrencyError, Code.FailedPrecondition],
  [CostOverflowError, Code.FailedPrecondition],
  [NoCatalogError, Code.FailedPrecondition],
  [TotalOverflowError, Code.FailedPrecondition],
  [CurrencyLockedError, Code.FailedPrecondition],
  [HoldNotActiveError, Code.FailedPrecondition],
  [ReservationEndedError, Code.FailedPrecondition],
  [ProjectArchivedError, Code.FailedPrecondition],
  [ProjectInUseError, Code.FailedPrecondition],
  [BudgetCycleError, Code.FailedPrecondition],
  [BudgetTreeDepthError, Code.FailedPrecondition],
  [BudgetTreeMismatchError, Code.FailedPrecondition],
  [ParentNotFoundError, Code.NotFound],
  [ProjectNotFoundError, Code.NotFound],
  [HoldNotFoundError, Code.NotFound],
  [HoldLimitError, Code.ResourceExhausted],
  [WatchOverloadError, Code.ResourceExhausted],
  [QueueFullError, Code.ResourceExhausted],
  [ClosedError, Code.Unavailable],
  [StoreUnavailableError, Code.Unavailable],
  [DeadlinePassedError, Code.DeadlineExceeded],
];

export function toConnectError(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  for (const [errorClass, code] of codeOfError) {
    if (error instanceof errorClass) return new ConnectError(error.message, code, undefined, undefined, error);
  }
  // A bug: say so without leaking internals; the log line carries the cause.
  return new ConnectError("internal error", Code.Internal, undefined, undefined, error);
}

/** `impl` with every method of `service` mapping what it throws through the
 * table above: unary methods when their promise rejects, server streams when
 * they start or while they yield. The one place errors become codes. */
export function withErrorMapping<S extends DescService, T extends Partial<ServiceImpl<S>>>(service: S, impl: T): T {
  const mapped: Record<string, unknown> = {};
  const methods = impl as unknown as Record<string, (req: unknown, ctx: unknown) => unknown>;
  for (const method of service.methods) {
    const call = methods[method.localName];
    if (call === undefined) continue;
    const bound = call.bind(impl);
    mapped[method.localName] =
      method.methodKind === "server_streaming"
        ? async function* (req: unknown, ctx: unknown) {
            try {
              yield* bound(req, ctx) as AsyncIterable<unknown>;
            } catch (error) {
              throw toConnectError(error);
            }
          }
        : async (req: unknown, ctx: unknown) => {
            try {
              return await bound(req, ctx);
            } catch (error) {
              throw toConnectError(error);
            }
          };
  }
  return mapped as T;
}
