// Unauthenticated streams (issue 15, item 2): a flood of 20,000
// grpc.health.v1.Health/Watch streams is bounded in count (per connection and
// globally), counted as calls in flight, leaves RSS bounded and a canary
// GetProjectCost answered.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { publicStreamsOpenMax, publicStreamsPerConnectionMax } from "../../src/limits.ts";
import { within } from "../helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

interface Outcome {
  /** "open": the first Watch message arrived and the stream stays open. */
  status: "open" | number;
  message?: string;
}

/** Opens a Health/Watch stream (gRPC, one empty request) and resolves once it
 * is either open (first message) or answered with a status. */
function watchHealth(session: http2.ClientHttp2Session): { outcome: Promise<Outcome>; stream: http2.ClientHttp2Stream } {
  const stream = session.request({
    ":method": "POST",
    ":path": "/grpc.health.v1.Health/Watch",
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.end(Buffer.from([0, 0, 0, 0, 0]));
  stream.on("error", () => {});
  const outcome = new Promise<Outcome>((resolve) => {
    stream.once("response", (headers) => {
      const status = headers["grpc-status"];
      if (status !== undefined) resolve({ status: Number(status), message: decodeURIComponent(String(headers["grpc-message"] ?? "")) });
    });
    stream.once("data", () => resolve({ status: "open" }));
    stream.once("trailers", (trailers) =>
      resolve({ status: Number(trailers["grpc-status"]), message: decodeURIComponent(String(trailers["grpc-message"] ?? "")) }),
    );
    stream.once("close", () => resolve({ status: -1 }));
  });
  return { outcome, stream };
}

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Math.round(Number(line?.split(/\s+/)[1]) / 1024);
}

async function startServerProcess(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ["src/cli.ts", "serve"], {
    cwd: root,
    env: { ...process.env, HOST: "127.0.0.1", PORT: "0", TALLY_DATABASE_URL: "sqlite::memory:", TALLY_LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! });
  const url = await within(
    new Promise<string>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
      lines.on("line", (line) => {
        const entry = JSON.parse(line) as { event?: string; url?: string };
        if (entry.event === "server.listening" && entry.url !== undefined) resolve(entry.url);
      });
    }),
    "the server process listening",
    30_000,
  );
  return { child, url };
}

describe("a flood of unauthenticated Health/Watch streams", () => {
  const streamsTotal = Number(process.env.FLOOD_N ?? 20_000);
  const connectionsTotal = 100;
  let server: Awaited<ReturnType<typeof startServerProcess>>;
  beforeAll(async () => {
    server = await startServerProcess();
  });
  afterAll(async () => {
    const exited = new Promise((resolve) => server.child.once("exit", resolve));
    server.child.kill("SIGTERM");
    await exited;
  });

  it("is bounded per connection with a clear RESOURCE_EXHAUSTED", async () => {
    const session = http2.connect(server.url);
    try {
      const watches = Array.from({ length: publicStreamsPerConnectionMax + 4 }, () => watchHealth(session));
      const outcomes = await within(Promise.all(watches.map((w) => w.outcome)), "answers to every Watch");
      expect(outcomes.filter((o) => o.status === "open")).toHaveLength(publicStreamsPerConnectionMax);
      const refused = outcomes.filter((o) => o.status !== "open");
      expect(refused).toHaveLength(4);
      for (const r of refused) {
        expect(r.status).toBe(8); // RESOURCE_EXHAUSTED
        expect(r.message).toMatch(new RegExp(`already has ${publicStreamsPerConnectionMax} open public streams`));
      }
      // Closing one makes room for another on the same connection.
      watches[0]!.stream.close();
      await new Promise((resolve) => watches[0]!.stream.once("close", resolve));
      expect((await within(watchHealth(session).outcome, "a Watch after one closed")).status).toBe("open");
    } finally {
      session.destroy();
    }
  });

  it(`of ${streamsTotal} streams leaves RSS bounded, counts them in flight and answers a canary`, async () => {
    const pid = server.child.pid!;
    const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    await client.getProjectCost({ projectId: "warm-up" });
    const rssBeforeMiB = rssMiB(pid);
    const sessions = Array.from({ length: connectionsTotal }, () => {
      const session = http2.connect(server.url);
      session.on("error", () => {});
      return session;
    });
    const floodOnce = async (): Promise<Outcome[]> => {
      const outcomes: Outcome[] = [];
      // In waves, so the flood does not wait on the client's own memory.
      for (let i = 0; i < streamsTotal; i += connectionsTotal * 20) {
        const wave = [];
        for (let j = i; j < Math.min(streamsTotal, i + connectionsTotal * 20); j++)
          wave.push(watchHealth(sessions[j % connectionsTotal]!).outcome);
        outcomes.push(...(await within(Promise.all(wave), "answers to a wave of Watch streams", 60_000)));
      }
      return outcomes;
    };
    try {
      const outcomes = await floodOnce();
      const open = outcomes.filter((o) => o.status === "open").length;
      const refused = outcomes.filter((o) => o.status === 8).length;
      const rssFloodMiB = rssMiB(pid);
      // The canary is answered while the flood holds its streams.
      const canary = await within(client.getProjectCost({ projectId: "canary" }), "the canary GetProjectCost");
      expect(canary.projectCost?.totalCostNanos ?? 0n).toBe(0n);
      // Open streams count as calls in flight (the /metrics gauge; no keys: open).
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const inFlight = Number(/^tally_rpc_in_flight (\d+)/m.exec(metrics)?.[1]);
      // As many again, all refused: memory does not grow with the flood.
      const again = await floodOnce();
      const rssSecondFloodMiB = rssMiB(pid);
      console.log(
        `Health/Watch flood of ${streamsTotal} on ${connectionsTotal} connections: ${open} open, ${refused} refused; ` +
          `RSS ${rssBeforeMiB} MiB before, ${rssFloodMiB} MiB with the flood held (+${rssFloodMiB - rssBeforeMiB} MiB), ` +
          `${rssSecondFloodMiB} MiB after ${streamsTotal} more (+${rssSecondFloodMiB - rssFloodMiB} MiB); in flight ${inFlight}`,
      );
      expect(open).toBe(publicStreamsOpenMax);
      expect(refused).toBe(streamsTotal - publicStreamsOpenMax);
      expect(again.every((o) => o.status === 8)).toBe(true);
      expect(inFlight).toBeGreaterThanOrEqual(publicStreamsOpenMax);
      // Unbounded, 20,000 streams took 1,076 MiB more (issue 15), and each
      // further flood as much again. Bounded: the open streams plus the
      // allocator's high-water mark from answering the refused ones, which a
      // second flood mostly reuses: both floods together stay under 512 MiB.
      expect(rssSecondFloodMiB - rssBeforeMiB).toBeLessThan(512);
    } finally {
      for (const session of sessions) session.destroy();
    }
  }, 180_000);
});
