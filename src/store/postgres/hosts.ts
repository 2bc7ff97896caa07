// How Tally's pg clients reach PostgreSQL, including through a failover.
//
// A URL may name several hosts, as libpq's do:
//   postgres://tally:pw@db-a:5432,db-b:5432/tally?target_session_attrs=read-write
// node-postgres takes one host only, so every connection Tally opens (pool,
// migration lock, operator commands) goes through TallyPgClient, which tries
// the hosts in turn (the last one that worked first) and, with
// target_session_attrs=read-write (the default when several hosts are named;
// also "primary"), skips a server in recovery (a standby): a short probe
// connection asks `pg_is_in_recovery()` before the real one opens. While no
// host accepts writes, connecting fails with SQLSTATE 08001, which the store
// answers as UNAVAILABLE; the next connection tries again, so replicas resume
// by themselves once a standby is promoted.
//
// Every client also guards synchronous replication: when a COMMIT's wait for
// the synchronous standby is cancelled (statement_timeout, a cancel request),
// PostgreSQL commits locally and only says so in a WARNING ("canceling wait
// for synchronous replication"), then reports success. That write is not on
// the standby and a failover would lose it, so the COMMIT is turned into an
// error: the write is answered UNAVAILABLE and the client's retry (same
// request_id) finds it.
import pg from "pg";

export interface PostgresHost {
  host: string;
  port: number;
}

export interface PostgresHosts {
  hosts: PostgresHost[];
  /** Only servers that accept writes (not in recovery). */
  readWrite: boolean;
  /** The URL with the first host only and without target_session_attrs: what
   * node-postgres and MikroORM parse. */
  singleHostUrl: string;
}

export class PostgresHostsError extends Error {
  override name = "PostgresHostsError";
}

/** Splits a postgres:// URL's host list; a URL with one host comes back with
 * that host (and readWrite only when asked for). */
export function parsePostgresHosts(url: string): PostgresHosts {
  const match = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?$/.exec(url);
  if (match === null) throw new PostgresHostsError("the PostgreSQL URL does not look like postgres://user:password@host:port/database");
  const [, scheme, credentials = "", hostList = "", path = "", query = ""] = match;
  const hosts = hostList.split(",").map((part): PostgresHost => {
    const m = /^(\[[^\]]+\]|[^:]*)(?::(\d+))?$/.exec(part);
    if (m === null || m[1] === "") throw new PostgresHostsError(`the PostgreSQL URL's host "${part}" is not host or host:port`);
    return { host: m[1]!.replace(/^\[|\]$/g, ""), port: m[2] === undefined ? 5432 : Number(m[2]) };
  });
  const params = new URLSearchParams(query.replace(/^\?/, ""));
  const attrs = params.get("target_session_attrs");
  params.delete("target_session_attrs");
  if (attrs !== null && !["read-write", "primary", "any"].includes(attrs)) {
    throw new PostgresHostsError(
      `target_session_attrs=${attrs} is not supported: use read-write (or primary) to reach the primary of several hosts, or any`,
    );
  }
  const readWrite = attrs === null ? hosts.length > 1 : attrs !== "any";
  const first = hosts[0]!;
  const firstHost = first.host.includes(":") ? `[${first.host}]` : first.host;
  const rest = params.toString();
  return { hosts, readWrite, singleHostUrl: `${scheme}${credentials}${firstHost}:${first.port}${path}${rest === "" ? "" : `?${rest}`}` };
}

/** The pg settings for `url`: use these for every client and pool. */
export function postgresClientConfig(url: string): pg.ClientConfig & { Client: typeof pg.Client } {
  const parsed = parsePostgresHosts(url);
  return { connectionString: parsed.singleHostUrl, Client: tallyPgClient(parsed) };
}

const syncRepCancelled = /canceling wait for synchronous replication/i;

/** A pg Client class bound to a host list (see the top of this file). */
export function tallyPgClient(parsed: PostgresHosts): typeof pg.Client {
  let preferred = 0; // shared by every client of this URL: the host that worked last
  return class TallyPgClient extends pg.Client {
    #syncRepCancelled = false;

    constructor(config?: string | pg.ClientConfig) {
      super(config);
      this.on("notice", (notice: { message?: string }) => {
        if (syncRepCancelled.test(notice.message ?? "")) this.#syncRepCancelled = true;
      });
    }

    override connect(): Promise<pg.Client>;
    override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
    // biome-ignore lint/suspicious/noConfusingVoidType: the signature of pg.Client.connect, which this overrides.
    override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
      const connecting = this.#connectToWritable().then(() => this as pg.Client);
      if (callback === undefined) return connecting;
      const done = callback as (err: Error | null, c?: pg.Client) => void;
      connecting.then(
        (client) => done(null, client),
        (error: Error) => done(error),
      );
    }

    async #connectToWritable(): Promise<void> {
      if (parsed.hosts.length === 1 && !parsed.readWrite) {
        await super.connect();
        return;
      }
      const failures: string[] = [];
      for (let i = 0; i < parsed.hosts.length; i++) {
        const index = (preferred + i) % parsed.hosts.length;
        const target = parsed.hosts[index]!;
        const why = parsed.readWrite ? await this.#whyNotWritable(target) : undefined;
        if (why !== undefined) {
          failures.push(`${target.host}:${target.port} ${why}`);
          continue;
        }
        preferred = index;
        const self = this as unknown as { host: string; port: number };
        self.host = target.host;
        self.port = target.port;
        await super.connect();
        return;
      }
      throw Object.assign(
        new Error(
          `no PostgreSQL host accepts writes (target_session_attrs=read-write): ${failures.join("; ")}; waiting for a primary (promote a standby)`,
        ),
        { code: "08001" },
      );
    }

    /** undefined when `target` is a primary, else why not. */
    async #whyNotWritable(target: PostgresHost): Promise<string | undefined> {
      const settings = this as unknown as { connectionParameters: pg.ClientConfig; _connectionTimeoutMillis?: number };
      // The password is not enumerable (pg keeps it out of logs): named here.
      const probe = new pg.Client({
        ...settings.connectionParameters,
        password: settings.connectionParameters.password,
        host: target.host,
        port: target.port,
        connectionTimeoutMillis: settings._connectionTimeoutMillis,
        application_name: "tally-probe",
      } as pg.ClientConfig);
      probe.on("error", () => undefined);
      try {
        await probe.connect();
        const { rows } = await probe.query<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
        return rows[0]?.standby ? "is a standby (in recovery)" : undefined;
      } catch (error) {
        return `is unreachable (${(error as Error).message})`;
      } finally {
        await probe.end().catch(() => undefined);
      }
    }

    // Tally sends one statement at a time per client (each awaited), so a
    // notice belongs to the statement in flight.
    override query(...args: unknown[]): never {
      this.#syncRepCancelled = false;
      const result = (super.query as (...a: unknown[]) => unknown)(...args);
      if (!(result instanceof Promise)) return result as never;
      return result.then((value) => {
        if (!this.#syncRepCancelled) return value;
        this.#syncRepCancelled = false;
        throw Object.assign(
          new Error(
            "the commit was not confirmed by the synchronous standby (its wait was cancelled, so PostgreSQL committed on the primary only): the outcome is unknown, retry with the same request_id",
          ),
          { code: "08006" },
        );
      }) as never;
    }
  };
}
