// The dashboard in a real browser: Debian's chromium driven by playwright-core
// loads the page from a seeded Tally (built from web/ by Vite for this test),
// and the numbers it shows must equal what GetProjectCost / GetProjectBudget
// return (rounded to cents for reading, exact on hover), with every set window
// (today, this month), the binding one marked, totals across projects, a
// filter, and the chart in reach without scrolling past every row. Screenshots
// are saved to test-output/dashboard.png and dashboard-windows.png. With API keys the
// page asks for a key first (test-output/dashboard-key-prompt.png), then shows
// the same numbers (test-output/dashboard-keyed.png). A tree of budgets is
// shown under its parents with rolled-up figures and each parent's own calls
// (test-output/dashboard-tree.png), a project whose parent is archived and
// hidden at the top saying where it sits (dashboard-tree-unlisted.png).
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { build } from "vite";
import { Code, ConnectError } from "@connectrpc/connect";
import { BreakdownDimension } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../src/auth/keys.ts";
import { formatAmount, formatAmountRounded, formatBasisPoints } from "../../web/src/format.ts";
import type { TallyServer } from "../../src/server.ts";
import { clientsFor, startTestServer, usd, writeKeysFile, type BudgetClient } from "../helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const chromiumPath = process.env.TALLY_CHROMIUM ?? "/usr/bin/chromium";
const outputDir = join(root, "test-output");
const buildRoot = mkdtempSync(join(tmpdir(), "tally-dashboard-build-"));
let built: Promise<string> | undefined;
/** Builds web/ once for every suite in this file; resolves with the directory. */
function buildDashboard(): Promise<string> {
  const dashboardDir = join(buildRoot, "dashboard");
  built ??= build({ configFile: join(root, "vite.config.ts"), logLevel: "warn", build: { outDir: dashboardDir, emptyOutDir: true } }).then(
    () => dashboardDir,
  );
  return built;
}
afterAll(() => rmSync(buildRoot, { recursive: true, force: true }));

function launch(profileDir: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: 1100, height: 760 },
    timeout: 30_000,
  });
}

