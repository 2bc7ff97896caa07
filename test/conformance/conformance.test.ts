// Runs the Connect conformance suite (connectrpc.com/conformance, server mode)
// against test/conformance/server.ts, which serves through Tally's own
// transport: gRPC, gRPC-Web and Connect over HTTP/1.1 and h2c, proto and JSON,
// identity/gzip/br, unary (fast path) and every kind of stream (router).
// scripts/install-conformance.sh installs the runner; CI runs it first.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const runner = `${root}.tools/bin/connectconformance`;
const generated = `${root}test/conformance/gen/connectrpc/conformance/v1/service_pb.ts`;
const installed = existsSync(runner) && existsSync(generated);

describe("Connect conformance (server mode)", () => {
  if (!installed && process.env.CI) {
    it("has the conformance runner installed", () => {
      expect.fail(`missing ${runner} or ${generated}: run scripts/install-conformance.sh (CI must)`);
    });
    return;
  }
  it.skipIf(!installed)(
    "passes every case",
    async () => {
      const output = await new Promise<string>((resolve) => {
        execFile(
          runner,
          ["--mode", "server", "--conf", "test/conformance/config.yaml", "--", process.execPath, "test/conformance/server.ts"],
          { cwd: root, maxBuffer: 64 * 1024 * 1024, timeout: 600_000 },
          (_error, stdout, stderr) => resolve(`${stdout}\n${stderr}`),
        );
      });
      const summary = /(\d+) passed, (\d+) failed/.exec(output);
      expect(summary, output.slice(-4000)).not.toBeNull();
      expect(
        Number(summary![2]),
        output
          .split("\n")
          .filter((l) => l.startsWith("FAILED"))
          .join("\n"),
      ).toBe(0);
      expect(Number(summary![1])).toBeGreaterThan(1000);
    },
    600_000,
  );
});
