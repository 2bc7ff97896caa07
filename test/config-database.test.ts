import { describe, expect, it } from "vitest";
import { ConfigError, defaultConfig, loadConfig, postgresOptionsOf } from "../src/config.ts";

describe("database settings", () => {
  it("defaults to sane PostgreSQL pool, timeouts and start-up retry", () => {
    const config = loadConfig({});
    expect(postgresOptionsOf(config)).toEqual({ poolSize: 10, statementTimeoutMs: 5_000, connectTimeoutMs: 5_000, connectRetryMs: 60_000 });
    expect(config.databaseUrl).toBe(defaultConfig.databaseUrl);
  });

  it("reads every setting from the environment", () => {
    const config = loadConfig({
      TALLY_DATABASE_URL: "postgres://tally:x@db:5432/tally",
      TALLY_DATABASE_POOL_SIZE: "25",
      TALLY_DATABASE_STATEMENT_TIMEOUT_MS: "2500",
      TALLY_DATABASE_CONNECT_TIMEOUT_MS: "1000",
      TALLY_DATABASE_CONNECT_RETRY_MS: "0",
    });
    expect(config.databaseUrl).toBe("postgres://tally:x@db:5432/tally");
    expect(postgresOptionsOf(config)).toEqual({ poolSize: 25, statementTimeoutMs: 2_500, connectTimeoutMs: 1_000, connectRetryMs: 0 });
  });

  it("refuses values it cannot honour, naming the variable", () => {
    expect(() => loadConfig({ TALLY_DATABASE_POOL_SIZE: "1" })).toThrow(ConfigError);
    expect(() => loadConfig({ TALLY_DATABASE_POOL_SIZE: "1" })).toThrow(/TALLY_DATABASE_POOL_SIZE=1 is outside 2\.\.1000/);
    expect(() => loadConfig({ TALLY_DATABASE_STATEMENT_TIMEOUT_MS: "5s" })).toThrow(
      /TALLY_DATABASE_STATEMENT_TIMEOUT_MS="5s" is not a whole number/,
    );
    expect(() => loadConfig({ TALLY_DATABASE_CONNECT_TIMEOUT_MS: "0" })).toThrow(/TALLY_DATABASE_CONNECT_TIMEOUT_MS/);
  });
});
