// How a pg client reaches PostgreSQL from a database URL.
import type pg from "pg";

/** The pg client settings for `url`. */
export function postgresClientConfig(url: string): pg.ClientConfig {
  return { connectionString: url };
}
