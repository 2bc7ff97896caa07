// `tally prices set|list|import` as real processes against a real Tally on
// port 0, and the shipped catalog file (prices/): every entry dated, sourced
// and loadable; import reports each entry and sends nothing from a bad file.
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCatalogFile } from "../src/cli-prices.ts";
import type { TallyServer } from "../src/server.ts";
import { clientsFor, startTestServer, type BudgetClient } from "./helpers.ts";

const bin = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const pricesDir = fileURLToPath(new URL("../prices/", import.meta.url));
const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, TALLY_URL: "" };

function tally(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr });
    });
  });
}

describe("the shipped catalog files", () => {
  const files = readdirSync(pricesDir).filter((f) => f.endsWith(".json"));
  it("exist, are named by their date, and date and source every price", () => {
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const doc = JSON.parse(readFileSync(join(pricesDir, file), "utf8")) as {
        catalog_date: string;
        prices: Array<Record<string, string>>;
      };
      expect(file).toBe(`${doc.catalog_date}.json`);
      for (const entry of doc.prices) {
        expect(entry.source, entry.model).toMatch(/^https:\/\//);
        expect(entry.checked_on, entry.model).toMatch(/^\d{4}-\d\d-\d\d$/);
        expect(Date.parse(entry.effective_from!), entry.model).not.toBeNaN();
      }
      // Every entry parses to exact nanos (the same checks import makes).
      expect(readCatalogFile(join(pricesDir, file)).length).toBe(doc.prices.length);
    }
  });
});

describe("tally prices", () => {
  let server: TallyServer;
  let client: BudgetClient;
  beforeAll(async () => {
    server = await startTestServer();
    client = clientsFor(server.url)["grpc h2c"] as BudgetClient;
  });
  afterAll(async () => {
    await server.close();
  });

  it("import loads the catalog file exactly, reports each entry, and a second import adds nothing", async () => {
    const file = join(pricesDir, "2026-12-05.json");
    const count = (JSON.parse(readFileSync(file, "utf8")) as { prices: unknown[] }).prices.length;
    const first = await tally("prices", "import", file, "--url", server.url);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout.match(/^added: /gm)?.length).toBe(count);
    const mini = (await client.listModelPrices({ model: "gpt-4o-mini" })).prices;
    expect(mini).toHaveLength(1);
    expect(mini[0]).toMatchObject({
      inputNanosPerMillion: 150_000_000n,
      cachedInputNanosPerMillion: 75_000_000n,
      outputNanosPerMillion: 600_000_000n,
      currency: "USD",
    });
    const again = await tally("prices", "import", file, "--url", server.url);
    expect(again.code).toBe(0);
    expect(again.stdout.match(/^already present: /gm)?.length).toBe(count);
    expect((await client.listModelPrices({})).prices).toHaveLength(count);
  });

  it("set adds an entry, list shows the history readably and as JSON", async () => {
    const args = [
      "--input",
      "0.075",
      "--cached-input",
      "0.0375",
      "--cache-write",
      "0.075",
      "--output",
      "0.30",
      "--source",
      "contract 17",
      "--url",
      server.url,
    ];
    const set = await tally("prices", "set", "cli-model", "--effective-from", "2026-12-01T00:00:00Z", ...args);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(
      /^added: cli-model {2}global {2}from 2026-12-01T00:00:00.000Z {2}USD per 1M tokens: input 0.075, cached input 0.0375, cache write 0.075, output 0.3/m,
    );
    expect((await tally("prices", "set", "cli-model", "--effective-from", "2026-12-04T00:00:00Z", "--project", "acme", ...args)).code).toBe(
      0,
    );
    const list = await tally("prices", "list", "--model", "cli-model", "--url", server.url);
    expect(
      list.stdout
        .trim()
        .split("\n")
        .map((l) => l.split("  ")[1]),
    ).toEqual(["global", "project acme"]);
    const json = JSON.parse((await tally("prices", "list", "--model", "cli-model", "--json", "--url", server.url)).stdout) as {
      prices: Array<{ inputNanosPerMillion: string }>;
    };
    expect(json.prices.map((p) => p.inputNanosPerMillion)).toEqual(["75000000", "75000000"]);
    // The same key with another price is refused: entries are never edited.
    const changed = await tally(
      "prices",
      "set",
      "cli-model",
      "--effective-from",
      "2026-12-01T00:00:00Z",
      ...args.map((a) => (a === "0.30" ? "0.31" : a)),
    );
    expect(changed.code).toBe(1);
    expect(changed.stderr).toMatch(/AlreadyExists.*never edited in place/);
  });

  it("refuses bad usage with exit 2 and sends nothing from a bad file", async () => {
    expect((await tally("prices", "set", "m", "--input", "0.1", "--url", server.url)).code).toBe(2);
    expect(
      (
        await tally(
          "prices",
          "set",
          "m",
          "--input",
          "1e-3",
          "--cached-input",
          "0",
          "--cache-write",
          "0",
          "--output",
          "0",
          "--effective-from",
          "2026-12-01T00:00:00Z",
          "--source",
          "s",
          "--url",
          server.url,
        )
      ).code,
    ).toBe(2);
    const dir = mkdtempSync(join(tmpdir(), "tally-prices-"));
    const bad = join(dir, "bad.json");
    writeFileSync(
      bad,
      JSON.stringify({
        currency: "USD",
        prices: [
          {
            model: "ok-model",
            input: "1",
            cached_input: "0.1",
            cache_write: "1.25",
            output: "5",
            effective_from: "2026-12-01T00:00:00Z",
            source: "https://x.test",
          },
          { model: "no-source", input: "1", cached_input: "0.1", cache_write: "1.25", output: "5", effective_from: "2026-12-01T00:00:00Z" },
        ],
      }),
    );
    const result = await tally("prices", "import", bad, "--url", server.url);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/prices\[1\]\.source/);
    expect((await client.listModelPrices({ model: "ok-model" })).prices).toEqual([]);
    expect((await tally("cost", "p", "--model", "x", "--url", server.url)).code).toBe(2);
  });
});
