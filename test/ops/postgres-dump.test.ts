// Backup and restore of a PostgreSQL Tally as docs/deploy.md says: pg_dump
// (custom format) while Tally takes writes, pg_restore into an empty database.
// pg_dump reads one snapshot, so the restored database has every write
// acknowledged before the dump began, passes `tally check`, and a retried
// request_id is a duplicate there.
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { checkDatabase } from "../../src/ops/check.ts";
import { openOpsDatabase } from "../../src/ops/database.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { startTestServer } from "../helpers.ts";

const run = promisify(execFile);

describe.skipIf(!databaseKinds.includes("postgresql"))("PostgreSQL backup with pg_dump under load", () => {
  const databases = new TestDatabases("postgresql");
  afterAll(() => databases.cleanup());

  it("restores every write acknowledged before the dump began; check passes; retries are duplicates", { timeout: 120_000 }, async () => {
    const sourceUrl = await databases.durable();
    const server = await startTestServer({ databaseUrl: sourceUrl });
    const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    const acked: Array<{ projectId: string; requestId: string; costNanos: bigint; holdId: string }> = [];
    let stop = false;
    const writer = async (w: number) => {
      for (let seq = 0; !stop; seq++) {
        const projectId = `dump-p${(w + seq) % 8}`;
        const requestId = `w${w}-${seq}`;
        const costNanos = BigInt(1 + ((w * 131 + seq * 17) % 10_000));
        const holdId =
          seq % 5 === 0
            ? (await client.checkBudget({ projectId, estimatedCostNanos: costNanos, reserve: true, holdTtl: { seconds: 600n, nanos: 0 } }))
                .holdId
            : "";
        await client.recordCost({ projectId, requestId, costNanos, inputTokens: 2n, outputTokens: 1n, agentId: `a${w % 3}`, holdId });
        acked.push({ projectId, requestId, costNanos, holdId });
      }
    };
    const load = Promise.all(Array.from({ length: 16 }, (_, w) => writer(w)));
    while (acked.length < 200) await new Promise((resolve) => setTimeout(resolve, 20));

    const ackedBefore = acked.length;
    const file = join(mkdtempSync(join(tmpdir(), "tally-pgdump-")), "tally.dump");
    await run("pg_dump", ["--format=custom", `--file=${file}`, sourceUrl]);
    stop = true;
    await load;
    await server.close();

    const restoredUrl = await databases.durable();
    await run("pg_restore", ["--no-owner", `--dbname=${restoredUrl}`, file]);
    const db = await openOpsDatabase(restoredUrl);
    try {
      const report = await checkDatabase(db);
      expect(report.problems).toEqual([]);
      const present = new Set((await db.all("SELECT project_id || '/' || request_id AS k FROM cost_records")).map((r) => String(r.k)));
      const lost = acked.slice(0, ackedBefore).filter((a) => !present.has(`${a.projectId}/${a.requestId}`));
      expect(lost).toEqual([]);
      expect(report.records).toBeGreaterThanOrEqual(BigInt(ackedBefore));
      expect(report.records).toBeLessThanOrEqual(BigInt(acked.length));
    } finally {
      await db.close();
    }

    const restored = await startTestServer({ databaseUrl: restoredUrl });
    try {
      const again = createClient(BudgetService, createGrpcTransport({ baseUrl: restored.url }));
      for (const a of acked.slice(0, ackedBefore).filter((_, i) => i % 25 === 0)) {
        const res = await again
          .recordCost({
            projectId: a.projectId,
            requestId: a.requestId,
            costNanos: a.costNanos,
            inputTokens: 2n,
            outputTokens: 1n,
            agentId: `a${Number(/^w(\d+)/.exec(a.requestId)?.[1]) % 3}`,
            holdId: a.holdId,
          })
          .catch((error: unknown) => {
            throw new Error(`retry of ${a.projectId}/${a.requestId} after pg_restore: ${ConnectError.from(error).message}`);
          });
        expect(res.duplicate).toBe(true);
      }
      // New records get new ids after the restored ones (the sequence came along).
      const fresh = await again.recordCost({
        projectId: "dump-p0",
        requestId: "after-restore",
        costNanos: 1n,
        inputTokens: 0n,
        outputTokens: 0n,
      });
      expect(fresh.duplicate).toBe(false);
    } finally {
      await restored.close();
    }
  });
});
