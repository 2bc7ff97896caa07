// Idle and incomplete connections (issue 15, item 1): each kind is closed
// within its limit (src/limits.ts), and 10,050 of them (the limit of 10,000
// plus 50) do not lock a new client out.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import {
  connectionSniffTimeoutMs,
  connectionsMax,
  http1HeadersTimeoutMs,
  http2SessionIdleMs,
  tlsHandshakeTimeoutMs,
} from "../../src/limits.ts";
import type { TallyServer } from "../../src/server.ts";
import { connectionDefaults } from "../../src/transport/rpc-server.ts";
import { selfSignedCert, startTestServer, within } from "../helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const emptySettings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

/** Milliseconds from `socket` being open until the server closes it. */
function closedAfter(socket: net.Socket, what: string): Promise<number> {
  const startedMs = performance.now();
  socket.on("error", () => {});
  socket.on("data", () => {});
  return within(
    new Promise<number>((resolve) => socket.once("close", () => resolve(Math.round(performance.now() - startedMs)))),
    `${what} closed by the server`,
    20_000,
  );
}

function connected(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once(socket instanceof tls.TLSSocket ? "secureConnect" : "connect", () => resolve());
    socket.once("error", reject);
  });
}

describe("idle connections are closed within their limits", () => {
  // Short limits so the test takes seconds; the defaults are checked below.
  const limitMs = 400;
  const connections = { sniffMs: limitMs, tlsHandshakeMs: limitMs, http1HeadMs: limitMs, http2IdleMs: limitMs };
  const dir = mkdtempSync(join(tmpdir(), "tally-idle-"));
  let cleartext: TallyServer;
  let secure: TallyServer;
  let cert: ReturnType<typeof selfSignedCert>;
  beforeAll(async () => {
    cert = selfSignedCert(dir, "idle");
    cleartext = await startTestServer({ connections });
    secure = await startTestServer({ connections, tlsCertFile: cert.certFile, tlsKeyFile: cert.keyFile });
  });
  const closeTimes: Record<string, number> = {};
  afterAll(async () => {
    console.log(`idle connections closed after (ms, limit ${limitMs}): ${JSON.stringify(closeTimes)}`);
    await cleartext.close();
    await secure.close();
  });

  it("a cleartext connection that sends nothing (sniff)", async () => {
    const socket = net.connect(cleartext.port, "127.0.0.1");
    await connected(socket);
    closeTimes.silent = await closedAfter(socket, "a silent connection");
  });

  it("a partial HTTP/1.1 head (a single `G`), and one sent a byte at a time", async () => {
    const single = net.connect(cleartext.port, "127.0.0.1");
    await connected(single);
    single.write("G");
    closeTimes.http1Partial = await closedAfter(single, "a connection that sent `G`");

    // Slowloris: every byte arrives well within the limit; the head never completes.
    const slow = net.connect(cleartext.port, "127.0.0.1");
    await connected(slow);
    const head = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let i = 0;
    const drip = setInterval(() => slow.writable && slow.write(head[i++ % head.length] as string), limitMs / 8);
    try {
      closeTimes.http1Slowloris = await closedAfter(slow, "a slowloris connection");
    } finally {
      clearInterval(drip);
    }
  });

  it("an h2c session that sent only the preface and SETTINGS, and one whose last stream ended", async () => {
    const socket = net.connect(cleartext.port, "127.0.0.1");
    await connected(socket);
    socket.write(Buffer.concat([http2Preface, emptySettings]));
    closeTimes.h2cPreface = await closedAfter(socket, "an h2c session without streams");

    // A real client: one call, then silence; the session goes (GOAWAY).
    const session = http2.connect(cleartext.url);
    const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
    const startedMs = performance.now();
    const req = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/proto" });
    req.end();
    req.resume();
    await new Promise((resolve) => req.once("close", resolve));
    await within(goaway, "GOAWAY on an idle HTTP/2 session", 20_000);
    closeTimes.h2cAfterCall = Math.round(performance.now() - startedMs);
    session.destroy();
  });

  it("a connection serving a call stays open past the idle limits", async () => {
    // A Health/Watch stream is a call: its session is not idle while it lasts.
    const session = http2.connect(cleartext.url);
    session.on("error", () => {});
    const watch = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Watch",
      "content-type": "application/grpc",
      te: "trailers",
    });
    watch.end(Buffer.from([0, 0, 0, 0, 0])); // one empty HealthCheckRequest
    const firstMessage = new Promise((resolve) => watch.once("data", resolve));
    await within(firstMessage, "the first Health/Watch message");
    await new Promise((resolve) => setTimeout(resolve, limitMs * 4));
    expect(session.closed || session.destroyed).toBe(false);
    expect(watch.closed).toBe(false);
    watch.close();
    await within(new Promise<void>((resolve) => session.once("goaway", () => resolve())), "GOAWAY once the stream ended", 20_000);
    session.destroy();
  });

  it("TLS: a handshake that never completes, a connection that sends nothing, and a completed handshake with nothing after it", async () => {
    const partial = net.connect(secure.port, "127.0.0.1");
    await connected(partial);
    partial.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])); // a ClientHello record header, no body
    closeTimes.tlsPartialHandshake = await closedAfter(partial, "a half-sent TLS handshake");

    const silent = net.connect(secure.port, "127.0.0.1");
    await connected(silent);
    closeTimes.tlsSilent = await closedAfter(silent, "a silent connection to the TLS port");

    const h2 = tls.connect({ host: "127.0.0.1", port: secure.port, ca: cert.cert, ALPNProtocols: ["h2"] });
    await connected(h2);
    closeTimes.tlsH2NoPreface = await closedAfter(h2, "a TLS h2 connection without a preface");

    const h1 = tls.connect({ host: "127.0.0.1", port: secure.port, ca: cert.cert, ALPNProtocols: ["http/1.1"] });
    await connected(h1);
    h1.write("G");
    closeTimes.tlsHttp1Partial = await closedAfter(h1, "a TLS http/1.1 connection that sent `G`");
  });

  it("the defaults are the limits named in src/limits.ts", async () => {
    expect(connectionDefaults).toEqual({
      max: connectionsMax,
      sniffMs: connectionSniffTimeoutMs,
      tlsHandshakeMs: tlsHandshakeTimeoutMs,
      http1HeadMs: http1HeadersTimeoutMs,
      http2IdleMs: http2SessionIdleMs,
    });
    expect([connectionsMax, connectionSniffTimeoutMs, tlsHandshakeTimeoutMs, http1HeadersTimeoutMs, http2SessionIdleMs]).toEqual([
      10_000, 10_000, 10_000, 10_000, 60_000,
    ]);
    const server = await startTestServer();
    try {
      expect(server.rpc.connections.timeouts).toEqual({
        sniffMs: connectionSniffTimeoutMs,
        tlsHandshakeMs: tlsHandshakeTimeoutMs,
        http1HeadMs: http1HeadersTimeoutMs,
        http2IdleMs: http2SessionIdleMs,
      });
    } finally {
      await server.close();
    }
  });
});

