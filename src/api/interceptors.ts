// Cross-cutting concerns as Connect interceptors, so no handler repeats them:
// per-RPC logging, and the lifecycle gate that refuses new calls while the
// server drains and counts the calls still in flight.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { inFlightCallsMax, inFlightRetryDelayMs } from "../limits.ts";
import { LogEvent, loggableId, type Logger } from "../log.ts";
import { principalKey, procedureOf } from "./auth.ts";
import { retryableExhausted } from "./retry-info.ts";

/** One structured line per RPC: procedure, code, duration, project, and the id
 * of the API key that called (never the key). */
export function loggingInterceptor(logger: Logger): Interceptor {
  // The success line's constant fields (event, procedure, code) serialized once
  // per procedure, as a pino child's bindings: the line is byte for byte what
  // logger.info({ event, procedure, code: "ok", durationMs, projectId, keyId })
  // writes (bindings come right after the base fields, in this order), with
  // half the per-call field work. Bounded: one child per served procedure.
  // Level changes on `logger` would not reach the children; nothing changes a
  // logger's level after it is created.
  const completed = new Map<string, Logger>();
  const completedLogger = (procedure: string): Logger => {
    let child = completed.get(procedure);
    if (child === undefined) completed.set(procedure, (child = logger.child({ event: LogEvent.rpcCompleted, procedure, code: "ok" })));
    return child;
  };
  return (next) => async (req) => {
    const startedMs = performance.now();
    const projectId = req.stream ? undefined : loggableId((req.message as { projectId?: unknown }).projectId);
    const procedure = procedureOf(req.method);
    try {
      const res = await next(req);
      const keyId = req.contextValues.get(principalKey)?.keyId ?? undefined;
      completedLogger(procedure).info({ durationMs: elapsed(startedMs), projectId, keyId });
      return res;
    } catch (error) {
      const connectError = ConnectError.from(error);
      const keyId = req.contextValues.get(principalKey)?.keyId ?? undefined;
      const fields = { event: LogEvent.rpcFailed, procedure, code: codeToString(connectError.code), durationMs: elapsed(startedMs), projectId, keyId, message: connectError.rawMessage };
      // Server-side failures are warnings (someone should look); bad input is info.
      if (connectError.code === Code.Internal || connectError.code === Code.Unavailable || connectError.code === Code.Unknown) {
        logger.warn({ ...fields, cause: connectError.cause instanceof Error ? connectError.cause.message : undefined });
      } else {
        logger.info(fields);
      }
      throw error;
    }
  };
}

function elapsed(startedMs: number): number {
  return Math.round((performance.now() - startedMs) * 1000) / 1000;
}

/** Admits calls until draining starts; then answers UNAVAILABLE. Counts calls in
 * flight so shutdown can wait for them, and refuses calls past inFlightMax with
 * RESOURCE_EXHAUSTED. Services named in `admitWhileDraining` (health checking)
 * are still admitted while draining: they report the drain themselves. */
export class LifecycleGate {
  readonly #inFlightMax: number;
  #draining = false;
  #inFlight = 0;
  /** Open streams (transport-level count, src/transport/stream-limits.ts):
   * they hold memory as long as calls do, so they count against inFlightMax,
   * but drain does not wait for them (they end on the draining signal, or
   * with their connection). */
  #streams = 0;
  #idle: Array<() => void> = [];
  readonly #drainingController = new AbortController();
  readonly #admitWhileDraining: ReadonlySet<string>;

  constructor(inFlightMax: number = inFlightCallsMax, options: { admitWhileDraining?: Iterable<string> } = {}) {
    this.#inFlightMax = inFlightMax;
    this.#admitWhileDraining = new Set(options.admitWhileDraining ?? []);
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Aborted when draining starts, so long-lived streams (health Watch,
   * reflection) can end and never hold up shutdown. */
  get drainingSignal(): AbortSignal {
    return this.#drainingController.signal;
  }

  /** Calls in flight: unary calls being handled and open streams. */
  get inFlight(): number {
    return this.#inFlight + this.#streams;
  }

  /** Counts a stream as in flight until closeStream(); false (nothing
   * counted) when the in-flight limit is reached. */
  openStream(): boolean {
    if (this.#inFlight + this.#streams >= this.#inFlightMax) return false;
    this.#streams++;
    return true;
  }

  closeStream(): void {
    this.#streams--;
  }

  get inFlightMax(): number {
    return this.#inFlightMax;
  }

  readonly interceptor: Interceptor = (next) => async (req) => {
    if (this.#draining && !this.#admitWhileDraining.has(req.service.typeName)) {
      throw new ConnectError("the server is shutting down; retry against another instance or after restart", Code.Unavailable);
    }
    // Streams were counted (and admitted) by openStream at the transport.
    const kind = (req.method as typeof req.method | undefined)?.methodKind ?? "unary";
    if (kind === "unary" && this.#inFlight + this.#streams >= this.#inFlightMax) {
      throw retryableExhausted(`the server has ${this.#inFlightMax} calls in flight; retry shortly (with the same request_id)`, inFlightRetryDelayMs);
    }
    this.#inFlight++;
    try {
      return await next(req);
    } finally {
      this.#inFlight--;
      if (this.#inFlight === 0) for (const wake of this.#idle.splice(0)) wake();
    }
  };

  startDraining(): void {
    this.#draining = true;
    this.#drainingController.abort();
  }

  /** Resolves true once no call is in flight, false if `timeoutMs` passed first. */
  waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.#inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#idle.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}