describe("dashboard in chromium", () => {
  let dir: string;
  let server: TallyServer;
  let client: BudgetClient;
  let context: BrowserContext;
  let page: Page;
  const problems: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tally-dashboard-"));
    server = await startTestServer({ dashboardDir: await buildDashboard() });
    client = clientsFor(server.url)["connect+proto h2c"] as BudgetClient;

    await client.setProjectBudget({ projectId: "acme/search", limitNanos: usd(50) });
    await client.recordCost({
      projectId: "acme/search",
      costNanos: 12_345_678_901n,
      inputTokens: 1200n,
      outputTokens: 300n,
      requestId: "s1",
    });
    await client.recordCost({ projectId: "acme/search", costNanos: usd(20), requestId: "s2" });
    await client.setProjectBudget({ projectId: "acme/chat", limitNanos: usd(10) });
    await client.recordCost({ projectId: "acme/chat", costNanos: usd(11.5), requestId: "c1" });
    // A day limit already used up: blocked for today at 3.2 % of the lifetime limit.
    await client.setProjectBudget({
      projectId: "beta-eu",
      limitNanos: usd(100),
      currency: "EUR",
      dailyLimitNanos: usd(2),
      monthlyLimitNanos: usd(40),
    });
    await client.recordCost({ projectId: "beta-eu", costNanos: usd(3.2), requestId: "e1" });
    await client.recordCost({ projectId: "no-limit", costNanos: 7n, requestId: "n1" });
    // An active hold: the Reserved column shows it, as ListProjects and GetProjectCost report it.
    expect(
      (await client.checkBudget({ projectId: "no-limit", estimatedCostNanos: usd(2.5), reserve: true, holdTtl: { seconds: 3600n } }))
        .allowed,
    ).toBe(true);
    await client.setProjectBudget({ projectId: "new-project", limitNanos: usd(5) });

    context = await launch(join(dir, "profile"));
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  });

  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const rowIds = () => page.locator("#projects tbody tr").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-project")));

  it("shows every project with exactly the totals and budgets the API returns", async () => {
    await page.goto(`${server.url}/`);
    await expect.poll(async () => (await rowIds()).length, { timeout: 15_000 }).toBe(5);
    // Largest spend first by default.
    expect(await rowIds()).toEqual(["acme/search", "acme/chat", "beta-eu", "no-limit", "new-project"]);
    // No tree of budgets listed: no Own column.
    expect(await page.locator("#own-header").isHidden()).toBe(true);
    expect(await page.locator('#projects [data-field="own"]').count()).toBe(0);
    for (const projectId of await rowIds()) {
      const row = page.locator(`#projects tbody tr[data-project="${projectId}"]`);
      const { projectCost } = await client.getProjectCost({ projectId });
      const { budget } = await client.getProjectBudget({ projectId });
      const spent = row.locator('[data-field="spent"]');
      expect(await spent.getAttribute("data-nanos")).toBe(String(projectCost!.totalCostNanos));
      // Rounded for reading, exact on hover.
      expect(await spent.textContent()).toBe(`${formatAmountRounded(projectCost!.totalCostNanos)} ${budget!.currency}`);
      expect(await spent.getAttribute("title")).toBe(`${formatAmount(projectCost!.totalCostNanos)} ${budget!.currency}`);
      const limit = row.locator('[data-field="limit"]');
      expect(await limit.getAttribute("data-nanos")).toBe(String(budget!.limitNanos));
      expect(await limit.textContent()).toBe(
        budget!.limitNanos > 0n ? `${formatAmountRounded(budget!.limitNanos)} ${budget!.currency}` : "no limit",
      );
      const bp = budget!.limitNanos > 0n ? (projectCost!.totalCostNanos * 10_000n) / budget!.limitNanos : 0n;
      const used = row.locator('[data-field="used"]');
      expect(await used.getAttribute("data-basis-points")).toBe(String(bp));
      expect(await used.textContent()).toBe(budget!.limitNanos > 0n ? formatBasisPoints(bp) : "—");
      expect(await row.locator('[data-field="records"]').textContent()).toBe(String(projectCost!.recordCount));
      expect(await row.locator('[data-field="reserved"]').getAttribute("data-nanos")).toBe(String(projectCost!.reservedNanos));
    }
    expect(await page.locator('tr[data-project="no-limit"] [data-field="reserved"]').textContent()).toBe("2.50 USD");
    // Spot-check the formatting itself, independently of formatAmount.
    expect(await page.locator('tr[data-project="acme/search"] [data-field="spent"]').textContent()).toBe("32.35 USD");
    expect(await page.locator('tr[data-project="acme/search"] [data-field="spent"]').getAttribute("title")).toBe("32.345678901 USD");
    expect(await page.locator('tr[data-project="acme/chat"] [data-field="used"]').textContent()).toBe("115.00 %");
    expect(await page.locator('tr[data-project="beta-eu"] [data-field="limit"]').textContent()).toBe("100.00 EUR");
  });

  it("shows today's and this month's spend against their limits, the binding limit first, and the alerts reached", async () => {
    const { projects } = await client.listProjects({ pageSize: 100 });
    const beta = projects.find((p) => p.projectId === "beta-eu")!;
    const row = page.locator('#projects tbody tr[data-project="beta-eu"]');
    const day = row.locator('[data-field="day"]');
    expect(await day.textContent()).toBe("3.20 / 2.00 · 160.00 %");
    expect(await day.getAttribute("data-period")).toBe(beta.limits[0]!.period);
    expect(await day.getAttribute("data-spent-nanos")).toBe(String(usd(3.2)));
    expect(await day.getAttribute("class")).toBe("num used binding refusing");
    expect(await row.locator('[data-field="month"]').textContent()).toBe("3.20 / 40.00 · 8.00 %");
    expect(await row.locator('[data-field="binding"]').textContent()).toBe("✕ day 160.00 %");
    expect(await row.locator('[data-field="used"]').textContent()).toBe("3.20 %"); // lifetime: calm, but the day refuses
    expect(await row.locator('[data-field="reached"]').textContent()).toBe("day 100 %");
    expect(await row.getAttribute("class")).toContain("blocked");
    // Windows that are not set are dashes; the binding column follows ListProjects' decided_by.
    for (const p of projects) {
      const r = page.locator(`#projects tbody tr[data-project="${p.projectId}"]`);
      expect(await r.locator('[data-field="day"]').textContent(), p.projectId).toBe(
        p.projectId === "beta-eu" ? "3.20 / 2.00 · 160.00 %" : "—",
      );
      expect(await r.locator('[data-field="month"]').textContent(), p.projectId).toBe(
        p.projectId === "beta-eu" ? "3.20 / 40.00 · 8.00 %" : "—",
      );
    }
    expect(await page.locator('tr[data-project="acme/chat"] [data-field="binding"]').textContent()).toBe("✕ lifetime 115.00 %");
    expect(await page.locator('tr[data-project="acme/search"] [data-field="binding"]').textContent()).toBe("lifetime 64.69 %");
    expect(await page.locator('tr[data-project="no-limit"] [data-field="binding"]').textContent()).toBe("—");
  });

  it("totals every project per currency (exact on hover), counts the blocked and alerting ones, and a filter narrows rows and totals", async () => {
    const { projects } = await client.listProjects({ pageSize: 100 });
    const usdSpent = projects.filter((p) => p.budget?.currency !== "EUR").reduce((sum, p) => sum + (p.cost?.totalCostNanos ?? 0n), 0n);
    expect(usdSpent).toBe(12_345_678_901n + usd(20) + usd(11.5) + 7n);
    const total = (name: string) => page.locator(`#totals [data-total="${name}"]`);
    expect(await total("projects").textContent()).toBe("Projects 5");
    expect(await total("spent-USD").textContent()).toBe("Spent (USD) 43.85");
    expect(await total("spent-USD").getAttribute("title")).toBe(`${formatAmount(usdSpent)} USD`);
    expect(await total("spent-USD").getAttribute("data-nanos")).toBe(String(usdSpent));
    expect(await total("spent-EUR").textContent()).toBe("Spent (EUR) 3.20");
    expect(await total("reserved-USD").textContent()).toBe("Reserved (USD) 2.50");
    expect(await total("blocked").textContent()).toBe("Blocked now 2"); // acme/chat (lifetime), beta-eu (day)
    expect(await total("alerting").textContent()).toBe("At an alert 2");

    await page.fill("#filter", "ACME");
    expect(await rowIds()).toEqual(["acme/search", "acme/chat"]);
    expect(await total("projects").textContent()).toBe("Projects 2 of 5");
    expect(await total("spent-USD").textContent()).toBe(`Spent (USD) ${formatAmountRounded(12_345_678_901n + usd(31.5))}`);
    expect(await total("spent-EUR").count()).toBe(0);
    expect(await page.locator("#project-count").textContent()).toBe("(2 of 5)");
    await page.fill("#filter", "");
    await page.check("#blocked-only");
    expect(await rowIds()).toEqual(["acme/chat", "beta-eu"]);
    await page.uncheck("#blocked-only");
    expect((await rowIds()).length).toBe(5);
  });

  it("sorts by any column, both ways", async () => {
    await page.click('th[data-sort="project"]');
    expect(await rowIds()).toEqual(["acme/chat", "acme/search", "beta-eu", "new-project", "no-limit"]);
    await page.click('th[data-sort="project"]');
    expect(await rowIds()).toEqual(["no-limit", "new-project", "beta-eu", "acme/search", "acme/chat"]);
    await page.click('th[data-sort="used"]');
    expect((await rowIds()).slice(0, 3)).toEqual(["acme/chat", "acme/search", "beta-eu"]);
    expect(await page.getAttribute('th[data-sort="used"]', "aria-sort")).toBe("descending");
    await page.click('th[data-sort="limit"]');
    await page.click('th[data-sort="limit"]');
    expect((await rowIds())[0]).toBe("no-limit");
    await page.click('th[data-sort="binding"]');
    expect((await rowIds()).slice(0, 2)).toEqual(["beta-eu", "acme/chat"]); // refusing first, by share used
    await page.click('th[data-sort="day"]');
    expect((await rowIds())[0]).toBe("beta-eu");
    await page.click('th[data-sort="spent"]');
    expect((await rowIds())[0]).toBe("acme/search");
  });

  it("charts one project's spend over time and follows new costs", async () => {
    await page.click('#projects tbody tr[data-project="acme/search"]');
    // A flat line has no height: wait for it in the DOM, not for "visible".
    await page.locator("#detail svg.chart path.spend").waitFor({ state: "attached" });
    expect(await page.locator("#detail-project").textContent()).toBe("acme/search");
    expect(await page.locator("#detail svg.chart .limit").count()).toBe(1);
    const chart = page.locator("#detail svg.chart");
    const dots = () => page.locator("#detail svg.chart circle.dot").count();
    // The history comes from the ledger (ListCostRecords), not from samples
    // taken since the page opened: both seeded costs are there, and the line
    // ends at exactly GetProjectCost's total.
    expect(await dots()).toBe(2);
    expect(await chart.getAttribute("data-records")).toBe("2");
    const seeded = (await client.getProjectCost({ projectId: "acme/search" })).projectCost!;
    expect(await chart.getAttribute("data-last-nanos")).toBe(String(seeded.totalCostNanos));
    expect(await page.locator("#chart-note").textContent()).toMatch(/The chart shows the last 30 days of the ledger \(2 costs\)\.$/);
    await client.recordCost({ projectId: "acme/search", costNanos: usd(9), requestId: "s3" });
    await page.click("#refresh");
    await expect.poll(dots, { timeout: 15_000 }).toBe(3);
    const { projectCost } = await client.getProjectCost({ projectId: "acme/search" });
    expect(await page.locator("#detail svg.chart").getAttribute("data-last-nanos")).toBe(String(projectCost!.totalCostNanos));
    await expect
      .poll(() => page.locator('tr[data-project="acme/search"] [data-field="spent"]').getAttribute("data-nanos"), { timeout: 15_000 })
      .toBe(String(projectCost!.totalCostNanos));
    expect(page.url()).toMatch(/#project=acme%2Fsearch$/);
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, "dashboard.png"), fullPage: true });
    expect(problems).toEqual([]);
  });

  it("pages through a long ledger for the chart, ending at exactly GetProjectCost's total", async () => {
    // More records than one ListCostRecords page (1000), fewer than the page's bound (3 pages).
    const n = 2_345;
    for (let start = 0; start < n; start += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, n - start) }, (_, k) =>
          client.recordCost({ projectId: "busy", costNanos: BigInt(1_000_003 * (start + k + 1)), requestId: `b${start + k}` }),
        ),
      );
    }
    const calls: string[] = [];
    const onRequest = (request: { url(): string }) => void (request.url().endsWith("/ListCostRecords") && calls.push(request.url()));
    page.on("request", onRequest);
    await page.click("#refresh");
    await page.click('#projects tbody tr[data-project="busy"]');
    const chart = page.locator("#detail svg.chart");
    await expect.poll(() => chart.getAttribute("data-records"), { timeout: 15_000 }).toBe(String(n));
    const { projectCost } = await client.getProjectCost({ projectId: "busy" });
    expect(await chart.getAttribute("data-last-nanos")).toBe(String(projectCost!.totalCostNanos));
    expect(await page.locator("#detail svg.chart circle.dot").count()).toBe(0); // too many to draw
    expect(calls.length).toBeGreaterThanOrEqual(3);
    // A new cost is fetched alone, after the last record shown.
    calls.length = 0;
    await client.recordCost({ projectId: "busy", costNanos: 5n, requestId: "b-last" });
    await page.click("#refresh");
    await expect.poll(() => chart.getAttribute("data-records"), { timeout: 15_000 }).toBe(String(n + 1));
    expect(await page.locator("#detail svg.chart").getAttribute("data-last-nanos")).toBe(String(projectCost!.totalCostNanos + 5n));
    expect(calls).toHaveLength(1);
    page.off("request", onRequest);
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, "dashboard-busy.png"), fullPage: true });
    expect(problems).toEqual([]);
  });

  it("keeps the chart in reach without scrolling past every row (the table scrolls on its own)", async () => {
    for (let start = 0; start < 120; start += 40) {
      await Promise.all(
        Array.from({ length: 40 }, (_, k) =>
          client.recordCost({
            projectId: `bulk-${String(start + k).padStart(3, "0")}`,
            costNanos: BigInt(1_000 + start + k),
            requestId: "r",
          }),
        ),
      );
    }
    // An operator's window: every column fits at 1400 px (narrower, the table scrolls sideways on its own).
    await page.setViewportSize({ width: 1400, height: 800 });
    await page.evaluate("window.scrollTo(0, 0)");
    await page.click("#refresh");
    await expect.poll(async () => (await rowIds()).length, { timeout: 15_000 }).toBe(126);
    await page.click('#projects tbody tr[data-project="beta-eu"]');
    await page.locator("#detail svg.chart path.spend").waitFor({ state: "attached" });
    // Boxes are relative to the unscrolled top of the page's viewport.
    // The chart container (its svg is redrawn on every refresh).
    const chart = (await page.locator("#chart").boundingBox())!;
    const table = (await page.locator("#projects").boundingBox())!;
    const place = {
      scrollY: await page.evaluate<number>("window.scrollY"),
      chartTop: chart.y,
      viewport: page.viewportSize()!.height,
      tableHeight: table.height,
    };
    // 126 rows are taller than the window, yet the chart starts inside it, unscrolled.
    expect(place.tableHeight).toBeGreaterThan(place.viewport);
    expect(place.scrollY).toBe(0);
    expect(place.chartTop).toBeLessThan(place.viewport);
    expect(await page.locator("#detail-project").textContent()).toBe("beta-eu");
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, "dashboard-windows.png") });
    // Nothing is cut off to the right.
    expect(
      await page.evaluate<boolean>(
        "(() => { const s = document.querySelector('.table-scroll'); return s.scrollWidth <= s.clientWidth; })()",
      ),
    ).toBe(true);
    await page.setViewportSize({ width: 1100, height: 760 });
    expect(problems).toEqual([]);
  });

  it("shows the selected project's spend by model: recorded vs catalog for the priced calls, and the calls without a price", async () => {
    await client.setModelPrice({
      model: "dash-model",
      inputNanosPerMillion: usd(1),
      cachedInputNanosPerMillion: usd(0.1),
      cacheWriteNanosPerMillion: usd(1.25),
      outputNanosPerMillion: usd(5),
      effectiveFrom: { seconds: 0n, nanos: 0 },
      source: "test",
    });
    // m1: reported 2.5 USD, catalog 1M x $1 + 200k x $5 = 2 USD; m2: reported 0.5, catalog 100k x $1 = 0.1 USD.
    await client.recordCost({
      projectId: "dash/models",
      model: "dash-model",
      costNanos: usd(2.5),
      inputTokens: 1_000_000n,
      outputTokens: 200_000n,
      requestId: "m1",
    });
    await client.recordCost({ projectId: "dash/models", model: "dash-model", costNanos: usd(0.5), inputTokens: 100_000n, requestId: "m2" });
    await client.recordCost({ projectId: "dash/models", model: "unpriced-model", costNanos: usd(1), requestId: "m3" });
    const [byModel] = (await client.getProjectCost({ projectId: "dash/models", breakdownBy: [2] })).breakdowns;
    await page.reload();
    await page.locator('tr[data-project="dash/models"]').click();
    const row = page.locator('#models tr[data-model="dash-model"]');
    await row.waitFor();
    const entry = byModel!.entries.find((e) => e.key === "dash-model")!;
    expect([entry.pricedCostNanos, entry.catalogCostNanos]).toEqual([usd(3), usd(2.1)]);
    expect(await row.locator("td.recorded").getAttribute("title")).toBe(`${formatAmount(entry.pricedCostNanos)} USD`);
    expect(await row.locator("td.catalog").getAttribute("title")).toBe(`${formatAmount(entry.catalogCostNanos)} USD`);
    expect(await row.locator("td.drift").textContent()).toBe("0.90");
    const unpriced = page.locator('#models tr[data-model="unpriced-model"]');
    expect(await unpriced.locator("td.recorded").textContent()).toBe("no price");
    expect(await unpriced.locator("td").last().textContent()).toBe("1");
  });

  it("archives, unarchives and deletes the selected project (delete only without recent costs, after a confirmation)", async () => {
    await page.click('#projects tbody tr[data-project="new-project"]');
    await page.locator("#removal").waitFor({ state: "visible" });
    expect(await page.locator("#archive").textContent()).toBe("Archive");
    await page.click("#archive");
    await expect
      .poll(() => page.locator("#removal-message").textContent(), { timeout: 15_000 })
      .toMatch(/^new-project is archived: hidden from the list/);
    await expect.poll(async () => (await rowIds()).includes("new-project"), { timeout: 15_000 }).toBe(false);
    expect(
      (await client.listProjects({ includeArchived: true, pageSize: 1000 })).projects.find((p) => p.projectId === "new-project")?.archived,
    ).toBe(true);
    await page.check("#show-archived");
    await expect.poll(async () => (await rowIds()).includes("new-project"), { timeout: 15_000 }).toBe(true);
    expect(await page.locator('tr[data-project="new-project"] [data-field="project"]').textContent()).toBe("new-project (archived)");
    await page.click('#projects tbody tr[data-project="new-project"]');
    await expect.poll(() => page.locator("#archive").textContent(), { timeout: 15_000 }).toBe("Unarchive");
    await page.click("#archive");
    await expect.poll(() => page.locator("#removal-message").textContent(), { timeout: 15_000 }).toBe("new-project is active again.");
    await page.uncheck("#show-archived");

    // A project with costs since the chosen day is refused, with the server's reason.
    await page.click('#projects tbody tr[data-project="acme/search"]');
    page.once("dialog", (dialog) => void dialog.accept());
    await page.click("#delete");
    await expect
      .poll(() => page.locator("#removal-message").textContent(), { timeout: 15_000 })
      .toMatch(/^Refused: project "acme\/search" recorded a cost at .*: nothing was deleted$/);
    // Chromium logs the refused fetch (FAILED_PRECONDITION is HTTP 400 in Connect): expected here, once.
    const refusedFetch = problems.findIndex((p) => /status of 400/.test(p));
    expect(refusedFetch).toBeGreaterThanOrEqual(0);
    problems.splice(refusedFetch, 1);
    // Dismissing the confirmation deletes nothing.
    await page.click('#projects tbody tr[data-project="new-project"]');
    let asked = "";
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      void dialog.dismiss();
    });
    await page.click("#delete");
    expect(asked).toMatch(/^Delete new-project for good \(totals, budget, ledger\)\? Only if it recorded nothing since \d{4}-\d\d-\d\d\.$/);
    expect((await client.getProjectBudget({ projectId: "new-project" })).budget?.configured).toBe(true);
    page.once("dialog", (dialog) => void dialog.accept());
    await page.click("#delete");
    await expect
      .poll(() => page.locator("#removal-message").textContent(), { timeout: 15_000 })
      .toBe("new-project was deleted (0 cost records).");
    await expect.poll(async () => (await rowIds()).includes("new-project"), { timeout: 15_000 }).toBe(false);
    expect((await client.getProjectBudget({ projectId: "new-project" })).budget?.configured).toBe(false);
    expect(await page.locator("#detail").isHidden()).toBe(true);
    expect(problems).toEqual([]);
  });

  it("says plainly when Tally cannot be reached", async () => {
    await server.close();
    await page.click("#refresh");
    await page.locator("#error").waitFor({ state: "visible" });
    expect(await page.locator("#error").textContent()).toMatch(/^Tally did not answer: /);
  });
});

