// The gate every call passes at the transport: admits calls until draining
// starts, counts calls and streams in flight against one limit, and lets
// shutdown wait for them. Wire-level (the transport opens streams through it),
// so it lives here and api/ sees it only as a ServingState.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { inFlightCallsMax, inFlightRetryDelayMs } from "../limits.ts";
import { retryableExhausted } from "../retry-info.ts";

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
      throw retryableExhausted(
        `the server has ${this.#inFlightMax} calls in flight; retry shortly (with the same request_id)`,
        inFlightRetryDelayMs,
      );
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