// --- 10,050 idle connections against the real limit -------------------------

/** Runs `args` with the soft file-descriptor limit raised to the hard one: a
 * child holds 10,000+ sockets, more than a default soft limit of 1024 allows. */
function spawnWithFds(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const quoted = args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  return spawn("bash", ["-c", `ulimit -n "$(ulimit -Hn)" && exec ${quoted}`], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "inherit"],
  });
}

function hardFdLimit(): number {
  const text = execFileSync("bash", ["-c", "ulimit -Hn"], { encoding: "utf8" }).trim();
  return text === "unlimited" ? Number.POSITIVE_INFINITY : Number(text);
}

async function startServerProcess(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; url: string; port: number }> {
  const child = spawnWithFds([process.execPath, "src/cli.ts", "serve"], {
    HOST: "127.0.0.1",
    PORT: "0",
    TALLY_DATABASE_URL: "sqlite::memory:",
    TALLY_LOG_LEVEL: "info",
    ...env,
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
  return { child, url, port: Number(new URL(url).port) };
}

interface FloodReport {
  kind: string;
  opened: number;
  failed: number;
  open: number;
}

/** A child process that opens `count` idle connections of `kind` and holds them. */
async function flood(
  port: number,
  kind: string,
  count: number,
): Promise<{ report: FloodReport; ask: () => Promise<FloodReport>; stop: () => Promise<void> }> {
  const child = spawnWithFds([process.execPath, "test/transport/idle-flood.ts", "127.0.0.1", String(port), kind, String(count)], {});
  const lines = createInterface({ input: child.stdout! });
  const reports: FloodReport[] = [];
  const waiters: Array<(r: FloodReport) => void> = [];
  lines.on("line", (line) => {
    const report = JSON.parse(line) as FloodReport;
    const waiter = waiters.shift();
    if (waiter) waiter(report);
    else reports.push(report);
  });
  const nextReport = () => new Promise<FloodReport>((resolve) => (reports.length > 0 ? resolve(reports.shift()!) : waiters.push(resolve)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const report = await within(nextReport(), `${count} ${kind} connections opened`, 120_000);
  return {
    report,
    ask: () => {
      child.stdin!.write("?\n");
      return within(nextReport(), "the flood's count");
    },
    stop: async () => {
      child.stdin!.end();
      await within(exited, "the flood process exiting");
    },
  };
}

describe(`${connectionsMax + 50} idle connections of each kind do not lock a new client out`, () => {
  const count = connectionsMax + 50;
  const dir = mkdtempSync(join(tmpdir(), "tally-idle-flood-"));
  let cleartext: Awaited<ReturnType<typeof startServerProcess>>;
  let secure: Awaited<ReturnType<typeof startServerProcess>>;
  let cert: ReturnType<typeof selfSignedCert>;
  const figures: string[] = [];
  beforeAll(async () => {
    // The flood and each server are separate processes, each holding about
    // `count` sockets: their soft limit is raised to the hard one.
    const hard = hardFdLimit();
    if (hard < count + 200)
      throw new Error(`this test needs a hard file-descriptor limit of at least ${count + 200} (ulimit -Hn is ${hard})`);
    cert = selfSignedCert(dir, "idle");
    [cleartext, secure] = await Promise.all([
      startServerProcess({}),
      startServerProcess({ TALLY_TLS_CERT_FILE: cert.certFile, TALLY_TLS_KEY_FILE: cert.keyFile }),
    ]);
  }, 60_000);
  afterAll(async () => {
    console.log(`idle floods (connections the flood still holds after a new client was served): ${figures.join("; ")}`);
    for (const server of [cleartext, secure]) {
      if (server === undefined) continue;
      const exited = new Promise((resolve) => server.child.once("exit", resolve));
      server.child.kill("SIGTERM");
      await exited;
    }
  });

  const cases: Array<{ kind: string; server: () => typeof cleartext; ca: () => Buffer | undefined }> = [
    { kind: "h2c-preface", server: () => cleartext, ca: () => undefined },
    { kind: "http1-partial", server: () => cleartext, ca: () => undefined },
    { kind: "tls-handshake", server: () => secure, ca: () => cert.cert },
    { kind: "tls-idle", server: () => secure, ca: () => cert.cert },
  ];
  for (const { kind, server, ca } of cases) {
    it(`${kind}: a new client is served while ${count} are held open`, async () => {
      const { url, port } = server();
      const attack = await flood(port, kind, count);
      try {
        expect(attack.report.opened).toBe(count);
        const canaryCa = ca();
        const client = createClient(
          BudgetService,
          createGrpcTransport({ baseUrl: url, nodeOptions: canaryCa ? { ca: canaryCa } : undefined }),
        );
        const answer = await within(client.getProjectCost({ projectId: "canary" }), "the canary GetProjectCost", 30_000);
        expect(answer.projectCost?.totalCostNanos ?? 0n).toBe(0n);
        // The server never holds more than its limit: it made room for the
        // canary by closing the connections idle longest. The flood counts a
        // connection open once the kernel completed its handshake, which can
        // be before the server accepts it (a full accept queue defers the
        // handshake's last step, and SYN-ACK retries take seconds): those are
        // accepted, and make room by evicting, after the canary. So the
        // flood's count is asked until it settles at or under the limit; a
        // server that held more than its limit would never get there.
        const settleDeadlineMs = performance.now() + 60_000;
        let after = await attack.ask();
        while (after.open > connectionsMax && performance.now() < settleDeadlineMs) {
          await new Promise((resolve) => setTimeout(resolve, 250));
          after = await attack.ask();
        }
        expect(after.open).toBeLessThanOrEqual(connectionsMax);
        figures.push(`${kind}: opened ${after.opened}, held ${after.open}`);
      } finally {
        await attack.stop();
      }
    }, 180_000);
  }
});
