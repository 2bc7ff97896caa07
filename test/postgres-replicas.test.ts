// Several Tally replicas on one PostgreSQL, as deployed behind a load balancer:
// real `node src/cli.ts serve` processes, clients spread over them retrying with
// the same request_id (also on another replica, as a load balancer would), a
// replica killed mid-run, and the database itself going away and coming back.
// Totals must come out exact: no acknowledged write lost, none counted twice.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { BudgetDecisionReason } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { TallyServer } from "../src/server.ts";
import { createPostgresDatabase, postgresAdminUrl } from "./databases.ts";
import { clientsFor, startTestServer, type BudgetClient } from "./helpers.ts";
import { hostAndPort, TcpProxy, viaProxy } from "./tcp-proxy.ts";

const cli = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const children: ChildProcess[] = [];
const drops: (() => Promise<void>)[] = [];

async function freshDatabase(): Promise<string> {
  const db = await createPostgresDatabase();
  drops.push(db.drop);
  return db.url;
}

/** Starts `tally serve` on port 0 and resolves with its URL once it listens. */
function serve(databaseUrl: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [cli, "serve"], {
    env: { ...process.env, PORT: "0", TALLY_DATABASE_URL: databaseUrl, TALLY_LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`tally exited early with ${code}: ${lines.slice(-20).join("\n")}`)));
    createInterface({ input: child.stderr! }).on("line", (line) => lines.push(line));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (lines.length < 200) lines.push(line);
      const event = JSON.parse(line) as { event?: string; url?: string };
      if (event.event === "server.listening" && event.url) resolve({ child, url: event.url });
    });
  });
}

const retryable = new Set([
  Code.Unavailable,
  Code.ResourceExhausted,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.Unknown,
  Code.Internal,
  Code.Canceled,
]);
const attemptsMax = 400;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});
afterAll(async () => {
  for (const drop of drops.splice(0)) await drop().catch(() => undefined);
});

