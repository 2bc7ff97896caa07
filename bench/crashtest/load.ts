// One crash-test load process: `workers` agents, each sending RecordCost calls
// one after another and retrying each until it is acknowledged, exactly as a
// well-behaved client must: the same request_id on every attempt, retrying on
// UNAVAILABLE, connection errors and timeouts (the server is being killed under
// it). Started by bench/crashtest/main.ts with fork(); on {type:"stop"} it
// abandons the attempts in flight (their fate is unknown: committed or not) and
// reports what was acknowledged and what was not.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { CrashRequest, LoadReport } from "./protocol.ts";
import { retryable } from "./protocol.ts";

const url = requiredEnv("CRASH_URL");
const loaderId = requiredEnv("CRASH_LOADER");
const workers = Number(requiredEnv("CRASH_WORKERS"));
const projects = Number(requiredEnv("CRASH_PROJECTS"));
const attemptTimeoutMs = Number(requiredEnv("CRASH_ATTEMPT_TIMEOUT_MS"));
const runMsMax = Number(requiredEnv("CRASH_RUN_MS_MAX"));
/** Acknowledged requests kept to re-send at the end (each must come back as a duplicate). */
const sampleMax = 50;

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

const client = createClient(BudgetService, createGrpcTransport({ baseUrl: url }));
const stopController = new AbortController();
const report: LoadReport = {
  loader: loaderId,
  acknowledged: {},
  unacknowledged: [],
  sample: [],
  attempts: 0,
  retriesByCode: {},
  duplicatesAnswered: 0,
  rejected: [],
  holdsPlaced: 0,
  holdsSettled: 0,
  holdsAbandoned: 0,
  holdsExpiredBeforeSettle: 0,
  reserveRetries: 0,
};

/** A payload that is different for every request, so a lost or doubled write
 * changes the sums. */
function makeRequest(worker: number, seq: number): CrashRequest {
  const n = worker * 1_000_003 + seq * 7919;
  return {
    projectId: `crash-p${(worker + seq) % projects}`,
    requestId: `${loaderId}-w${worker}-${seq}`,
    costNanos: String(1 + (n % 999_983)),
    inputTokens: String(n % 4096),
    outputTokens: String(n % 1024),
  };
}

let ackedSinceProgress = 0;

function acknowledge(req: CrashRequest): void {
  ackedSinceProgress++;
  let bucket = report.acknowledged[req.projectId];
  if (bucket === undefined) {
    bucket = { count: 0, costNanos: "0", inputTokens: "0", outputTokens: "0" };
    report.acknowledged[req.projectId] = bucket;
  }
  bucket.count++;
  bucket.costNanos = String(BigInt(bucket.costNanos) + BigInt(req.costNanos));
  bucket.inputTokens = String(BigInt(bucket.inputTokens) + BigInt(req.inputTokens));
  bucket.outputTokens = String(BigInt(bucket.outputTokens) + BigInt(req.outputTokens));
  // Reservoir-free sampling: keep the first few and then every 97th.
  if (report.sample.length < sampleMax && (report.sample.length < sampleMax / 2 || report.attempts % 97 === 0)) report.sample.push(req);
}

/** Every 4th call reserves first (CheckBudget reserve = true, 1 s TTL), under
 * the call's request_id, so a reservation lost to a kill is retried safely: a
 * retry answers with the hold already placed, never a second one (up to
 * reserveAttemptsMax attempts; a retry after the hold expired fails with
 * FAILED_PRECONDITION and the call goes on without a hold). Half of the holds
 * are settled by the RecordCost (hold_id), the other half abandoned to expire:
 * the orchestrator checks that no hold is still counted after its TTL. */
const reserveAttemptsMax = 3;
async function reserve(req: CrashRequest, seq: number): Promise<string> {
  if (seq % 4 !== 0) return "";
  for (let attempt = 1; attempt <= reserveAttemptsMax && !stopController.signal.aborted; attempt++) {
    try {
      const res = await client.checkBudget(
        {
          projectId: req.projectId,
          estimatedCostNanos: BigInt(req.costNanos),
          reserve: true,
          holdTtl: { seconds: 1n, nanos: 0 },
          requestId: req.requestId,
        },
        { timeoutMs: attemptTimeoutMs, signal: stopController.signal },
      );
      if (attempt > 1) report.reserveRetries++;
      if (!res.holdId) return "";
      report.holdsPlaced++;
      if (seq % 8 === 0) return res.holdId;
      report.holdsAbandoned++;
      return "";
    } catch (error) {
      if (!retryable(ConnectError.from(error).code)) return "";
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
  return "";
}

async function worker(w: number): Promise<void> {
  for (let seq = 0; !stopController.signal.aborted; seq++) {
    const req = makeRequest(w, seq);
    let holdId = await reserve(req, seq);
    let backoffMs = 10;
    for (;;) {
      if (stopController.signal.aborted) {
        report.unacknowledged.push({ ...req, holdId });
        return;
      }
      report.attempts++;
      try {
        const res = await client.recordCost(
          {
            ...req,
            costNanos: BigInt(req.costNanos),
            inputTokens: BigInt(req.inputTokens),
            outputTokens: BigInt(req.outputTokens),
            model: "crash-test",
            holdId,
          },
          { timeoutMs: attemptTimeoutMs, signal: stopController.signal },
        );
        if (res.duplicate) report.duplicatesAnswered++;
        if (holdId && !res.duplicate) report.holdsSettled++;
        acknowledge({ ...req, holdId });
        break;
      } catch (error) {
        if (stopController.signal.aborted) {
          report.unacknowledged.push({ ...req, holdId });
          return;
        }
        const code = ConnectError.from(error).code;
        const name = Code[code] ?? String(code);
        if (code === Code.FailedPrecondition && holdId) {
          // The hold expired (or its placing was lost) while the server was
          // down and this request was never recorded: as the contract says,
          // record the cost without it.
          holdId = "";
          report.holdsExpiredBeforeSettle++;
          continue;
        }
        if (!retryable(code)) {
          // Never expected: the payloads are valid and keys never reused with
          // another payload. Reported; the orchestrator fails the run.
          report.rejected.push({ request: req, code: name, message: ConnectError.from(error).rawMessage });
          break;
        }
        report.retriesByCode[name] = (report.retriesByCode[name] ?? 0) + 1;
        await new Promise((resolve) => setTimeout(resolve, backoffMs * (0.5 + Math.random())));
        backoffMs = Math.min(backoffMs * 2, 250);
      }
    }
  }
}

process.on("message", (message: { type?: string }) => {
  if (message.type === "stop") stopController.abort();
});
// Bounded even if the orchestrator never says stop.
const guard = setTimeout(() => stopController.abort(), runMsMax);
// Progress lets the orchestrator kill only while writes are being acknowledged.
const progress = setInterval(() => {
  if (ackedSinceProgress === 0) return;
  process.send?.({ type: "progress", acked: ackedSinceProgress });
  ackedSinceProgress = 0;
}, 20);

await Promise.all(Array.from({ length: workers }, (_, w) => worker(w)));
clearTimeout(guard);
clearInterval(progress);
process.send?.({ type: "report", report }, () => process.exit(0));