describe("dashboard in chromium, with API keys", () => {
  const adminKey = generateApiKey();
  const projectKey = generateApiKey();
  let dir: string;
  let keysFile: string;
  let server: TallyServer;
  let admin: BudgetClient;
  let context: BrowserContext;
  let page: Page;
  const problems: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tally-dashboard-keyed-"));
    keysFile = writeKeysFile([
      { id: "ops", role: "admin", key: adminKey },
      { id: "team-a", role: "project", key: projectKey, projectPrefixes: ["acme/"] },
    ]);
    server = await startTestServer({ dashboardDir: await buildDashboard(), keysFile });
    admin = clientsFor(server.url, adminKey)["connect+proto h2c"] as BudgetClient;
    await admin.setProjectBudget({ projectId: "acme/search", limitNanos: usd(50) });
    await admin.recordCost({ projectId: "acme/search", costNanos: 12_345_678_901n, inputTokens: 1200n, requestId: "s1" });
    await admin.setProjectBudget({ projectId: "beta-eu", limitNanos: usd(100), currency: "EUR" });
    await admin.recordCost({ projectId: "beta-eu", costNanos: usd(3.2), requestId: "e1" });
    await admin.recordCost({ projectId: "no-limit", costNanos: 7n, requestId: "n1" });

    context = await launch(join(dir, "profile"));
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    // Chromium reports every refused fetch (401/403) on the console; those are expected here.
    page.on(
      "console",
      (message) => message.type() === "error" && !/status of 40[13]/.test(message.text()) && problems.push(`console: ${message.text()}`),
    );
  });

  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const rowIds = () => page.locator("#projects tbody tr").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-project")));
  const enterKey = async (key: string) => {
    await page.fill("#key-input", key);
    await page.press("#key-input", "Enter");
  };

  it("asks for a key and shows no data without one", async () => {
    await page.goto(`${server.url}/`);
    await page.locator("#key-form").waitFor({ state: "visible" });
    expect(await page.locator("#key-message").textContent()).toBe("This Tally needs an API key to show its data. Enter an admin API key.");
    expect(await page.locator("#status").textContent()).toBe("API key needed");
    expect(await rowIds()).toEqual([]);
    expect(await page.locator("#error").isHidden()).toBe(true);
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, "dashboard-key-prompt.png"), fullPage: true });
  });

  it("says why a wrong key or a project key is not enough", async () => {
    await enterKey("tally_not-the-right-key-00000000000000000000000");
    await expect
      .poll(() => page.locator("#key-message").textContent(), { timeout: 15_000 })
      .toBe("That key was not accepted: it may be mistyped or revoked. Enter an admin API key.");
    expect(await page.locator("#key-form").isVisible()).toBe(true);
    await enterKey(projectKey);
    await expect
      .poll(() => page.locator("#key-message").textContent(), { timeout: 15_000 })
      .toMatch(
        /^That key may not list projects: the dashboard needs an admin key\. \(.*ListProjects needs an admin key; key "team-a" is a project key\)$/,
      );
    expect(await rowIds()).toEqual([]);
  });

  it("with an admin key shows exactly what GetProjectCost returns, and keeps the key for this tab only", async () => {
    await enterKey(adminKey);
    await expect.poll(async () => (await rowIds()).length, { timeout: 15_000 }).toBe(3);
    expect(await page.locator("#key-form").isHidden()).toBe(true);
    expect(await rowIds()).toEqual(["acme/search", "beta-eu", "no-limit"]);
    for (const projectId of await rowIds()) {
      const row = page.locator(`#projects tbody tr[data-project="${projectId}"]`);
      const { projectCost } = await admin.getProjectCost({ projectId });
      const { budget } = await admin.getProjectBudget({ projectId });
      expect(await row.locator('[data-field="spent"]').getAttribute("data-nanos")).toBe(String(projectCost!.totalCostNanos));
      expect(await row.locator('[data-field="spent"]').textContent()).toBe(
        `${formatAmountRounded(projectCost!.totalCostNanos)} ${budget!.currency}`,
      );
      expect(await row.locator('[data-field="spent"]').getAttribute("title")).toBe(
        `${formatAmount(projectCost!.totalCostNanos)} ${budget!.currency}`,
      );
      expect(await row.locator('[data-field="limit"]').getAttribute("data-nanos")).toBe(String(budget!.limitNanos));
      expect(await row.locator('[data-field="records"]').textContent()).toBe(String(projectCost!.recordCount));
    }
    expect(await page.locator('tr[data-project="acme/search"] [data-field="spent"]').textContent()).toBe("12.35 USD");
    // The chart's calls carry the key too.
    await page.click('#projects tbody tr[data-project="acme/search"]');
    await page.locator("#detail svg.chart path.spend").waitFor({ state: "attached" });
    expect(await page.locator("#chart-note").textContent()).toMatch(/^12\.345678901 USD spent over 1 calls\./);
    // Kept in sessionStorage (survives a reload of this tab), never in localStorage or the URL.
    expect(await page.evaluate(() => [sessionStorage.getItem("tally.apiKey"), localStorage.length])).toEqual([adminKey, 0]);
    expect(page.url()).not.toContain(adminKey);
    await page.reload();
    await expect.poll(async () => (await rowIds()).length, { timeout: 15_000 }).toBe(3);
    expect(await page.locator("#key-form").isHidden()).toBe(true);
    await page.locator("#detail svg.chart path.spend").waitFor({ state: "attached" });
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, "dashboard-keyed.png"), fullPage: true });
    expect(problems).toEqual([]);
  });

  it("forgets the key on request", async () => {
    await page.click("#forget-key");
    expect(await page.locator("#key-message").textContent()).toMatch(/^The key was removed from this tab\./);
    expect(await rowIds()).toEqual([]);
    expect(await page.evaluate(() => sessionStorage.getItem("tally.apiKey"))).toBe(null);
    await enterKey(adminKey);
    await expect.poll(async () => (await rowIds()).length, { timeout: 15_000 }).toBe(3);
  });

  it("asks again, hiding the numbers, once the key is revoked", async () => {
    writeKeysFile([{ id: "team-a", role: "project", key: projectKey, projectPrefixes: ["acme/"] }], keysFile);
    expect(server.reload()).toBe(true);
    expect(
      await admin.listProjects({}).then(
        () => "ok",
        (e: unknown) => ConnectError.from(e).code,
      ),
    ).toBe(Code.Unauthenticated);
    await page.click("#refresh");
    await expect
      .poll(() => page.locator("#key-message").textContent(), { timeout: 15_000 })
      .toBe("That key was not accepted: it may be mistyped or revoked. Enter an admin API key.");
    expect(await rowIds()).toEqual([]);
    expect(await page.locator("#detail").isHidden()).toBe(true);
    expect(await page.evaluate(() => sessionStorage.getItem("tally.apiKey"))).toBe(null);
  });
});