describe.skipIf(postgresAdminUrl === undefined)("replicas on one PostgreSQL", () => {
  it("three tally processes, 60 clients retrying RecordCost across them (one replica killed mid-run): exact totals, no duplicates", async () => {
    const databaseUrl = await freshDatabase();
    // Started together: the migration lock lets exactly one of them migrate.
    const replicas = await Promise.all([serve(databaseUrl), serve(databaseUrl), serve(databaseUrl)]);
    const protocols = ["connect+proto h2c", "grpc h2c", "connect+json http/1.1", "grpc-web http/1.1"];
    const clientsOf = replicas.map((r) => clientsFor(r.url));
    const alive = [true, true, true];
    const clients = 60;
    const perClient = 20;
    const projects = ["team-a", "team-b", "team-c"];
    let acknowledged = 0;
    let duplicatesSeen = 0;
    let failovers = 0;

    /** Sends one RecordCost until it is acknowledged, starting on `home` and
     * moving to the next live replica after a failure, like a load balancer. */
    const recordUntilAcknowledged = async (home: number, client: number, req: Parameters<BudgetClient["recordCost"]>[0]) => {
      let replica = home;
      for (let attempt = 0; attempt < attemptsMax; attempt++) {
        if (!alive[replica]) replica = (replica + 1) % 3;
        const c = clientsOf[replica]![protocols[client % protocols.length]!] as BudgetClient;
        try {
          return await c.recordCost(req, { timeoutMs: 15_000 });
        } catch (error) {
          const code = ConnectError.from(error).code;
          // A live replica may only say "try again"; the killed one may fail
          // its in-flight calls any way a dropped connection shows.
          const transient = code === Code.Unavailable || code === Code.ResourceExhausted;
          if (!transient && (alive[replica] || !retryable.has(code))) throw error;
          failovers++;
          replica = (replica + 1) % 3;
          await pause(5);
        }
      }
      throw new Error(`client ${client}: ${req.requestId} not acknowledged after ${attemptsMax} attempts`);
    };

    const killAfter = Math.floor((clients * perClient) / 3);
    let killed: Promise<NodeJS.Signals | null> | undefined;
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        const home = c % 3;
        for (let i = 0; i < perClient; i++) {
          const req = {
            projectId: projects[c % projects.length]!,
            costNanos: BigInt(c * 1_000 + i + 1),
            inputTokens: 1n,
            outputTokens: 2n,
            requestId: `c${c}-${i}`,
            agentId: `agent-${c}`,
          };
          const first = await recordUntilAcknowledged(home, c, req);
          acknowledged++;
          if (acknowledged >= killAfter && killed === undefined) {
            // kill -9 one replica while writes are in flight on it.
            alive[0] = false;
            replicas[0]!.child.kill("SIGKILL");
            killed = new Promise((resolve) => replicas[0]!.child.once("exit", (_code, signal) => resolve(signal)));
          }
          if (first.duplicate) duplicatesSeen++; // a retry whose first attempt had committed
          // Every fifth write is sent again through another replica, as a client
          // whose answer was lost would: it must be a duplicate with the same totals.
          if (i % 5 === 0) {
            const again = await recordUntilAcknowledged((home + 1) % 3, c, req);
            expect(again.duplicate).toBe(true);
            expect(again.projectCost?.totalCostNanos).toBe(first.projectCost?.totalCostNanos);
          }
        }
      }),
    );
    expect(await killed).toBe("SIGKILL");
    expect(acknowledged).toBe(clients * perClient);

    const reader = clientsOf[2]!["grpc h2c"] as BudgetClient;
    for (const projectId of projects) {
      let sum = 0n;
      let count = 0n;
      for (let c = 0; c < clients; c++) {
        if (projects[c % projects.length] !== projectId) continue;
        for (let i = 0; i < perClient; i++) {
          sum += BigInt(c * 1_000 + i + 1);
          count++;
        }
      }
      const { projectCost } = await reader.getProjectCost({ projectId });
      expect(projectCost).toMatchObject({ totalCostNanos: sum, inputTokens: count, outputTokens: 2n * count, recordCount: count });
      // The other live replica reads the same.
      expect((await (clientsOf[1]!["connect+proto h2c"] as BudgetClient).getProjectCost({ projectId })).projectCost?.totalCostNanos).toBe(
        sum,
      );
    }
    console.log(
      `replicas: ${acknowledged} writes acknowledged, ${failovers} retried attempts, ${duplicatesSeen} first answers were duplicates`,
    );
    for (const r of replicas.slice(1)) r.child.kill("SIGTERM");
  });
});

