// The layout is the architecture (README, Layout): dependencies point one way,
// proto -> gen -> api -> ledger <- store, with transport/ (the wire), auth/ and
// operator/ beside api/. This reads every import under src/ and checks the
// direction, so a shortcut across layers fails here rather than in review;
// and it keeps the modules small (at most 400 lines).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const src = join(root, "src");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

/** The folder of src/ a path is in ("api", "store", ...; "." for src/*.ts), or undefined outside src/. */
function layerOf(path: string): string | undefined {
  const rel = relative(src, path);
  if (rel.startsWith("..")) return undefined;
  const parts = rel.split("/");
  return parts.length === 1 ? "." : parts[0];
}

const importPattern = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)["'](\.{1,2}\/[^"']+)["']/gm;

/** Every relative import under src/: [importing file, imported file], both relative to src/. */
function imports(): Array<[string, string]> {
  const edges: Array<[string, string]> = [];
  for (const file of sourceFiles(src)) {
    for (const match of readFileSync(file, "utf8").matchAll(importPattern)) {
      edges.push([relative(src, file), relative(src, resolve(dirname(file), match[1] as string))]);
    }
  }
  return edges;
}

/** Layers each layer must not import. */
const forbidden: Record<string, readonly string[]> = {
  // Handlers, routes and validation: the domain and auth, never the wire.
  api: ["transport", "operator", "store", "ops"],
  // The wire knows HTTP and Connect's router, not the service behind it.
  transport: ["api", "auth", "operator", "store", "ledger", "ops"],
  // The domain is pure: the stores implement its port.
  ledger: ["api", "transport", "auth", "operator", "store", "ops"],
  store: ["api", "transport", "auth", "operator", "ops"],
  auth: ["transport", "operator", "store", "ops"],
  operator: ["transport", "store", "ops"],
};

/** The one import from api/ that auth/ makes: the identifier rule both check. */
const allowed = new Set(["auth/auth.ts -> api/validate.ts"]);

describe("dependencies point one way", () => {
  const edges = imports();

  it("finds the imports it checks", () => {
    // A parser that found nothing would pass every rule below.
    expect(edges.length).toBeGreaterThan(200);
    expect(edges).toContainEqual(["api/budget-service.ts", "ledger/ledger.ts"]);
  });

  for (const [layer, banned] of Object.entries(forbidden)) {
    it(`src/${layer}/ imports nothing from ${banned.map((b) => `src/${b}/`).join(", ")}`, () => {
      const crossing = edges
        .filter(([from, to]) => layerOf(join(src, from)) === layer && banned.includes(layerOf(join(src, to)) ?? ""))
        .map(([from, to]) => `${from} -> ${to}`)
        .filter((edge) => !allowed.has(edge));
      expect(crossing).toEqual([]);
    });
  }
});

/** Small modules with one job (issue 16): migrations are generated one per
 * schema change and read as a whole, so they are left out. */
const sourceLinesMax = 400;

describe("no file under src/ is over 400 lines", () => {
  it(`every src/ file but migrations has at most ${sourceLinesMax} lines`, () => {
    const files = sourceFiles(src).filter((file) => !relative(src, file).includes("/migrations/"));
    expect(files.length).toBeGreaterThan(50);
    const over = files
      .map((file) => [relative(src, file), readFileSync(file, "utf8").split("\n").length - 1] as const)
      .filter(([, lines]) => lines > sourceLinesMax)
      .map(([file, lines]) => `${file}: ${lines} lines`);
    expect(over).toEqual([]);
  });
});
