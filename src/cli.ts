#!/usr/bin/env node
// The `tally` command: `serve` (default) starts the service; `migrate` applies
// pending database migrations and exits; budget/cost/projects talk to a running
// Tally through the API (src/cli-commands.ts); `keys create|list|revoke` manage
// API keys and work on the keys file (src/cli-keys.ts).
import { clientCommands, clientUsage, runClientCommand } from "./cli-commands.ts";
import { keysUsage, runKeysCommand } from "./cli-keys.ts";
import { opsCommands, opsUsage, runOpsCommand } from "./cli-ops.ts";
import { ConfigError, loadConfig, postgresOptionsOf } from "./config.ts";
import { createLogger, LogEvent } from "./log.ts";
import { sqliteBusyTimeoutMs } from "./limits.ts";

const usage = `usage: tally <command>

  serve                                start the service (default); HOST, PORT, TALLY_DATABASE_URL, ...
                                       SIGTERM/SIGINT stop it gracefully; SIGHUP reloads API keys and TLS files
  migrate                              apply pending database migrations and exit
${opsUsage}
${clientUsage}

${keysUsage}

Environment: see README.md ("Configuration").`;

async function main(argv: string[]): Promise<number> {
  const command = argv[0] ?? "serve";
  if (command === "-h" || command === "--help" || command === "help") {
    console.log(usage);
    return 0;
  }
  // Client commands need no server configuration: they only talk to the API.
  if ((clientCommands as readonly string[]).includes(command)) return runClientCommand(argv);
  // Works on the keys file, not through the API.
  if (command === "keys") return runKeysCommand(argv.slice(1));
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`tally: ${error.message}`);
      return 2;
    }
    throw error;
  }
  // Backup, restore, check, migrate-data: on the database, beside or without a server.
  if ((opsCommands as readonly string[]).includes(command))
    return runOpsCommand(command as (typeof opsCommands)[number], argv.slice(1), config.databaseUrl);
  const logger = createLogger(config.logLevel);
  switch (command) {
    case "migrate": {
      // Loaded here, not at the top: client commands start faster without the ORM.
      const { initORM, redactDatabaseUrl } = await import("./store/orm.ts");
      const { store, applied } = await initORM(
        config.databaseUrl,
        { synchronous: config.sqliteSynchronous, busyTimeoutMs: sqliteBusyTimeoutMs },
        {
          ...postgresOptionsOf(config),
          onConnectRetry: ({ attempt, delayMs, error }) =>
            logger.warn({ event: LogEvent.databaseConnectRetry, attempt, delayMs, message: error.message }),
        },
      );
      logger.info({ event: LogEvent.migrationsApplied, migrations: applied, databaseUrl: redactDatabaseUrl(config.databaseUrl) });
      await store.close();
      return 0;
    }
    case "serve": {
      const [{ startServer }, { DatabaseConnectError, DatabaseUrlError }, { DatabaseInUseError, DatabaseOpenError }, { StartupError }] =
        await Promise.all([
          import("./server.ts"),
          import("./store/orm.ts"),
          import("./store/sqlite/connection.ts"),
          import("./security.ts"),
        ]);
      let server;
      try {
        server = await startServer(config, logger);
      } catch (error) {
        if (error instanceof StartupError) {
          logger.fatal({ event: LogEvent.serverStartFailed, message: error.message });
          console.error(`tally: ${error.message}`);
          return 1;
        }
        if (error instanceof DatabaseInUseError || error instanceof DatabaseOpenError) {
          logger.fatal({ event: LogEvent.serverStartFailed, message: error.message });
          console.error(`tally: ${error.message}`);
          return 1;
        }
        if (
          error instanceof DatabaseUrlError ||
          error instanceof DatabaseConnectError ||
          (error as NodeJS.ErrnoException).code === "EADDRINUSE" ||
          (error as NodeJS.ErrnoException).code === "EACCES"
        ) {
          logger.fatal({ event: LogEvent.serverStartFailed, message: (error as Error).message });
          return 1;
        }
        throw error;
      }
      const stopped = new Promise<number>((resolve) => {
        const onSignal = (signal: NodeJS.Signals) => {
          logger.info({ event: LogEvent.signalReceived, signal });
          server.close().then(
            () => resolve(0),
            (error: unknown) => {
              logger.error({ event: LogEvent.serverStopped, err: error });
              resolve(1);
            },
          );
        };
        process.once("SIGTERM", onSignal);
        process.once("SIGINT", onSignal);
        // SIGHUP reloads keys and certificates; a bad file keeps the old ones (logged).
        process.on("SIGHUP", (signal) => {
          logger.info({ event: LogEvent.signalReceived, signal });
          server.reload();
        });
      });
      return stopped;
    }
    default:
      console.error(`tally: unknown command "${command}"\n\n${usage}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
