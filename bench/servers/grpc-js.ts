// The plain @grpc/grpc-js comparison server, for the benchmark:
//
//   MODE=memory  totals in a JavaScript Map (exact bigint sums, idempotent on
//                request_id), nothing durable: what a quick grpc-js service is.
//   MODE=noop    answers without doing anything: grpc-js's own ceiling.
//
// Usage: MODE=memory|noop PORT=0 node bench/servers/grpc-js.ts
// Logs {"event":"server.listening","url":...} on stdout, stops on SIGTERM/SIGINT.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const protoDir = fileURLToPath(new URL("../../proto", import.meta.url));

interface Totals {
  total_cost_nanos: bigint;
  input_tokens: bigint;
  output_tokens: bigint;
  record_count: bigint;
}
type Unary = grpc.handleUnaryCall<any, any>;

function costMessage(projectId: string, t: Totals | undefined) {
  return {
    project_id: projectId,
    total_cost_nanos: String(t?.total_cost_nanos ?? 0n),
    input_tokens: String(t?.input_tokens ?? 0n),
    output_tokens: String(t?.output_tokens ?? 0n),
    record_count: String(t?.record_count ?? 0n),
  };
}

export function memoryImpl(): Record<string, Unary> {
  const totals = new Map<string, Totals>();
  const budgets = new Map<string, bigint>();
  const seen = new Map<string, { cost: string; after: ReturnType<typeof costMessage> }>();
  return {
    RecordCost(call, callback) {
      const r = call.request;
      const key = `${r.project_id}\u0000${r.request_id}`;
      const prior = seen.get(key);
      if (prior) {
        if (prior.cost !== r.cost_nanos)
          return callback({ code: grpc.status.ALREADY_EXISTS, details: "request_id reused with another payload" });
        return callback(null, { project_cost: prior.after, duplicate: true, request_id: r.request_id });
      }
      const t = totals.get(r.project_id) ?? { total_cost_nanos: 0n, input_tokens: 0n, output_tokens: 0n, record_count: 0n };
      t.total_cost_nanos += BigInt(r.cost_nanos);
      t.input_tokens += BigInt(r.input_tokens);
      t.output_tokens += BigInt(r.output_tokens);
      t.record_count += 1n;
      totals.set(r.project_id, t);
      const after = costMessage(r.project_id, t);
      seen.set(key, { cost: r.cost_nanos, after });
      callback(null, { project_cost: after, duplicate: false, request_id: r.request_id });
    },
    GetProjectCost(call, callback) {
      callback(null, { project_cost: costMessage(call.request.project_id, totals.get(call.request.project_id)) });
    },
    CheckBudget(call, callback) {
      const limit = budgets.get(call.request.project_id) ?? 0n;
      const spent = totals.get(call.request.project_id)?.total_cost_nanos ?? 0n;
      const estimate = BigInt(call.request.estimated_cost_nanos);
      const remaining = limit - spent;
      const allowed = limit === 0n || (remaining > 0n && estimate <= remaining);
      const reason =
        limit === 0n
          ? "BUDGET_DECISION_REASON_NO_LIMIT"
          : remaining <= 0n
            ? "BUDGET_DECISION_REASON_EXHAUSTED"
            : allowed
              ? "BUDGET_DECISION_REASON_WITHIN_BUDGET"
              : "BUDGET_DECISION_REASON_EXCEEDS_REMAINING";
      callback(null, {
        allowed,
        limit_nanos: String(limit),
        spent_nanos: String(spent),
        remaining_nanos: String(limit === 0n ? 0n : remaining),
        reason,
        estimated_cost_nanos: String(estimate),
        currency: "USD",
      });
    },
    SetProjectBudget(call, callback) {
      budgets.set(call.request.project_id, BigInt(call.request.limit_nanos));
      callback(null, {
        budget: { project_id: call.request.project_id, limit_nanos: call.request.limit_nanos, currency: "USD", configured: true },
      });
    },
    GetProjectBudget(call, callback) {
      const limit = budgets.get(call.request.project_id);
      callback(null, {
        budget: { project_id: call.request.project_id, limit_nanos: String(limit ?? 0n), currency: "USD", configured: limit !== undefined },
      });
    },
  };
}

export function noopImpl(): Record<string, Unary> {
  return {
    RecordCost: (call, callback) =>
      callback(null, { project_cost: { project_id: call.request.project_id }, request_id: call.request.request_id }),
    GetProjectCost: (call, callback) => callback(null, { project_cost: { project_id: call.request.project_id } }),
    CheckBudget: (call, callback) =>
      callback(null, {
        allowed: true,
        reason: "BUDGET_DECISION_REASON_NO_LIMIT",
        estimated_cost_nanos: call.request.estimated_cost_nanos,
        currency: "USD",
      }),
    SetProjectBudget: (call, callback) =>
      callback(null, {
        budget: { project_id: call.request.project_id, limit_nanos: call.request.limit_nanos, currency: "USD", configured: true },
      }),
    GetProjectBudget: (call, callback) => callback(null, { budget: { project_id: call.request.project_id, currency: "USD" } }),
  };
}

export async function startGrpcJsServer(
  impl: Record<string, Unary>,
  port: number,
  host = "127.0.0.1",
): Promise<{ url: string; server: grpc.Server }> {
  const definition = protoLoader.loadSync("tally/budget/v1/budget.proto", {
    includeDirs: [protoDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as any;
  const server = new grpc.Server();
  server.addService(pkg.tally.budget.v1.BudgetService.service, impl);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  return { url: `http://${host}:${bound}`, server };
}

if (import.meta.main) {
  const mode = process.env.MODE ?? "memory";
  if (mode !== "memory" && mode !== "noop") throw new Error(`MODE=${mode}: expected memory or noop`);
  const { url, server } = await startGrpcJsServer(mode === "memory" ? memoryImpl() : noopImpl(), Number(process.env.PORT ?? 0));
  console.log(JSON.stringify({ event: "server.listening", url, mode }));
  const stop = () => server.tryShutdown(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}
