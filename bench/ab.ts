// Two builds of Tally served side by side, same machine, same load, rounds
// interleaved (order alternating), to tell whether a change moved throughput
// more than the noise: e.g. a refactoring that must keep performance.
// Each build is `node <dir>/src/cli.ts serve` on its own SQLite file (as
// shipped: synchronous=FULL, info logs to /dev/null), loopback only, driven
// by the Node.js load driver (its own process, gRPC over one HTTP/2
// connection, which takes the unary fast path); every run bounded in time.
// Usage: node bench/ab.ts --a <dir> --b <dir> [--rounds 5] [--seconds 3]
//   [--concurrency 16]   (<dir>: a checkout with node_modules, e.g. a worktree)
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { runNodeDriver } from "./load/node-driver.ts";
import type { Rpc } from "./load/types.ts";

const { values } = parseArgs({
  options: {
    a: { type: "string" },
    b: { type: "string" },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "3" },
    concurrency: { type: "string", default: "16" },
  },
});
if (values.a === undefined || values.b === undefined) throw new Error("usage: node bench/ab.ts --a <dir> --b <dir>");
const rounds = Number(values.rounds);
const durationMs = Number(values.seconds) * 1000;
const concurrency = Number(values.concurrency);
const rpcs: Rpc[] = ["CheckBudget", "RecordCost", "GetProjectCost"];

function serve(dir: string, dbDir: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, [join(dir, "src/cli.ts"), "serve"], {
    cwd: dir,
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", TALLY_DATABASE_URL: `sqlite:${join(dbDir, "tally.db")}`, TALLY_LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "ignore"],
  });
  return new Promise((done, fail) => {
    child.once("exit", (code) => fail(new Error(`${dir}: tally exited with ${code}`)));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const event = JSON.parse(line) as { event?: string; url?: string };
      if (event.event === "server.listening" && event.url) done({ child, address: new URL(event.url).host });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const dirs = { a: resolve(values.a), b: resolve(values.b) };
const tmp = mkdtempSync(join(tmpdir(), "tally-ab-"));
const servers: Record<"a" | "b", { child: ChildProcess; address: string }> = {
  a: await serve(dirs.a, mkdtempSync(join(tmp, "a-"))),
  b: await serve(dirs.b, mkdtempSync(join(tmp, "b-"))),
};
const rps = new Map<string, number[]>();
try {
  for (let round = 0; round < rounds; round++) {
    for (const rpc of rpcs) {
      for (const side of round % 2 === 0 ? (["a", "b"] as const) : (["b", "a"] as const)) {
        const result = await runNodeDriver({
          address: servers[side].address,
          rpc,
          concurrency,
          durationMs,
          tag: `ab-${side}-${round}`,
          projectPrefix: "ab-",
          projects: 16,
          model: "",
        });
        if (result.errors > 0) throw new Error(`${side} ${rpc}: ${result.errors} errors ${JSON.stringify(result.errorKinds)}`);
        rps.set(`${rpc} ${side}`, [...(rps.get(`${rpc} ${side}`) ?? []), result.rps]);
      }
    }
  }
} finally {
  for (const s of Object.values(servers)) s.child.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
}
const lines = [
  `a = ${dirs.a}`,
  `b = ${dirs.b}`,
  `${rounds} interleaved rounds of ${durationMs / 1000} s, concurrency ${concurrency}, 16 projects, Node.js driver (gRPC h2c), SQLite files`,
  "",
  "| RPC | a calls/s (rounds) | b calls/s (rounds) | b/a |",
  "| --- | --- | --- | --- |",
];
for (const rpc of rpcs) {
  const a = rps.get(`${rpc} a`)!;
  const b = rps.get(`${rpc} b`)!;
  const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  lines.push(
    `| ${rpc} | ${median(a).toFixed(0)} (${list(a)}) | ${median(b).toFixed(0)} (${list(b)}) | ${(median(b) / median(a)).toFixed(2)} |`,
  );
}
console.log(lines.join("\n"));
