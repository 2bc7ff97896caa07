// The Node.js load generator, used when ghz is not installed (no Go): a
// separate process with `concurrency` workers calling over one HTTP/2
// connection with Connect's gRPC transport until the duration is up.
// Usage: node bench/load/node-driver.ts '<LoadSpec JSON>'  -> prints LoadResult JSON.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fromJson } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BudgetService,
  CheckBudgetRequestSchema,
  GetProjectCostRequestSchema,
  RecordCostRequestSchema,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { requestTemplate, type LoadResult, type LoadSpec } from "./types.ts";

const run = promisify(execFile);
const self = fileURLToPath(import.meta.url);

/** Runs the driver in its own process and returns its result. */
export async function runNodeDriver(spec: LoadSpec): Promise<LoadResult> {
  const { stdout } = await run(process.execPath, [self, JSON.stringify(spec)], {
    timeout: spec.durationMs + 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout) as LoadResult;
}

async function main(spec: LoadSpec): Promise<LoadResult> {
  const client = createClient(BudgetService, createGrpcTransport({ baseUrl: `http://${spec.address}` }));
  const template = JSON.stringify(requestTemplate(spec));
  let n = 0;
  const latenciesMs: number[] = [];
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  const endMs = performance.now() + spec.durationMs;
  const call = (i: number) => {
    const p = spec.randomProject ? Math.floor(Math.random() * spec.projects) : i % spec.projects;
    const json = JSON.parse(template.replaceAll("{{p}}", String(p)).replaceAll("{{n}}", String(i)));
    switch (spec.rpc) {
      case "RecordCost":
        return client.recordCost(fromJson(RecordCostRequestSchema, json), { timeoutMs: 10_000 });
      case "CheckBudget":
      case "CheckBudgetReserve":
        return client.checkBudget(fromJson(CheckBudgetRequestSchema, json), { timeoutMs: 10_000 });
      case "GetProjectCost":
        return client.getProjectCost(fromJson(GetProjectCostRequestSchema, json), { timeoutMs: 10_000 });
    }
  };
  const startedMs = performance.now();
  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (performance.now() < endMs) {
        const t0 = performance.now();
        try {
          await call(n++);
          latenciesMs.push(performance.now() - t0);
        } catch (error) {
          errors++;
          const message = ConnectError.from(error).message.slice(0, 160);
          errorKinds[message] = (errorKinds[message] ?? 0) + 1;
        }
      }
    }),
  );
  const seconds = (performance.now() - startedMs) / 1000;
  latenciesMs.sort((a, b) => a - b);
  const pct = (p: number) => latenciesMs[Math.min(latenciesMs.length - 1, Math.floor((p / 100) * latenciesMs.length))] ?? NaN;
  return { ok: latenciesMs.length, errors, errorKinds, rps: latenciesMs.length / seconds, p50Ms: pct(50), p99Ms: pct(99) };
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? "") as LoadSpec;
  console.log(JSON.stringify(await main(spec)));
}