describe.skipIf(postgresAdminUrl === undefined)("reserve and settle across replicas", () => {
  it("three tally processes, 60 agents reserving then settling across them: exactly the budget's worth of holds, no overspend", async () => {
    const databaseUrl = await freshDatabase();
    const replicas = await Promise.all([serve(databaseUrl), serve(databaseUrl), serve(databaseUrl)]);
    const protocols = ["connect+proto h2c", "grpc h2c", "connect+json http/1.1", "grpc-web http/1.1"];
    const clientsOf = replicas.map((r) => clientsFor(r.url));
    const estimateNanos = 1_000n;
    const holdsThatFit = 100n;
    const projectId = "shared-budget";
    await (clientsOf[0]!["grpc h2c"] as BudgetClient).setProjectBudget({ projectId, limitNanos: holdsThatFit * estimateNanos });
    const agents = 60;
    const attemptsPerAgent = 3; // 180 attempts for 100 holds: many must be refused
    let granted = 0;
    let refused = 0;
    let maxSpentSeen = 0n;
    await Promise.all(
      Array.from({ length: agents }, async (_, a) => {
        for (let i = 0; i < attemptsPerAgent; i++) {
          // Reserve on one replica, settle on another: holds live in the database.
          const reserveOn = clientsOf[(a + i) % 3]![protocols[a % protocols.length]!] as BudgetClient;
          const settleOn = clientsOf[(a + i + 1) % 3]![protocols[(a + 1) % protocols.length]!] as BudgetClient;
          const decision = await reserveOn.checkBudget({ projectId, estimatedCostNanos: estimateNanos, reserve: true });
          if (!decision.allowed) {
            refused++;
            expect(decision.holdId).toBe("");
            continue;
          }
          granted++;
          expect(decision.holdId).not.toBe("");
          // Actual cost: at most the estimate, so settled holds never overspend.
          const recorded = await settleOn.recordCost({
            projectId,
            costNanos: estimateNanos - BigInt(a % 3),
            requestId: `a${a}-${i}`,
            holdId: decision.holdId,
          });
          expect(recorded.settledHoldNanos).toBe(estimateNanos);
          const spent = recorded.projectCost?.totalCostNanos ?? 0n;
          if (spent > maxSpentSeen) maxSpentSeen = spent;
        }
      }),
    );
    const { projectCost } = await (clientsOf[2]!["connect+proto h2c"] as BudgetClient).getProjectCost({ projectId });
    // Each hold reserved the full estimate until settled, so exactly 100 fit
    // whichever replica decided them; refused ones were refused outright.
    expect(BigInt(granted)).toBe(holdsThatFit);
    expect(granted + refused).toBe(agents * attemptsPerAgent);
    expect(projectCost?.recordCount).toBe(holdsThatFit);
    expect(projectCost?.totalCostNanos).toBeLessThanOrEqual(holdsThatFit * estimateNanos);
    expect(maxSpentSeen).toBeLessThanOrEqual(holdsThatFit * estimateNanos);
    expect(projectCost?.reservedNanos).toBe(0n);
    expect(projectCost?.activeHoldCount).toBe(0n);
    for (const r of replicas) r.child.kill("SIGTERM");
  });

  it("three tally processes, 400 reservers of 1 unit over a 2-team, 4-project tree under an org limit of 100: exactly 100 holds, no level past its limit", async () => {
    const databaseUrl = await freshDatabase();
    const replicas = await Promise.all([serve(databaseUrl), serve(databaseUrl), serve(databaseUrl)]);
    const protocols = ["connect+proto h2c", "grpc h2c", "connect+json http/1.1", "grpc-web http/1.1"];
    const clientsOf = replicas.map((r) => clientsFor(r.url));
    const admin = clientsOf[0]!["grpc h2c"] as BudgetClient;
    const unit = 1_000_000_000n;
    await admin.setProjectBudget({ projectId: "org", limitNanos: 100n * unit });
    const projects: string[] = [];
    for (const team of ["team-a", "team-b"]) {
      await admin.setProjectBudget({ projectId: team, limitNanos: 0n, parentId: "org" });
      for (const n of [1, 2]) {
        await admin.setProjectBudget({ projectId: `${team}-p${n}`, limitNanos: 0n, parentId: team });
        projects.push(`${team}-p${n}`);
      }
    }
    // Each replica learns the tree's links from its own batches (a first
    // batch that locked too little retries with the links it read).
    const answers = await Promise.all(
      Array.from({ length: 400 }, (_, i) => {
        const c = clientsOf[i % 3]![protocols[i % protocols.length]!] as BudgetClient;
        return c.checkBudget(
          { projectId: projects[i % 4]!, estimatedCostNanos: unit, reserve: true, holdTtl: { seconds: 600n } },
          { timeoutMs: 60_000 },
        );
      }),
    );
    const granted = answers.filter((a) => a.allowed);
    expect(granted).toHaveLength(100);
    for (const a of answers.filter((x) => !x.allowed)) expect(a).toMatchObject({ decidedByProjectId: "org", holdId: "" });
    const reader = clientsOf[2]!["connect+proto h2c"] as BudgetClient;
    const cost = async (projectId: string) => (await reader.getProjectCost({ projectId })).projectCost!;
    expect(await cost("org")).toMatchObject({ reservedNanos: 100n * unit, activeHoldCount: 100n });
    const leaves = await Promise.all(projects.map(cost));
    expect(leaves.reduce((sum, p) => sum + p.reservedNanos, 0n)).toBe(100n * unit);
    expect((await cost("team-a")).reservedNanos + (await cost("team-b")).reservedNanos).toBe(100n * unit);
    // Settle every hold on another replica than the one that placed it, at
    // most its estimate: spend at every level stays within the org limit.
    await Promise.all(
      answers.map(async (a, i) => {
        if (!a.allowed) return;
        const c = clientsOf[(i + 1) % 3]![protocols[(i + 1) % protocols.length]!] as BudgetClient;
        await c.recordCost(
          { projectId: projects[i % 4]!, costNanos: unit, requestId: `settle-${i}`, holdId: a.holdId },
          { timeoutMs: 60_000 },
        );
      }),
    );
    expect(await cost("org")).toMatchObject({ totalCostNanos: 100n * unit, recordCount: 100n, reservedNanos: 0n, activeHoldCount: 0n });
    const spentLeaves = await Promise.all(projects.map(cost));
    expect(spentLeaves.reduce((sum, p) => sum + p.totalCostNanos, 0n)).toBe(100n * unit);
    expect((await cost("team-a")).totalCostNanos).toBe(spentLeaves[0]!.totalCostNanos + spentLeaves[1]!.totalCostNanos);
    expect((await reader.checkBudget({ projectId: projects[3]!, estimatedCostNanos: 1n, reserve: true })).allowed).toBe(false);
    for (const r of replicas) r.child.kill("SIGTERM");
  });

  it("three tally processes, 4 agents x 60 reservers under agent caps of 20 and a project limit of 70: exactly 70 holds, no agent past 20", async () => {
    const databaseUrl = await freshDatabase();
    const replicas = await Promise.all([serve(databaseUrl), serve(databaseUrl), serve(databaseUrl)]);
    const protocols = ["connect+proto h2c", "grpc h2c", "connect+json http/1.1", "grpc-web http/1.1"];
    const clientsOf = replicas.map((r) => clientsFor(r.url));
    const admin = clientsOf[0]!["grpc h2c"] as BudgetClient;
    const unit = 1_000_000_000n;
    await admin.setProjectBudget({ projectId: "fleet", limitNanos: 70n * unit, agentLimitNanos: 20n * unit });
    const agents = ["a0", "a1", "a2", "a3"];
    const answers = await Promise.all(
      Array.from({ length: 240 }, (_, i) => {
        const c = clientsOf[i % 3]![protocols[i % protocols.length]!] as BudgetClient;
        return c.checkBudget(
          { projectId: "fleet", estimatedCostNanos: unit, reserve: true, holdTtl: { seconds: 600n }, agentId: agents[i % 4]! },
          { timeoutMs: 60_000 },
        );
      }),
    );
    expect(answers.filter((a) => a.allowed)).toHaveLength(70);
    const perAgent = agents.map((_, k) => answers.filter((a, i) => a.allowed && i % 4 === k).length);
    for (const granted of perAgent) expect(granted).toBeLessThanOrEqual(20);
    for (const a of answers.filter((x) => !x.allowed)) expect(a.holdId).toBe("");
    const reader = clientsOf[2]!["connect+proto h2c"] as BudgetClient;
    expect((await reader.getProjectCost({ projectId: "fleet" })).projectCost).toMatchObject({
      reservedNanos: 70n * unit,
      activeHoldCount: 70n,
    });
    // With room in the project again, each agent is decided by its own cap,
    // on any replica: one at 20 is refused (AGENT_LIMIT), one below allowed.
    const low = perAgent.indexOf(Math.min(...perAgent));
    await admin.releaseHold({ projectId: "fleet", holdId: answers.find((a, i) => a.allowed && i % 4 === low)!.holdId });
    perAgent[low]! -= 1;
    for (const [k, agentId] of agents.entries()) {
      const again = await (clientsOf[k % 3]!["grpc h2c"] as BudgetClient).checkBudget({
        projectId: "fleet",
        estimatedCostNanos: unit,
        agentId,
      });
      if (perAgent[k]! < 20) expect(again.allowed).toBe(true);
      else expect(again).toMatchObject({ allowed: false, reason: BudgetDecisionReason.AGENT_LIMIT, decidedByAgentId: agentId });
    }
    for (const r of replicas) r.child.kill("SIGTERM");
  });
});

