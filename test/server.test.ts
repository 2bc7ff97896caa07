// The real server on an ephemeral port, called three ways (the generated Connect
// client, @grpc/grpc-js with @grpc/proto-loader reading proto/, and buf curl),
// plus restarts on the same file, concurrency, plain HTTP/1.1 and shutdown.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TallyServer } from "../src/server.ts";
import { databaseKinds, TestDatabases } from "./databases.ts";
import { clientsFor, startTestServer, tempDatabaseUrl, type BudgetClient } from "./helpers.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));
const bufBin = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

type GrpcJsClient = grpc.Client & Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: any) => void) => void>;

function grpcJsClient(url: string): GrpcJsClient {
  const definition = protoLoader.loadSync("tally/budget/v1/budget.proto", {
    includeDirs: [`${root}/proto`],
    keepCase: true,
    longs: String, // int64 as decimal strings: exact
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as any;
  return new pkg.tally.budget.v1.BudgetService(url.replace("http://", ""), grpc.credentials.createInsecure()) as GrpcJsClient;
}

function grpcCall(client: GrpcJsClient, method: string, req: unknown): Promise<any> {
  return new Promise((resolve, reject) => client[method]!(req, (err, res) => (err ? reject(err) : resolve(res))));
}

// Every suite runs on each database kind (test/databases.ts).
for (const kind of databaseKinds) {
  describe(`Tally server on ${kind}`, () => {
    const databases = new TestDatabases(kind);
    let server: TallyServer;
    beforeAll(async () => {
      server = await startTestServer({ databaseUrl: await databases.scratch() });
    });
    afterAll(async () => {
      await server?.close();
      await databases.cleanup();
    });

    it("serves @grpc/grpc-js (a second, independent gRPC implementation)", async () => {
      const client = grpcJsClient(server.url);
      try {
        await grpcCall(client, "SetProjectBudget", { project_id: "grpcjs", limit_nanos: "1000" });
        const recorded = await grpcCall(client, "RecordCost", {
          project_id: "grpcjs",
          cost_nanos: "400",
          input_tokens: "3",
          request_id: "g1",
        });
        expect(recorded.project_cost).toMatchObject({ total_cost_nanos: "400", input_tokens: "3", record_count: "1" });
        const retry = await grpcCall(client, "RecordCost", {
          project_id: "grpcjs",
          cost_nanos: "400",
          input_tokens: "3",
          request_id: "g1",
        });
        expect(retry.duplicate).toBe(true);
        const check = await grpcCall(client, "CheckBudget", { project_id: "grpcjs", estimated_cost_nanos: "600" });
        expect(check).toMatchObject({ allowed: true, remaining_nanos: "600", reason: "BUDGET_DECISION_REASON_WITHIN_BUDGET" });
        const error = await grpcCall(client, "RecordCost", { project_id: "grpcjs", cost_nanos: "-5" }).catch((e: grpc.ServiceError) => e);
        expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
        // connect-es percent-encodes grpc-message fully; grpc-js decodes only part
        // of it (decodeURI), so decode the rest here.
        expect(decodeURIComponent(error.details)).toMatch(/cost_nanos must be >= 0/);
        const conflict = await grpcCall(client, "RecordCost", {
          project_id: "grpcjs",
          cost_nanos: "401",
          input_tokens: "3",
          request_id: "g1",
        }).catch((e: grpc.ServiceError) => e);
        expect(conflict.code).toBe(grpc.status.ALREADY_EXISTS);
        const read = await grpcCall(client, "GetProjectCost", { project_id: "grpcjs" });
        expect(read.project_cost.total_cost_nanos).toBe("400");
      } finally {
        client.close();
      }
    });

    it("answers buf curl over Connect, gRPC and gRPC-Web", async () => {
      const base = `${server.url}/tally.budget.v1.BudgetService`;
      const curl = async (...args: string[]) =>
        JSON.parse((await run(bufBin, ["curl", "--schema", `${root}/proto`, ...args], { cwd: root })).stdout);
      const recorded = await curl(
        "--http2-prior-knowledge",
        `${base}/RecordCost`,
        "-d",
        '{"projectId":"bufcurl","costNanos":"1500000000","requestId":"c1"}',
      );
      expect(recorded.projectCost).toMatchObject({ projectId: "bufcurl", totalCostNanos: "1500000000", recordCount: "1" });
      const grpcRead = await curl(
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        `${base}/GetProjectCost`,
        "-d",
        '{"projectId":"bufcurl"}',
      );
      expect(grpcRead.projectCost.totalCostNanos).toBe("1500000000");
      const webRead = await curl("--protocol", "grpcweb", `${base}/GetProjectCost`, "-d", '{"projectId":"bufcurl"}');
      expect(webRead.projectCost.totalCostNanos).toBe("1500000000");
      // An error comes back as a non-zero exit with the Connect code.
      const failed = await run(bufBin, [
        "curl",
        "--schema",
        `${root}/proto`,
        "--http2-prior-knowledge",
        `${base}/GetProjectCost`,
        "-d",
        '{"projectId":""}',
      ]).catch((e: { stdout: string; stderr: string }) => e);
      expect(`${(failed as { stdout: string }).stdout}${(failed as { stderr: string }).stderr}`).toMatch(/invalid_argument/);
    });

    it("serves plain HTTP/1.1 JSON (curl-style), including GET for side-effect-free calls", async () => {
      const post = await fetch(`${server.url}/tally.budget.v1.BudgetService/RecordCost`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ projectId: "http1", costNanos: "42", requestId: "h1" }),
      });
      expect(post.status).toBe(200);
      expect(((await post.json()) as any).projectCost.totalCostNanos).toBe("42");
      const get = await fetch(
        `${server.url}/tally.budget.v1.BudgetService/GetProjectCost?encoding=json&message=${encodeURIComponent('{"projectId":"http1"}')}`,
      );
      expect(((await get.json()) as any).projectCost.totalCostNanos).toBe("42");
      const bad = await fetch(`${server.url}/tally.budget.v1.BudgetService/RecordCost`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ projectId: "http1", costNanos: "-1" }),
      });
      expect(bad.status).toBe(400);
      expect(await bad.json()).toMatchObject({ code: "invalid_argument" });
      const tooBig = await fetch(`${server.url}/tally.budget.v1.BudgetService/RecordCost`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ projectId: "http1", model: "m".repeat(100_000) }),
      });
      expect(((await tooBig.json()) as any).code).toBe("resource_exhausted");
      expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    });

    it("adds 50 concurrent clients x 40 RecordCost to the exact sum, on every protocol at once", async () => {
      const protocols = Object.values(clientsFor(server.url));
      const clients = 50;
      const perClient = 40;
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          const client = protocols[c % protocols.length] as BudgetClient;
          for (let i = 0; i < perClient; i++) {
            // Costs differ per call so a lost or doubled write changes the sum.
            await client.recordCost({
              projectId: "concurrent",
              costNanos: BigInt(c * 1000 + i),
              inputTokens: 1n,
              requestId: `c${c}-i${i}`,
            });
          }
        }),
      );
      let expected = 0n;
      for (let c = 0; c < clients; c++) for (let i = 0; i < perClient; i++) expected += BigInt(c * 1000 + i);
      const { projectCost } = await (protocols[0] as BudgetClient).getProjectCost({ projectId: "concurrent" });
      expect(projectCost).toMatchObject({ totalCostNanos: expected, inputTokens: 2000n, recordCount: 2000n });
    });
  });

  describe(`durability and lifecycle on ${kind}`, () => {
    const databases = new TestDatabases(kind, tempDatabaseUrl);
    afterAll(() => databases.cleanup());
    it("keeps totals, budgets and idempotency keys when the server is stopped and started on the same file", async () => {
      const databaseUrl = await databases.durable();
      const first = await startTestServer({ databaseUrl });
      const c1 = clientsFor(first.url)["grpc h2c"] as BudgetClient;
      await c1.setProjectBudget({ projectId: "durable", limitNanos: 100n });
      await c1.recordCost({ projectId: "durable", costNanos: 60n, inputTokens: 5n, requestId: "d1" });
      await c1.recordCost({ projectId: "durable", costNanos: 40n, outputTokens: 7n, requestId: "d2" });
      await first.close();

      const second = await startTestServer({ databaseUrl });
      try {
        const c2 = clientsFor(second.url)["connect+proto h2c"] as BudgetClient;
        expect((await c2.getProjectCost({ projectId: "durable" })).projectCost).toMatchObject({
          totalCostNanos: 100n,
          inputTokens: 5n,
          outputTokens: 7n,
          recordCount: 2n,
        });
        expect((await c2.checkBudget({ projectId: "durable" })).allowed).toBe(false);
        const retry = await c2.recordCost({ projectId: "durable", costNanos: 60n, inputTokens: 5n, requestId: "d1" });
        expect(retry.duplicate).toBe(true);
        expect((await c2.getProjectCost({ projectId: "durable" })).projectCost?.totalCostNanos).toBe(100n);
      } finally {
        await second.close();
      }
    });

    it("on close, finishes in-flight writes durably and answers later calls UNAVAILABLE", async () => {
      const databaseUrl = await databases.durable();
      // One write per transaction, each fsynced: 300 writes stay in flight long
      // enough for the call below to arrive while the server drains.
      const server = await startTestServer({ databaseUrl, batchSizeMax: 1 });
      const client = clientsFor(server.url)["connect+proto h2c"] as BudgetClient;
      await client.getProjectCost({ projectId: "warm" }); // open the connection
      const inFlight = Array.from({ length: 300 }, (_, i) => client.recordCost({ projectId: "drain", costNanos: 1n, requestId: `r${i}` }));
      await Promise.race(inFlight); // the server is now working through them
      const closing = server.close();
      const late = await client.getProjectCost({ projectId: "drain" }).catch((e: unknown) => ConnectError.from(e));
      const outcomes = await Promise.allSettled(inFlight);
      await closing;
      expect(late).toBeInstanceOf(ConnectError);
      expect((late as ConnectError).code).toBe(Code.Unavailable);
      for (const o of outcomes) if (o.status === "rejected") expect(ConnectError.from(o.reason).code).toBe(Code.Unavailable);
      const acknowledged = outcomes.filter((o) => o.status === "fulfilled").length;
      expect(acknowledged).toBeGreaterThan(0);
      // Every acknowledged write is in the totals after a restart, and nothing else.
      const reopened = await startTestServer({ databaseUrl });
      try {
        const totals = await (clientsFor(reopened.url)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "drain" });
        expect(totals.projectCost?.recordCount).toBe(BigInt(acknowledged));
      } finally {
        await reopened.close();
      }
    });
  });
}