describe("dashboard: trees of budgets", () => {
  let dir: string;
  let server: TallyServer;
  let client: BudgetClient;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tally-dashboard-tree-"));
    server = await startTestServer({ dashboardDir: await buildDashboard() });
    client = clientsFor(server.url)["connect+proto h2c"] as BudgetClient;
    // org > team-a > (chat, search), org > team-b > batch; solo is flat.
    await client.setProjectBudget({ projectId: "org", limitNanos: usd(100) });
    await client.setProjectBudget({ projectId: "team-a", limitNanos: usd(40), parentId: "org" });
    await client.setProjectBudget({ projectId: "team-b", limitNanos: 0n, parentId: "org" });
    await client.setProjectBudget({ projectId: "chat", limitNanos: usd(10), parentId: "team-a" });
    await client.setProjectBudget({ projectId: "search", limitNanos: 0n, parentId: "team-a" });
    await client.setProjectBudget({ projectId: "batch", limitNanos: 0n, parentId: "team-b" });
    await client.recordCost({ projectId: "chat", costNanos: usd(3), requestId: "c1" });
    await client.recordCost({ projectId: "search", costNanos: usd(5), requestId: "s1" });
    await client.recordCost({ projectId: "batch", costNanos: usd(1.25), requestId: "b1" });
    await client.recordCost({ projectId: "org", costNanos: usd(0.5), requestId: "o1" }); // the org's own call
    await client.recordCost({ projectId: "solo", costNanos: usd(2), requestId: "x1" });
    context = await launch(join(dir, "profile"));
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
  });

  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const rows = () =>
    page
      .locator("#projects tbody tr")
      .evaluateAll((trs) =>
        trs.map((tr) => [
          tr.getAttribute("data-project"),
          Number(tr.querySelector('[data-field="project"]')?.getAttribute("data-depth")),
          tr.querySelector('[data-field="spent"]')?.getAttribute("data-nanos"),
        ]),
      );
  const ownCells = () =>
    page
      .locator("#projects tbody tr")
      .evaluateAll((trs) =>
        trs.map((tr) => [tr.getAttribute("data-project"), tr.querySelector('[data-field="own"]')?.getAttribute("data-nanos") ?? null]),
      );

  it("shows each project under its parent with the rolled-up totals the API returns, and counts each tree once", async () => {
    await page.goto(`${server.url}/`);
    await expect.poll(async () => (await rows()).length, { timeout: 15_000 }).toBe(7);
    // Depth first, siblings by spend (largest first, the default order).
    expect(await rows()).toEqual([
      ["org", 0, String(usd(9.75))],
      ["team-a", 1, String(usd(8))],
      ["search", 2, String(usd(5))],
      ["chat", 2, String(usd(3))],
      ["team-b", 1, String(usd(1.25))],
      ["batch", 2, String(usd(1.25))],
      ["solo", 0, String(usd(2))],
    ]);
    for (const [projectId, , nanos] of await rows()) {
      const { projectCost } = await client.getProjectCost({ projectId: projectId! });
      expect(nanos, projectId!).toBe(String(projectCost!.totalCostNanos));
    }
    expect(await page.locator('tr[data-project="chat"] [data-field="project"]').getAttribute("data-parent")).toBe("team-a");
    // Each parent's own calls beside its rolled-up spend, exactly GetProjectCost's own_cost; no split for a leaf.
    expect(await page.locator("#own-header").isVisible()).toBe(true);
    expect(await ownCells()).toEqual([
      ["org", String(usd(0.5))],
      ["team-a", "0"],
      ["search", null],
      ["chat", null],
      ["team-b", "0"],
      ["batch", null],
      ["solo", null],
    ]);
    for (const projectId of ["org", "team-a", "team-b"]) {
      const { ownCost } = await client.getProjectCost({ projectId });
      expect(await page.locator(`tr[data-project="${projectId}"] [data-field="own"]`).getAttribute("data-nanos"), projectId).toBe(
        String(ownCost!.totalCostNanos),
      );
    }
    expect(await page.locator('tr[data-project="org"] [data-field="own"]').textContent()).toBe("0.50 USD");
    expect(await page.locator('tr[data-project="chat"] [data-field="own"]').textContent()).toBe("—");
    // Each window against its limit, rolled up: team-a's lifetime 8 of 40.
    expect(await page.locator('tr[data-project="team-a"] [data-field="used"]').textContent()).toBe("20.00 %");
    expect(await page.locator('tr[data-project="org"] [data-field="binding"]').textContent()).toBe("lifetime 9.75 %");
    // 9.75 (org, rolled up) + 2 (solo): children are not added again.
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(11.75)));
    await page.screenshot({ path: join(outputDir, "dashboard-tree.png") });
  });

  it("folds a parent, keeps a match's ancestors under a filter, and shows a parent's spend by child", async () => {
    await page.click('tr[data-project="team-a"] button.fold');
    expect((await rows()).map((r) => r[0])).toEqual(["org", "team-a", "team-b", "batch", "solo"]);
    expect(await page.locator('tr[data-project="team-a"] button.fold').getAttribute("aria-expanded")).toBe("false");
    await page.click('tr[data-project="team-a"] button.fold');
    expect((await rows()).length).toBe(7);
    await page.fill("#filter", "batch");
    expect((await rows()).map((r) => r[0])).toEqual(["org", "team-b", "batch"]);
    // Totals count the matches only: batch's 1.25 (its ancestors are context).
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(1.25)));
    // A parent and its child both matching count once: "team" matches team-a (8) and team-b (1.25).
    await page.fill("#filter", "team");
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(9.25)));
    await page.fill("#filter", "o");
    // org and solo match; the org's 9.75 holds its whole tree: 11.75.
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(11.75)));
    await page.fill("#filter", "");
    await page.click('tr[data-project="org"] [data-field="spent"]');
    await expect.poll(() => page.locator("#children").isVisible()).toBe(true);
    const children = await page
      .locator("#children-table tbody tr")
      .evaluateAll((trs) => trs.map((tr) => [tr.getAttribute("data-child"), tr.querySelector("[data-nanos]")?.getAttribute("data-nanos")]));
    const { breakdowns, ownCost } = await client.getProjectCost({ projectId: "org", breakdownBy: [BreakdownDimension.CHILD] });
    expect(children).toEqual(breakdowns[0]!.entries.map((e) => [e.key, String(e.totalCostNanos)]));
    expect(children).toEqual([
      ["team-a", String(usd(8))],
      ["team-b", String(usd(1.25))],
      ["", String(usd(0.5))],
    ]);
    expect(await page.locator("#children-note").textContent()).toContain(`its own calls ${formatAmount(ownCost!.totalCostNanos)} USD`);
    // A project without children shows no such table.
    await page.click('tr[data-project="solo"] [data-field="spent"]');
    await expect.poll(() => page.locator("#children").isHidden()).toBe(true);
  });

  it("follows new calls: a parent's own calls move only with its own, its rolled-up spend with every level below", async () => {
    await client.recordCost({ projectId: "org", costNanos: usd(0.25), requestId: "o2" });
    await client.recordCost({ projectId: "chat", costNanos: usd(1), requestId: "c2" });
    await page.click("#refresh");
    await expect.poll(async () => (await rows())[0]![2], { timeout: 15_000 }).toBe(String(usd(11)));
    expect(await ownCells()).toEqual([
      ["org", String(usd(0.75))],
      ["team-a", "0"],
      ["search", null],
      ["chat", null],
      ["team-b", "0"],
      ["batch", null],
      ["solo", null],
    ]);
    expect((await rows()).find((r) => r[0] === "team-a")![2]).toBe(String(usd(9)));
    expect((await rows()).find((r) => r[0] === "chat")![2]).toBe(String(usd(4)));
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(13)));
  });

  it("shows a project whose parent is not listed at the top, says where it sits, and does not count it twice", async () => {
    await client.archiveProject({ projectId: "team-b" });
    await page.click("#refresh");
    await expect
      .poll(async () => (await rows()).map((r) => r[0]), { timeout: 15_000 })
      .toEqual(["org", "team-a", "search", "chat", "solo", "batch"]);
    const batch = page.locator('tr[data-project="batch"] [data-field="project"]');
    expect(await batch.getAttribute("data-depth")).toBe("0");
    expect(await batch.locator(".unlisted-parent").textContent()).toBe(
      " (parent team-b is not listed; it is under org, whose figures include this project's)",
    );
    // org's 11 already holds batch's 1.25 (through the archived team-b): 11 + 2 (solo).
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(13)));
    // org still has a listed child (team-a): its own calls stay shown.
    expect(await page.locator('tr[data-project="org"] [data-field="own"]').getAttribute("data-nanos")).toBe(String(usd(0.75)));
    await page.screenshot({ path: join(outputDir, "dashboard-tree-unlisted.png") });
    // Listing archived projects too puts it back under its parent.
    await page.check("#show-archived");
    await expect
      .poll(async () => (await rows()).map((r) => [r[0], r[1]]), { timeout: 15_000 })
      .toEqual([
        ["org", 0],
        ["team-a", 1],
        ["search", 2],
        ["chat", 2],
        ["team-b", 1],
        ["batch", 2],
        ["solo", 0],
      ]);
    expect(await page.locator(".unlisted-parent").count()).toBe(0);
    expect(await page.locator('#totals [data-total="spent-USD"]').getAttribute("data-nanos")).toBe(String(usd(13)));
    await page.uncheck("#show-archived");
    await client.unarchiveProject({ projectId: "team-b" });
  });
});
