// Multi-host PostgreSQL URLs (failover): parsed as libpq's are; a client
// skips hosts that are down and servers in recovery, and says so when no
// host accepts writes (SQLSTATE 08001: UNAVAILABLE to callers).
import { describe, expect, it } from "vitest";
import { isPostgresUnavailable } from "../../src/store/postgres/errors.ts";
import { parseDatabaseUrl } from "../../src/store/orm.ts";
import { parsePostgresHosts, postgresClientConfig } from "../../src/store/postgres/hosts.ts";
import { postgresAdminUrl } from "../databases.ts";
import { freePort } from "../../bench/lib/process.ts";

describe("multi-host PostgreSQL URLs", () => {
  it("splits the hosts, defaults the port, and keeps the other parameters", () => {
    expect(
      parsePostgresHosts("postgres://u:p%40ss@db-a:5433,db-b,[::1]:6000/tally?target_session_attrs=read-write&sslmode=require"),
    ).toEqual({
      hosts: [
        { host: "db-a", port: 5433 },
        { host: "db-b", port: 5432 },
        { host: "::1", port: 6000 },
      ],
      readWrite: true,
      singleHostUrl: "postgres://u:p%40ss@db-a:5433/tally?sslmode=require",
    });
    expect(parsePostgresHosts("postgresql://u@h1:1,h2:2/d").readWrite).toBe(true); // several hosts: the primary
    expect(parsePostgresHosts("postgres://u@h:5432/d")).toMatchObject({ readWrite: false, singleHostUrl: "postgres://u@h:5432/d" });
    expect(parsePostgresHosts("postgres://u@h1,h2/d?target_session_attrs=any").readWrite).toBe(false);
    expect(parseDatabaseUrl("postgres://u:p@h1:1,h2:2/d?target_session_attrs=primary")).toEqual({
      driver: "postgresql",
      url: "postgres://u:p@h1:1,h2:2/d?target_session_attrs=primary",
    });
  });

  it("refuses what it cannot honour, naming it", () => {
    expect(() => parseDatabaseUrl("postgres://u:p@h1,h2/d?target_session_attrs=standby")).toThrow(
      /target_session_attrs=standby is not supported: use read-write/,
    );
    expect(() => parseDatabaseUrl("postgres://u:p@h1,:5/d")).toThrow(/host ":5" is not host or host:port/);
  });

  it.skipIf(postgresAdminUrl === undefined)("connects to the first host that accepts writes, skipping one that is down", async () => {
    const admin = new URL(postgresAdminUrl!);
    const down = await freePort(); // nothing listens there
    const url = `postgres://${admin.username}:${admin.password}@127.0.0.1:${down},${admin.hostname}:${admin.port}${admin.pathname}?target_session_attrs=read-write`;
    const config = postgresClientConfig(url);
    const client = new config.Client({ ...config, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      expect((await client.query("SELECT pg_is_in_recovery() AS standby")).rows[0]).toEqual({ standby: false });
    } finally {
      await client.end();
    }
    const nowhere = postgresClientConfig(`postgres://u:p@127.0.0.1:${down},127.0.0.1:${down}/d?target_session_attrs=read-write`);
    const failing = new nowhere.Client({ ...nowhere, connectionTimeoutMillis: 2_000 });
    const error = await failing.connect().then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(
      /^no PostgreSQL host accepts writes \(target_session_attrs=read-write\): 127\.0\.0\.1:\d+ is unreachable .*; waiting for a primary/,
    );
    expect(isPostgresUnavailable(error)).toBe(true);
  });
});
