// The generated Python client (gen/python), proven the way an agent uses it:
// `pip install ./gen/python` into a venv, then pytest (test/clients/python)
// against a real Tally on an ephemeral port, mypy --strict over the smoke test
// and the example (the .pyi stubs are usable), and the example agent loop.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer, writeKeysFile } from "../helpers.ts";
import { root, runTool, selfSignedCert, tools } from "./tools.ts";

// No __pycache__ or .pytest_cache in the work tree.
const pythonEnv = { PYTHONDONTWRITEBYTECODE: "1" };

describe("generated Python client (gen/python)", () => {
  let server: TallyServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it("installs with pip from gen/python (no network: dependencies are in the venv)", { timeout: 180_000 }, async () => {
    // --force-reinstall: always the gen/ of this checkout, never a stale copy.
    const install = await runTool(
      tools.python,
      [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--force-reinstall",
        "./gen/python",
      ],
      { env: pythonEnv },
    );
    expect(install.code, install.output).toBe(0);
    const show = await runTool(
      tools.python,
      [
        "-c",
        "import tally.budget.v1.budget_pb2_grpc as g, importlib.metadata as m; print(m.version('tally-client'), g.BudgetServiceStub.__name__)",
      ],
      { cwd: tmpdir(), env: pythonEnv },
    );
    expect(show.code, show.output).toBe(0);
    expect(show.stdout.trim()).toBe("1.0.0 BudgetServiceStub");
  });

  it("passes the pytest smoke test against a running Tally: budget, check, record, retry, read, INVALID_ARGUMENT", {
    timeout: 180_000,
  }, async () => {
    const pytest = await runTool(tools.python, ["-m", "pytest", "-p", "no:cacheprovider", "-v", "test/clients/python"], {
      env: { ...pythonEnv, TALLY_URL: server.url },
    });
    expect(pytest.code, pytest.output).toBe(0);
    expect(pytest.stdout).toMatch(/\b4 passed\b/);
    expect(pytest.stdout).toContain("test_invalid_argument_is_a_grpc_rpc_error PASSED");
  });

  it("type-checks the smoke test and the example with mypy --strict against the generated stubs", { timeout: 180_000 }, async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), "tally-mypy-"));
    const mypy = await runTool(
      tools.python,
      ["-m", "mypy", "--strict", "--cache-dir", cacheDir, "test/clients/python/test_smoke.py", "examples/python/agent.py"],
      { env: pythonEnv, timeoutMs: 170_000 },
    );
    expect(mypy.code, mypy.output).toBe(0);
    expect(mypy.stdout).toMatch(/^Success: no issues found in 2 source files/m);
  });

  it("runs the example agent loop (examples/python/agent.py) until the budget refuses", { timeout: 120_000 }, async () => {
    const example = await runTool(tools.python, [join(root, "examples/python/agent.py")], { env: { ...pythonEnv, TALLY_URL: server.url } });
    expect(example.code, example.output).toBe(0);
    expect(example.stdout).toMatch(/budget refused step \d+/);
    expect(example.stdout).toMatch(/recorded \d+ calls/);
  });
});

describe("the Python example against a Tally with TLS and API keys", () => {
  const projectKey = generateApiKey();
  let server: TallyServer;
  let dir: string;
  let certFile: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tally-python-tls-"));
    const cert = selfSignedCert(dir);
    certFile = cert.certFile;
    const keysFile = writeKeysFile([{ id: "examples", role: "project", key: projectKey, projectPrefixes: ["example-"] }]);
    server = await startTestServer({ tlsCertFile: cert.certFile, tlsKeyFile: cert.keyFile, keysFile });
  });
  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // A project key may not set budgets, so the example runs on a named project
  // (TALLY_PROJECT) without one: it records its bounded 50 steps.
  it("sends TALLY_API_KEY over https:// (a project key, on its own project); without the key it stops at UNAUTHENTICATED", {
    timeout: 120_000,
  }, async () => {
    expect(server.url).toMatch(/^https:\/\//);
    // GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: grpc trusts the throwaway certificate as it would a real CA's.
    const env = { ...pythonEnv, TALLY_URL: server.url, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: certFile, TALLY_PROJECT: "example-python-keyed" };
    const keyed = await runTool(tools.python, [join(root, "examples/python/agent.py")], { env: { ...env, TALLY_API_KEY: projectKey } });
    expect(keyed.code, keyed.output).toBe(0);
    expect(keyed.stdout).toMatch(/recorded 50 calls; project example-python-keyed spent/);
    const unkeyed = await runTool(tools.python, [join(root, "examples/python/agent.py")], { env: { ...env, TALLY_API_KEY: "" } });
    expect(unkeyed.code, unkeyed.output).not.toBe(0);
    expect(unkeyed.stderr).toMatch(/StatusCode\.UNAUTHENTICATED/);
  });
});
