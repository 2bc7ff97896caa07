// Starting and stopping server processes for the crash test and the benchmarks.
// Every server here (Tally's CLI and the bench/servers/* comparison servers)
// logs one JSON line {"event":"server.listening","url":...} on stdout when it
// accepts connections; stdout goes to a log file (never an unread pipe, which
// would block a server that logs every RPC), and that file is polled for it.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
export const tallyCli = fileURLToPath(new URL("../../src/cli.ts", import.meta.url));

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** host:port, for ghz. */
  address: string;
  logPath: string;
}

export interface SpawnOptions {
  args: string[];
  env: Record<string, string>;
  logPath: string;
  /** Give up waiting for "server.listening" after this long. */
  startTimeoutMs?: number;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeFlags?: string[];
}

/** Spawns `node <args>` with stdout and stderr appended to logPath and resolves
 * once the process logged server.listening. */
export async function spawnServer(options: SpawnOptions): Promise<ServerProcess> {
  const fd = openSync(options.logPath, "a");
  const startOffset = safeSize(options.logPath);
  const child = spawn(process.execPath, [...(options.nodeFlags ?? []), ...options.args], {
    env: { ...process.env, ...options.env },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
  for (;;) {
    const text = readFileSync(options.logPath, "utf8").slice(startOffset);
    for (const line of text.split("\n")) {
      if (!line.includes("server.listening")) continue;
      try {
        const event = JSON.parse(line) as { event?: string; url?: string };
        if (event.event === "server.listening" && event.url) {
          return { child, url: event.url, address: event.url.replace(/^https?:\/\//, ""), logPath: options.logPath };
        }
      } catch {
        // a partial line: read again
      }
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `server exited (${child.exitCode ?? child.signalCode}) before listening; log: ${options.logPath}\n${text.slice(-2000)}`,
      );
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`server did not log server.listening within ${options.startTimeoutMs ?? 30_000} ms; log: ${options.logPath}`);
    }
    await sleep(20);
  }
}

function safeSize(path: string): number {
  try {
    return readFileSync(path, "utf8").length;
  } catch {
    return 0;
  }
}

export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

/** SIGTERM, then SIGKILL if the process has not exited within `graceMs`. */
export async function stopServer(child: ChildProcess, graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return exited(child);
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  const result = await exited(child);
  clearTimeout(timer);
  return result;
}

/** A free loopback port (listen on 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resident set size of a process in KiB (Linux /proc), or null. */
export function rssKib(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** Parses `--name value` / `--flag` arguments into a map. */
export function parseArgs(argv: string[]): Map<string, string> {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    const [name, inline] = arg.slice(2).split("=", 2) as [string, string | undefined];
    if (inline !== undefined) args.set(name, inline);
    else if (i + 1 < argv.length && !(argv[i + 1] as string).startsWith("--")) args.set(name, argv[++i] as string);
    else args.set(name, "true");
  }
  return args;
}

export function intArg(args: Map<string, string>, name: string, fallback: number, min: number, max: number): number {
  const raw = args.get(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(`--${name}=${raw}: expected a whole number in ${min}..${max}`);
  return value;
}
