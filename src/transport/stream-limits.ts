// Open streaming calls, bounded per pool globally and per connection, and
// counted as calls in flight. Checked from the request's path alone, before
// authentication and before a byte of the body is read: a client without a
// key cannot pile up streams (and their memory) past the bound.
import type { ConnectRouter } from "@connectrpc/connect";
import type { Connection } from "./connections.ts";

export interface StreamPoolLimits {
  /** Open streams of the pool on the whole server. */
  openMax: number;
  /** Open streams of the pool on one connection. */
  perConnectionMax: number;
}

export interface StreamLimitsOptions {
  pools: Readonly<Record<string, StreamPoolLimits>>;
  /** The pool of a procedure ("package.Service/Method"); must name a pool. */
  poolOf: (procedure: string) => string;
  /** Counts the stream as in flight; false when the in-flight limit is reached. */
  acquire: () => boolean;
  release: () => void;
}

/** Why a stream was refused: the caller's message. */
export type StreamRefusal = string;

interface Pool {
  name: string;
  limits: StreamPoolLimits;
  open: number;
}

export class StreamLimits {
  readonly #options: StreamLimitsOptions;
  readonly #pools = new Map<string, Pool>();
  /** "/package.Service/Method" of every streaming method -> its pool. */
  readonly #paths = new Map<string, Pool>();

  constructor(options: StreamLimitsOptions) {
    this.#options = options;
    for (const [name, limits] of Object.entries(options.pools)) this.#pools.set(name, { name, limits, open: 0 });
  }

  /** Open streams per pool (for tests and metrics). */
  openCounts(): Record<string, number> {
    return Object.fromEntries([...this.#pools.values()].map((p) => [p.name, p.open]));
  }

  /** Wraps a routes function to learn which registered methods stream. */
  routes(register: (router: ConnectRouter) => void): (router: ConnectRouter) => void {
    return (router) => {
      const recording: ConnectRouter = {
        get handlers() {
          return router.handlers;
        },
        service: (service, impl, options) => {
          for (const method of service.methods) this.#add(`${service.typeName}/${method.name}`, method.methodKind);
          return router.service(service, impl, options);
        },
        rpc: (method, impl, options) => {
          this.#add(`${method.parent.typeName}/${method.name}`, method.methodKind);
          return router.rpc(method, impl as never, options);
        },
      };
      register(recording);
    };
  }

  #add(procedure: string, kind: string): void {
    if (kind === "unary") return;
    const name = this.#options.poolOf(procedure);
    const pool = this.#pools.get(name);
    if (pool === undefined) throw new Error(`stream limits: ${procedure} is in pool "${name}", which has no limits`);
    this.#paths.set(`/${procedure}`, pool);
  }

  /** Admits a call on `path` (a stream of a registered method counts until
   * `onClose` fires), or says why not. Non-streaming paths pass untouched. */
  admit(path: string, connection: Connection | undefined, onClose: (release: () => void) => void): StreamRefusal | undefined {
    const pool = this.#paths.get(path);
    if (pool === undefined) return undefined;
    const procedure = path.slice(1);
    if (pool.open >= pool.limits.openMax) {
      return `the server already serves ${pool.limits.openMax} ${pool.name} streams (the maximum); retry later`;
    }
    const counts = connection?.streamsOpen;
    const onConnection = counts?.get(pool.name) ?? 0;
    if (onConnection >= pool.limits.perConnectionMax) {
      return `this connection already has ${pool.limits.perConnectionMax} open ${pool.name} streams (the maximum per connection); close one or use another connection for ${procedure}`;
    }
    if (!this.#options.acquire()) return "the server has reached its limit of calls in flight; retry shortly";
    pool.open++;
    counts?.set(pool.name, onConnection + 1);
    onClose(() => {
      pool.open--;
      if (counts !== undefined) counts.set(pool.name, (counts.get(pool.name) ?? 1) - 1);
      this.#options.release();
    });
    return undefined;
  }
}