describe.skipIf(postgresAdminUrl === undefined)("the database going away under a serving Tally", () => {
  let proxy: TcpProxy | undefined;
  let server: TallyServer | undefined;
  afterEach(async () => {
    await server?.close();
    await proxy?.stop();
  });

  it("answers UNAVAILABLE (not INTERNAL) while PostgreSQL is gone, recovers by itself, and keeps exact totals", async () => {
    const databaseUrl = await freshDatabase();
    const target = hostAndPort(databaseUrl);
    proxy = new TcpProxy(target.host, target.port);
    await proxy.start();
    server = await startTestServer({
      databaseUrl: viaProxy(databaseUrl, proxy),
      databaseStatementTimeoutMs: 2_000,
      databaseConnectTimeoutMs: 1_000,
    });
    const client = clientsFor(server.url)["connect+proto h2c"] as BudgetClient;
    await client.setProjectBudget({ projectId: "outage", limitNanos: 1_000_000n });

    const codes = new Map<string, number>();
    const seen = (code: Code | "ok") => codes.set(String(code), (codes.get(String(code)) ?? 0) + 1);
    let down = false;
    let unavailableWhileDown = 0;
    const writers = 10;
    const perWriter = 30;
    const writing = Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < perWriter; i++) {
          const req = { projectId: "outage", costNanos: BigInt(w * 100 + i + 1), requestId: `w${w}-${i}` };
          let done = false;
          for (let attempt = 0; attempt < attemptsMax && !done; attempt++) {
            try {
              await client.recordCost(req);
              seen("ok");
              done = true;
            } catch (error) {
              const code = ConnectError.from(error).code;
              seen(code);
              if (code !== Code.Unavailable) throw error;
              if (down) unavailableWhileDown++;
              await pause(20);
            }
          }
          if (!done) throw new Error(`w${w}-${i} never acknowledged`);
        }
      }),
    );

    // Let some writes through, then take the database away.
    for (let i = 0; i < 500 && (codes.get("ok") ?? 0) < 50; i++) await pause(10);
    await proxy.stop();
    down = true;
    for (let i = 0; i < 500 && unavailableWhileDown < 10; i++) await pause(10);
    // Reads fail the same way while it is gone.
    const read = await client.getProjectCost({ projectId: "outage" }).catch((e: unknown) => ConnectError.from(e));
    const check = await client.checkBudget({ projectId: "outage", estimatedCostNanos: 1n }).catch((e: unknown) => ConnectError.from(e));
    down = false;
    await proxy.start();
    await writing;

    expect(unavailableWhileDown).toBeGreaterThanOrEqual(10);
    expect((read as ConnectError).code).toBe(Code.Unavailable);
    expect((check as ConnectError).code).toBe(Code.Unavailable);
    expect(codes.get(String(Code.Internal))).toBeUndefined();
    let sum = 0n;
    for (let w = 0; w < writers; w++) for (let i = 0; i < perWriter; i++) sum += BigInt(w * 100 + i + 1);
    const { projectCost } = await client.getProjectCost({ projectId: "outage" });
    expect(projectCost).toMatchObject({ totalCostNanos: sum, recordCount: BigInt(writers * perWriter) });
    expect((await client.checkBudget({ projectId: "outage", estimatedCostNanos: 0n })).spentNanos).toBe(sum);
  });
});
