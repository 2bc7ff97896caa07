// Running the other languages' toolchains from vitest: each client test starts
// Tally on an ephemeral port, then runs pytest / go test / node as a child
// process with TALLY_URL set, and asserts that it passed.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { selfSignedCert as sharedSelfSignedCert } from "../helpers.ts";

export const root = fileURLToPath(new URL("../..", import.meta.url));
/** Installed by scripts/install-codegen.sh (test/global-setup.ts runs it). */
export const tools = {
  python: `${root}.tools/venv/bin/python`,
  grpcurl: `${root}.tools/bin/grpcurl`,
  buf: `${root}node_modules/.bin/buf`,
  tsc: `${root}node_modules/.bin/tsc`,
};

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Everything the command printed, for assertion messages. */
  output: string;
}

/** Runs a command to completion (bounded by `timeoutMs`) and never throws: the
 * caller asserts on the exit code with the output as the message. */
export function runTool(
  file: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: options.cwd ?? root,
        env: { ...process.env, ...options.env },
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : null;
        resolve({
          code,
          stdout,
          stderr,
          output: `$ ${file} ${args.join(" ")}\n${stdout}\n${stderr}${error && code === null ? `\n${error.message}` : ""}`,
        });
      },
    );
  });
}

/** A throwaway self-signed certificate for 127.0.0.1 in `dir`, for running the
 * examples against a Tally with TLS. */
export function selfSignedCert(dir: string): { certFile: string; keyFile: string } {
  return sharedSelfSignedCert(dir, "tally", "127.0.0.1");
}
