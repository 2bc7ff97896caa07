// Drives a gRPC server with ghz (Go; installed pinned into .tools/bin by
// scripts/install-ghz.sh). ghz is a separate process with its own runtime, so
// the load generator's cost is not Node's; it is given one CPU (--cpus 1) so it
// leaves the other to the server on a 2-core machine.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { repoRoot } from "../lib/process.ts";
import { methodOf, requestTemplate, type LoadResult, type LoadSpec } from "./types.ts";

const run = promisify(execFile);
export const ghzBin = join(repoRoot, ".tools/bin/ghz");

export function ghzAvailable(): boolean {
  return existsSync(ghzBin);
}

interface GhzReport {
  count: number;
  total: number;
  rps: number;
  latencyDistribution: Array<{ percentage: number; latency: number }> | null;
  statusCodeDistribution: Record<string, number>;
  errorDistribution?: Record<string, number> | null;
  details?: Array<{ latency: number; status: string }> | null;
}

export async function runGhz(spec: LoadSpec): Promise<LoadResult> {
  const project = spec.randomProject ? `{{randInt 0 ${spec.projects}}}` : `{{mod .RequestNumber ${spec.projects}}}`;
  const data = JSON.stringify(requestTemplate(spec)).replaceAll("{{p}}", project).replaceAll("{{n}}", "{{.RequestNumber}}");
  const args = [
    "--insecure",
    "--proto",
    join(repoRoot, "proto/tally/budget/v1/budget.proto"),
    "--import-paths",
    join(repoRoot, "proto"),
    "--call",
    `tally.budget.v1.BudgetService.${methodOf(spec.rpc)}`,
    "-d",
    data,
    "-c",
    String(spec.concurrency),
    "-z",
    `${spec.durationMs}ms`,
    "--connections",
    "1",
    "--cpus",
    "1",
    "--timeout",
    "10s",
    "-O",
    "json",
    spec.address,
  ];
  const { stdout } = await run(ghzBin, args, { maxBuffer: 64 * 1024 * 1024, timeout: spec.durationMs + 60_000 });
  const report = JSON.parse(stdout) as GhzReport;
  const ok = report.statusCodeDistribution.OK ?? 0;
  const errorKinds: Record<string, number> = {};
  for (const [message, n] of Object.entries(report.errorDistribution ?? {})) {
    // ghz cancels the calls in flight when its time is up; those are not server errors.
    const kind = /closed network connection|context canceled|transport is closing/.test(message)
      ? "cut off at the end of the run"
      : message.slice(0, 160);
    errorKinds[kind] = (errorKinds[kind] ?? 0) + n;
  }
  const percentile = (p: number) => (report.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? NaN) / 1e6;
  const result: LoadResult = {
    ok,
    errors: report.count - ok,
    errorKinds,
    rps: ok / (report.total / 1e9),
    p50Ms: percentile(50),
    p99Ms: percentile(99),
  };
  if (spec.keepLatencies) result.latenciesMs = (report.details ?? []).filter((d) => d.status === "OK").map((d) => d.latency / 1e6);
  return result;
}
