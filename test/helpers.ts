// Shared test wiring: a real Tally on an ephemeral port, and clients for it.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { defaultConfig, type TallyConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { startServer, type TallyServer } from "../src/server.ts";

export type BudgetClient = Client<typeof BudgetService>;

export function tempDatabaseUrl(): string {
  return `sqlite:${join(mkdtempSync(join(tmpdir(), "tally-test-")), "tally.db")}`;
}

export async function startTestServer(overrides: Partial<TallyConfig> = {}): Promise<TallyServer> {
  const config: TallyConfig = { ...defaultConfig, port: 0, databaseUrl: "sqlite::memory:", logLevel: "silent", ...overrides };
  return startServer(config, createLogger(config.logLevel));
}

/** One client per protocol and HTTP version Tally serves. */
export function clientsFor(baseUrl: string): Record<string, BudgetClient> {
  return {
    "connect+proto h2c": createClient(BudgetService, createConnectTransport({ baseUrl, httpVersion: "2" })),
    "connect+json http/1.1": createClient(BudgetService, createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false })),
    "grpc h2c": createClient(BudgetService, createGrpcTransport({ baseUrl })),
    "grpc-web http/1.1": createClient(BudgetService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })),
  };
}

export const usd = (dollars: number): bigint => BigInt(Math.round(dollars * 1_000_000)) * 1_000n;
