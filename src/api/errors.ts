// Maps the ledger's domain errors to Connect codes: one code per kind of
// failure, the domain message kept, the original as `cause`.
import { Code, ConnectError } from "@connectrpc/connect";
import {
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
  QueueFullError,
  ReservationEndedError,
  StoreUnavailableError,
  TotalOverflowError,
  WatchOverloadError,
} from "../ledger/errors.ts";
import { NoCatalogError, NoPriceError, OccurredAtRangeError, PriceConflictError, PriceCurrencyError } from "../ledger/price-catalog.ts";
import { CostOverflowError } from "../ledger/pricing.ts";
import { queueFullRetryDelayMs } from "../limits.ts";
import { retryableExhausted } from "./retry-info.ts";

export function toConnectError(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof IdempotencyConflictError) return new ConnectError(error.message, Code.AlreadyExists, undefined, undefined, error);
  if (error instanceof OccurredAtRangeError) return new ConnectError(error.message, Code.InvalidArgument, undefined, undefined, error);
  if (error instanceof NoPriceError || error instanceof PriceCurrencyError || error instanceof CostOverflowError || error instanceof NoCatalogError) {
    return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  }
  if (error instanceof PriceConflictError) return new ConnectError(error.message, Code.AlreadyExists, undefined, undefined, error);
  if (error instanceof TotalOverflowError) return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  if (error instanceof CurrencyLockedError) return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  if (error instanceof HoldNotActiveError) return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  if (error instanceof ReservationEndedError) return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  if (error instanceof ProjectArchivedError) return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  if (error instanceof ProjectInUseError) return new ConnectError(error.message, Code.FailedPrecondition, undefined, undefined, error);
  if (error instanceof ProjectNotFoundError) return new ConnectError(error.message, Code.NotFound, undefined, undefined, error);
  if (error instanceof HoldNotFoundError) return new ConnectError(error.message, Code.NotFound, undefined, undefined, error);
  if (error instanceof HoldLimitError) return new ConnectError(error.message, Code.ResourceExhausted, undefined, undefined, error);
  if (error instanceof WatchOverloadError) return new ConnectError(error.message, Code.ResourceExhausted, undefined, undefined, error);
  if (error instanceof QueueFullError) return retryableExhausted(error.message, queueFullRetryDelayMs, error);
  if (error instanceof ClosedError) return new ConnectError(error.message, Code.Unavailable, undefined, undefined, error);
  if (error instanceof StoreUnavailableError) return new ConnectError(error.message, Code.Unavailable, undefined, undefined, error);
  if (error instanceof DeadlinePassedError) return new ConnectError(error.message, Code.DeadlineExceeded, undefined, undefined, error);
  // A bug: say so without leaking internals; the log line carries the cause.
  return new ConnectError("internal error", Code.Internal, undefined, undefined, error);
}
