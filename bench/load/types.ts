// What every load driver (ghz, or the Node.js one) reports for one run.
/** CheckBudgetReserve is CheckBudget with reserve = true (a hold, 60 s TTL). */
export type Rpc = "RecordCost" | "CheckBudget" | "CheckBudgetReserve" | "GetProjectCost";

export interface LoadSpec {
  /** host:port on loopback. */
  address: string;
  rpc: Rpc;
  concurrency: number;
  durationMs: number;
  /** Tag that makes this run's request_ids unique. */
  tag: string;
  /** Projects are `${projectPrefix}${n % projects}`. */
  projectPrefix: string;
  projects: number;
  /** Draw the project at random from 0..projects-1 instead of round robin. */
  randomProject?: boolean;
  /** RecordCost's model (default "bench"); "" sends none, so Tally looks no
   * price up in the catalog before queueing the write. */
  model?: string;
  /** RecordCost's and CheckBudget's agent_id (default none). */
  agentId?: string;
  /** Also return every successful call's latency (to merge several drivers' percentiles). */
  keepLatencies?: boolean;
}

export interface LoadResult {
  ok: number;
  errors: number;
  /** Error messages and counts (e.g. calls cut off when the run's time was up). */
  errorKinds: Record<string, number>;
  /** Successful calls per second over the run. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Every successful call's latency in ms, when LoadSpec.keepLatencies. */
  latenciesMs?: number[];
}

/** The request each RPC is driven with, as proto JSON (ghz's -d). `{{n}}` is
 * replaced by the driver with the request number, `{{p}}` by the project index. */
export function requestTemplate(spec: LoadSpec): Record<string, string | boolean> {
  const projectId = `${spec.projectPrefix}{{p}}`;
  const agent: Record<string, string> = spec.agentId === undefined ? {} : { agent_id: spec.agentId };
  switch (spec.rpc) {
    case "RecordCost":
      return {
        project_id: projectId,
        cost_nanos: "1000",
        input_tokens: "10",
        output_tokens: "5",
        model: spec.model ?? "bench",
        request_id: `${spec.tag}-{{n}}`,
        ...agent,
      };
    case "CheckBudget":
      return { project_id: projectId, estimated_cost_nanos: "1000", ...agent };
    case "CheckBudgetReserve":
      return { project_id: projectId, estimated_cost_nanos: "1000", reserve: true, hold_ttl: "60s" };
    case "GetProjectCost":
      return { project_id: projectId };
  }
}

/** The gRPC method an Rpc calls. */
export function methodOf(rpc: Rpc): string {
  return rpc === "CheckBudgetReserve" ? "CheckBudget" : rpc;
}
