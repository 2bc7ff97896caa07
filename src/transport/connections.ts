// Every open connection, whether it serves a call, and how long it may stay
// without one. Two jobs:
//  - idle limits: a connection with no call in progress is closed when its
//    deadline passes (first bytes, TLS handshake, HTTP/1.1 request head, idle
//    HTTP/2 session): a socket that does nothing never holds a slot for long;
//  - the connection limit: when every slot is taken, a new connection evicts
//    the connection that has been idle longest instead of being refused, so
//    idle or half-open sockets cannot lock new clients out; only when every
//    connection is serving a call is the new one closed.
// One sweep timer checks the deadlines (rather than a timer per socket).
import type net from "node:net";

/** How long a connection may go without a call, by what it is doing. */
export interface ConnectionTimeouts {
  /** Cleartext: until the first bytes tell HTTP/2 from HTTP/1.1. */
  sniffMs: number;
  /** TLS: until the handshake completes. */
  tlsHandshakeMs: number;
  /** HTTP/1.1 with no request in progress: until the next request head is complete. */
  http1HeadMs: number;
  /** HTTP/2 with no open stream. */
  http2IdleMs: number;
}

/** What a connection is waiting for while it has no call. */
export type ConnectionPhase = "sniff" | "tls-handshake" | "http1" | "http2";

const connectionKey = Symbol("tally.connection");

/** The tracked connection a socket (raw, TLS, or http2's socket proxy) or an
 * HTTP/2 session belongs to. */
export function connectionOf(holder: object | null | undefined): Connection | undefined {
  if (holder == null) return undefined;
  return (holder as { [connectionKey]?: Connection })[connectionKey];
}

/** Marks `holder` (a TLS socket, an HTTP/2 session) as belonging to `connection`. */
export function attachConnection(holder: object, connection: Connection): void {
  (holder as { [connectionKey]?: Connection })[connectionKey] = connection;
}

export class Connection {
  readonly socket: net.Socket;
  phase: ConnectionPhase;
  calls = 0;
  /** Open streams on this connection by pool (src/transport/stream-limits.ts). */
  readonly streamsOpen = new Map<string, number>();
  /** Closes the connection gracefully when its idle deadline passes (default: destroy). */
  expire: () => void;
  idleUntilMs = 0;
  readonly #tracker: ConnectionTracker;

  constructor(tracker: ConnectionTracker, socket: net.Socket, phase: ConnectionPhase) {
    this.#tracker = tracker;
    this.socket = socket;
    this.phase = phase;
    this.expire = () => socket.destroy();
  }

  /** Now waiting for `phase`; the idle clock restarts if no call is in progress. */
  enter(phase: ConnectionPhase): void {
    this.phase = phase;
    if (this.calls === 0) this.#tracker.markIdle(this);
  }

  callStarted(): void {
    if (this.calls++ === 0) this.#tracker.markBusy(this);
  }

  callEnded(): void {
    if (--this.calls === 0) this.#tracker.markIdle(this);
  }
}

export class ConnectionTracker {
  readonly #max: number;
  readonly #timeouts: ConnectionTimeouts;
  readonly #all = new Set<Connection>();
  /** Connections without a call, longest idle first (Set keeps insertion order). */
  readonly #idle = new Set<Connection>();
  #sweep: NodeJS.Timeout | undefined;
  #evicted = 0;
  #expired = 0;

  constructor(max: number, timeouts: ConnectionTimeouts) {
    if (!(max >= 1)) throw new Error("connection tracker: max must be >= 1");
    this.#max = max;
    this.#timeouts = timeouts;
  }

  get size(): number {
    return this.#all.size;
  }

  get idleCount(): number {
    return this.#idle.size;
  }

  /** Idle connections closed to make room for a new one. */
  get evicted(): number {
    return this.#evicted;
  }

  /** Connections closed because their idle deadline passed. */
  get expired(): number {
    return this.#expired;
  }

  get timeouts(): Readonly<ConnectionTimeouts> {
    return this.#timeouts;
  }

  sockets(): IterableIterator<Connection> {
    return this.#all.values();
  }

  /** Takes a new socket. At the limit the longest-idle connection is closed to
   * make room; if every connection is serving a call the new socket is closed
   * instead and undefined returned. */
  admit(socket: net.Socket, phase: ConnectionPhase): Connection | undefined {
    if (this.#all.size >= this.#max) {
      const oldest = this.#idle.values().next();
      if (oldest.done) {
        socket.destroy();
        return undefined;
      }
      this.#evicted++;
      this.#forget(oldest.value);
      oldest.value.socket.destroy();
    }
    const connection = new Connection(this, socket, phase);
    attachConnection(socket, connection);
    this.#all.add(connection);
    socket.once("close", () => this.#forget(connection));
    this.markIdle(connection);
    return connection;
  }

  markIdle(connection: Connection): void {
    if (!this.#all.has(connection)) return;
    connection.idleUntilMs = performance.now() + this.#timeoutOf(connection.phase);
    // Re-inserted: the order stays "idle longest first".
    this.#idle.delete(connection);
    this.#idle.add(connection);
    this.#arm();
  }

  markBusy(connection: Connection): void {
    this.#idle.delete(connection);
  }

  /** Stops the sweep (the server is closing; its sockets are closed by it). */
  stop(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  #forget(connection: Connection): void {
    this.#all.delete(connection);
    this.#idle.delete(connection);
  }

  #timeoutOf(phase: ConnectionPhase): number {
    switch (phase) {
      case "sniff":
        return this.#timeouts.sniffMs;
      case "tls-handshake":
        return this.#timeouts.tlsHandshakeMs;
      case "http1":
        return this.#timeouts.http1HeadMs;
      case "http2":
        return this.#timeouts.http2IdleMs;
    }
  }

  /** A connection is closed between its deadline and one sweep interval (a
   * tenth of the shortest timeout, at most 1 s) after it. */
  #arm(): void {
    if (this.#sweep !== undefined) return;
    const t = this.#timeouts;
    const intervalMs = Math.max(1, Math.min(1_000, Math.floor(Math.min(t.sniffMs, t.tlsHandshakeMs, t.http1HeadMs, t.http2IdleMs) / 10)));
    this.#sweep = setInterval(() => {
      const nowMs = performance.now();
      for (const connection of this.#idle) {
        if (nowMs >= connection.idleUntilMs) {
          this.#expired++;
          this.#forget(connection);
          connection.expire();
        }
      }
      if (this.#idle.size === 0) this.stop();
    }, intervalMs);
    this.#sweep.unref();
  }
}
