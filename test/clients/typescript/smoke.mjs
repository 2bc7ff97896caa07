// Smoke test of the npm package gen/ts (@tally/client) as an agent uses it:
// test/clients/typescript.test.ts packs it, installs the tarball into an empty
// project with @connectrpc/connect and @connectrpc/connect-node, type-checks
// this file against the package's declarations (tsc --checkJs) and runs it
// with node against a Tally it started. It starts nothing itself.
//
//   TALLY_URL=http://127.0.0.1:8080 node smoke.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetDecisionReason, BudgetService } from "@tally/client/tally/budget/v1/budget_pb";

const baseUrl = process.env.TALLY_URL;
if (!baseUrl) throw new Error("TALLY_URL is not set: point it at a running Tally, e.g. http://127.0.0.1:8080");
const usd = 1_000_000_000n; // nanos

const transports = {
  "connect http/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "grpc h2c": createGrpcTransport({ baseUrl }),
};

for (const [name, transport] of Object.entries(transports)) {
  const client = createClient(BudgetService, transport);
  const projectId = `ts-smoke-${randomUUID()}`; // unique: passes against a long-lived Tally too

  const { budget } = await client.setProjectBudget({ projectId, limitNanos: 10n * usd });
  assert.equal(budget?.configured, true);
  assert.equal(budget?.limitNanos, 10n * usd);

  const check = await client.checkBudget({ projectId, estimatedCostNanos: 2n * usd });
  assert.equal(check.allowed, true);
  assert.equal(check.reason, BudgetDecisionReason.WITHIN_BUDGET);
  assert.equal(check.remainingNanos, 10n * usd);

  const record = {
    projectId,
    costNanos: 1_500_000_000n,
    inputTokens: 1200n,
    outputTokens: 300n,
    model: "gpt-4o-mini",
    agentId: "ts-smoke",
    requestId: "call-0001",
  };
  const first = await client.recordCost(record);
  assert.equal(first.duplicate, false);
  assert.equal(first.projectCost?.totalCostNanos, 1_500_000_000n);

  // A retry (same request_id, same payload) is counted once.
  const retry = await client.recordCost(record);
  assert.equal(retry.duplicate, true);
  assert.equal(retry.projectCost?.totalCostNanos, 1_500_000_000n);

  const { projectCost } = await client.getProjectCost({ projectId });
  assert.deepEqual(
    [projectCost?.totalCostNanos, projectCost?.inputTokens, projectCost?.outputTokens, projectCost?.recordCount],
    [1_500_000_000n, 1200n, 300n, 1n],
  );

  const refused = await client.recordCost({ projectId, costNanos: -1n, requestId: "bad" }).then(
    () => assert.fail("a negative cost was accepted"),
    (error) => error,
  );
  assert.ok(refused instanceof ConnectError, `want a ConnectError, got ${refused}`);
  assert.equal(refused.code, Code.InvalidArgument);
  assert.match(refused.rawMessage, /cost_nanos must be >= 0/);

  console.log(`ok ${name}`);
}
