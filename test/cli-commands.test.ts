// `tally budget|cost|projects` as real processes (the bin, src/cli.ts, run
// through its shebang) against a real Tally on port 0: human output, --json for
// scripts, exit codes, and clear errors.
import { execFile } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAlerts, parseAmount, runClientCommand } from "../src/cli-commands.ts";
import type { TallyServer } from "../src/server.ts";
import { clientsFor, startTestServer, type BudgetClient } from "./helpers.ts";

const bin = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
// The shebang says `env node`: put this Node first, as an installed bin would find it.
const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, TALLY_URL: "" };

function tally(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr });
    });
  });
}

describe("tally client commands", () => {
  let server: TallyServer;
  let client: BudgetClient;
  beforeAll(async () => {
    server = await startTestServer();
    client = clientsFor(server.url)["grpc h2c"] as BudgetClient;
  });
  afterAll(async () => {
    await server.close();
  });

  it("budget set and get: exact amounts, currency, human and JSON output", async () => {
    const set = await tally("budget", "set", "cli/alpha", "12.50", "--currency", "EUR", "--url", server.url);
    expect(set).toMatchObject({ code: 0, stderr: "" });
    expect(set.stdout).toMatch(/^limit\s+12\.5 EUR$/m);
    expect((await client.getProjectBudget({ projectId: "cli/alpha" })).budget).toMatchObject({
      limitNanos: 12_500_000_000n,
      currency: "EUR",
      configured: true,
    });

    const get = await tally("budget", "get", "cli/alpha", "--json", "--url", server.url);
    expect(get.code).toBe(0);
    expect(JSON.parse(get.stdout)).toMatchObject({
      budget: { projectId: "cli/alpha", limitNanos: "12500000000", currency: "EUR", configured: true },
    });

    const never = await tally("budget", "get", "cli/never", "--url", server.url);
    expect(never.stdout).toMatch(/^limit\s+no limit$/m);
    expect(never.stdout).toMatch(/^configured\s+no \(never set\)$/m);
    // 0 disables enforcement.
    expect((await tally("budget", "set", "cli/alpha", "0", "--url", server.url)).code).toBe(0);
    expect((await client.getProjectBudget({ projectId: "cli/alpha" })).budget?.limitNanos).toBe(0n);
  });

  it("budget set --daily/--monthly/--time-zone/--alerts sets the windows, and options not given keep their values", async () => {
    const budgetOf = async (projectId: string) => (await client.getProjectBudget({ projectId })).budget;
    const set = await tally(
      "budget",
      "set",
      "cli/win",
      "100",
      "--daily",
      "5",
      "--monthly",
      "50.25",
      "--time-zone",
      "Europe/Berlin",
      "--alerts",
      "5000,8000",
      "--url",
      server.url,
    );
    expect(set).toMatchObject({ code: 0, stderr: "" });
    expect(set.stdout).toMatch(/^limit\s+100 USD$/m);
    expect(set.stdout).toMatch(/^daily limit\s+5 USD$/m);
    expect(set.stdout).toMatch(/^monthly limit\s+50\.25 USD$/m);
    expect(set.stdout).toMatch(/^time zone\s+Europe\/Berlin$/m);
    expect(set.stdout).toMatch(/^alerts at\s+50%, 80%$/m);
    const windows = {
      dailyLimitNanos: 5_000_000_000n,
      monthlyLimitNanos: 50_250_000_000n,
      timeZone: "Europe/Berlin",
      alertThresholdsBps: [5_000, 8_000],
    };
    expect(await budgetOf("cli/win")).toMatchObject({ limitNanos: 100_000_000_000n, currency: "USD", ...windows });

    // Only the lifetime limit given: the windows, zone and alerts set before stay.
    const lifetime = await tally("budget", "set", "cli/win", "120", "--url", server.url);
    expect(lifetime.code).toBe(0);
    expect(lifetime.stdout).toMatch(/^daily limit\s+5 USD$/m);
    expect(await budgetOf("cli/win")).toMatchObject({ limitNanos: 120_000_000_000n, ...windows });

    // 0 removes one window limit, "none" removes the alerts; the rest stays.
    const removed = await tally("budget", "set", "cli/win", "120", "--daily", "0", "--alerts", "none", "--json", "--url", server.url);
    expect(removed.code).toBe(0);
    expect(JSON.parse(removed.stdout).budget).toMatchObject({
      dailyLimitNanos: "0",
      monthlyLimitNanos: "50250000000",
      timeZone: "Europe/Berlin",
      alertThresholdsBps: [],
    });
    expect(await budgetOf("cli/win")).toMatchObject({
      dailyLimitNanos: 0n,
      monthlyLimitNanos: 50_250_000_000n,
      timeZone: "Europe/Berlin",
      alertThresholdsBps: [],
    });

    // The server sorts and merges thresholds and canonicalises the zone name.
    expect(
      (await tally("budget", "set", "cli/win", "120", "--alerts", "9000, 2500,9000", "--time-zone", "utc", "--url", server.url)).code,
    ).toBe(0);
    expect(await budgetOf("cli/win")).toMatchObject({ alertThresholdsBps: [2_500, 9_000], timeZone: "UTC" });

    // A zone set without window limits is shown: it also decides what "today" is in `cost`.
    const zoneOnly = await tally("budget", "set", "cli/zone", "10", "--time-zone", "Asia/Tokyo", "--url", server.url);
    expect(zoneOnly.stdout).toMatch(/^time zone\s+Asia\/Tokyo$/m);
    expect(zoneOnly.stdout).not.toMatch(/daily limit|monthly limit|alerts at/);
  });

  it("budget set passes window values to the server, whose refusal is exit 1 with its reason, changing nothing", async () => {
    await client.setProjectBudget({
      projectId: "cli/checked",
      limitNanos: 9_000_000_000n,
      dailyLimitNanos: 1_000_000_000n,
      timeZone: "Europe/Paris",
      alertThresholds: { basisPoints: [5_000] },
    });
    const before = (await client.getProjectBudget({ projectId: "cli/checked" })).budget;
    for (const [flags, reason] of [
      [
        ["--time-zone", "Mars/Olympus_Mons"],
        /^tally: Tally refused the call: InvalidArgument: time_zone "Mars\/Olympus_Mons" is not an IANA time zone name/,
      ],
      [
        ["--alerts", "5000,20000"],
        /^tally: Tally refused the call: InvalidArgument: alert_thresholds\.basis_points 20000 is outside 1\.\.10000 basis points/,
      ],
      [["--alerts", "0"], /InvalidArgument: alert_thresholds\.basis_points 0 is outside/],
      [
        ["--alerts", "1,2,3,4,5,6,7,8,9,10,11"],
        /InvalidArgument: alert_thresholds\.basis_points has 11 distinct thresholds; the maximum is 10/,
      ],
    ] as const) {
      const res = await tally("budget", "set", "cli/checked", "1", ...flags, "--daily", "2", "--url", server.url);
      expect(res.code, flags.join(" ")).toBe(1);
      expect(res.stderr, flags.join(" ")).toMatch(reason);
    }
    expect((await client.getProjectBudget({ projectId: "cli/checked" })).budget).toEqual(before);
  });

  it("cost shows exactly what GetProjectCost returns", async () => {
    await client.setProjectBudget({ projectId: "cli/beta", limitNanos: 10_000_000_000n });
    await client.recordCost({ projectId: "cli/beta", costNanos: 1_234_567_891n, inputTokens: 1200n, outputTokens: 34n, requestId: "a" });
    const human = await tally("cost", "cli/beta", "--url", server.url);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^spent\s+1\.234567891 USD$/m);
    expect(human.stdout).toMatch(/^remaining\s+8\.765432109 USD$/m);
    expect(human.stdout).toMatch(/^input tokens\s+1200$/m);
    expect(human.stdout).toMatch(/^calls\s+1$/m);
    const json = JSON.parse((await tally("cost", "cli/beta", "--json", "--url", server.url)).stdout);
    const { projectCost } = await client.getProjectCost({ projectId: "cli/beta" });
    expect(json.projectCost).toMatchObject({
      projectId: "cli/beta",
      totalCostNanos: String(projectCost!.totalCostNanos),
      inputTokens: "1200",
      outputTokens: "34",
      recordCount: "1",
    });
  });

  it("cost shows active holds, today's and this month's spend, and the window limits and alerts that are set", async () => {
    await client.setProjectBudget({
      projectId: "cli/windows",
      limitNanos: 100_000_000_000n,
      dailyLimitNanos: 5_000_000_000n,
      monthlyLimitNanos: 50_000_000_000n,
      timeZone: "Europe/Paris",
      alertThresholds: { basisPoints: [5_000, 8_000, 10_000] },
    });
    await client.recordCost({ projectId: "cli/windows", costNanos: 1_500_000_000n, requestId: "a" });
    const hold = await client.checkBudget({ projectId: "cli/windows", estimatedCostNanos: 2_000_000_000n, reserve: true });
    await client.checkBudget({ projectId: "cli/windows", estimatedCostNanos: 250_000_000n, reserve: true });
    expect(hold.allowed).toBe(true);
    const res = await client.getProjectCost({ projectId: "cli/windows" });
    const human = await tally("cost", "cli/windows", "--url", server.url);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^spent\s+1\.5 USD$/m);
    expect(human.stdout).toMatch(/^reserved\s+2\.25 USD in 2 active holds$/m);
    // Remaining after the holds, as CheckBudget counts it: 100 - 1.5 - 2.25.
    expect(human.stdout).toMatch(/^remaining\s+96\.25 USD$/m);
    expect(human.stdout).toMatch(new RegExp(`^spent today\\s+1\\.5 USD \\(${res.currentDay?.period}, Europe/Paris\\)$`, "m"));
    expect(human.stdout).toMatch(/^daily limit\s+5 USD \(1\.25 USD remaining\)$/m);
    expect(human.stdout).toMatch(new RegExp(`^spent this month\\s+1\\.5 USD \\(${res.currentMonth?.period}, Europe/Paris\\)$`, "m"));
    expect(human.stdout).toMatch(/^monthly limit\s+50 USD \(46\.25 USD remaining\)$/m);
    expect(human.stdout).toMatch(/^alerts at\s+50%, 80%, 100%$/m);
    // A project without window limits shows no window limit lines.
    const plain = await tally("cost", "cli/beta", "--url", server.url);
    expect(plain.stdout).toMatch(/^reserved\s+0 USD$/m);
    expect(plain.stdout).not.toMatch(/daily limit|monthly limit|alerts at/);
    // --json is the API's GetProjectCostResponse, holds and windows included.
    const json = JSON.parse((await tally("cost", "cli/windows", "--json", "--url", server.url)).stdout);
    expect(json.projectCost).toMatchObject({ totalCostNanos: "1500000000", reservedNanos: "2250000000", activeHoldCount: "2" });
    expect(json.currentDay).toMatchObject({
      window: "BUDGET_WINDOW_DAY",
      period: res.currentDay?.period,
      timeZone: "Europe/Paris",
      totalCostNanos: "1500000000",
    });
    expect(json.currentMonth).toMatchObject({ period: res.currentMonth?.period, totalCostNanos: "1500000000" });
    const budget = await tally("budget", "get", "cli/windows", "--url", server.url);
    expect(budget.stdout).toMatch(/^daily limit\s+5 USD$/m);
    expect(budget.stdout).toMatch(/^monthly limit\s+50 USD$/m);
    expect(budget.stdout).toMatch(/^time zone\s+Europe\/Paris$/m);
    expect(budget.stdout).toMatch(/^alerts at\s+50%, 80%, 100%$/m);
  });

  it("projects lists by spend or id, pages through the API, and says when more exist", async () => {
    for (let i = 0; i < 5; i++)
      await client.recordCost({ projectId: `cli/list-${i}`, costNanos: BigInt(1_000_000_000 * (i + 100)), requestId: "a" });
    const top = await tally("projects", "--limit", "2", "--url", server.url);
    expect(top.code).toBe(0);
    const lines = top.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^PROJECT\s+SPENT\s+LIMITS \(binding first\)\s+REACHED\s+CALLS$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(["cli/list-4", "cli/list-3"]);
    expect(lines[1]).toMatch(/104 USD\s+no limit\s+-\s+1$/);
    expect(top.stderr).toMatch(/first 2 projects; more exist/);
    const all = JSON.parse((await tally("projects", "--order", "id", "--limit", "1000", "--json", "--url", server.url)).stdout);
    expect(all.more).toBe(false);
    const ids = all.projects.map((p: { projectId: string }) => p.projectId);
    expect(ids).toEqual([...ids].sort());
    expect(ids).toEqual(expect.arrayContaining(["cli/beta", "cli/list-0", "cli/list-4"]));
    expect(all.projects.find((p: { projectId: string }) => p.projectId === "cli/beta")).toMatchObject({
      limitUsedBasisPoints: "1234",
      budget: { limitNanos: "10000000000" },
    });
  });

  it("projects shows every set window (spent/limit and %), the binding one first, and the alerts reached; budget set warns of a limit already used up", async () => {
    await client.recordCost({ projectId: "cli/blocked-today", costNanos: 3_000_000_000n, requestId: "a" });
    const set = await tally(
      "budget",
      "set",
      "cli/blocked-today",
      "100",
      "--daily",
      "2",
      "--monthly",
      "50",
      "--alerts",
      "5000",
      "--url",
      server.url,
    );
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/^daily limit\s+2 USD$/m); // stored all the same
    expect(set.stderr).toMatch(
      /^warning: the daily limit 2 USD is at or below today's \(\d{4}-\d\d-\d\d\) spend 3 USD: CheckBudget refuses until the next day$/m,
    );
    expect(set.stderr).not.toMatch(/monthly|lifetime/);
    const quiet = await tally("budget", "set", "cli/blocked-today", "100", "--daily", "5", "--url", server.url);
    expect([quiet.code, quiet.stderr]).toEqual([0, ""]);
    await tally("budget", "set", "cli/blocked-today", "100", "--daily", "2", "--url", server.url);

    const listed = await tally("projects", "--order", "id", "--limit", "1000", "--url", server.url);
    expect(listed.code, listed.stderr).toBe(0);
    const row = listed.stdout.split("\n").find((line) => line.startsWith("cli/blocked-today "));
    // Blocked for today although only 3 % of the lifetime limit is used: the day leads.
    expect(row).toMatch(
      /^cli\/blocked-today\s+3 USD\s+day 3\/2 USD 150\.00%, month 3\/50 USD 6\.00%, lifetime 3\/100 USD 3\.00%\s+day 100%\s+1$/,
    );
  });

  it("projects archive hides a project (listed with --archived) and unarchive brings it back; projects delete removes one with no records since --no-records-since, and refuses one in use", async () => {
    await client.recordCost({ projectId: "cli/example-old", costNanos: 1_500_000_000n, requestId: "a" });
    const archived = await tally("projects", "archive", "cli/example-old", "--url", server.url);
    expect(archived.code, archived.stderr).toBe(0);
    expect(archived.stdout).toMatch(
      /^archived cli\/example-old \(since \d{4}-\d\d-\d\dT[\d:.]+Z\): hidden from listings, writes refused, totals kept$/m,
    );
    const ids = async (...args: string[]) =>
      JSON.parse((await tally("projects", "--order", "id", "--limit", "1000", "--json", "--url", server.url, ...args)).stdout).projects.map(
        (p: { projectId: string }) => p.projectId,
      );
    expect(await ids()).not.toContain("cli/example-old");
    expect(await ids("--archived")).toContain("cli/example-old");
    const table = await tally("projects", "--order", "id", "--limit", "1000", "--archived", "--url", server.url);
    expect(table.stdout).toMatch(/^cli\/example-old \(archived\)\s+1\.5 USD\s+no limit\s+-\s+1$/m);
    const write = await tally("budget", "set", "cli/example-old", "5", "--url", server.url);
    expect(write.code).toBe(1);
    expect(write.stderr).toMatch(/FailedPrecondition: project "cli\/example-old" is archived/);
    expect((await tally("projects", "unarchive", "cli/example-old", "--url", server.url)).stdout).toBe(
      "unarchived cli/example-old: listed and writable again\n",
    );
    expect(await ids()).toContain("cli/example-old");

    // In use: a cost in the last hour.
    const inUse = await tally("projects", "delete", "cli/example-old", "--no-records-since", "1h", "--url", server.url);
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toMatch(/FailedPrecondition: project "cli\/example-old" recorded a cost at .*: nothing was deleted/);
    const future = new Date(Date.now() + 60_000).toISOString();
    const deleted = await tally("projects", "delete", "cli/example-old", "--no-records-since", future, "--url", server.url);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(deleted.stdout).toBe("deleted cli/example-old: it had spent 1.5 over 1 calls; 1 cost records removed\n");
    expect(await ids("--archived")).not.toContain("cli/example-old");
    // Usage errors: no guard, a bad guard, a guard on another command.
    for (const args of [
      ["projects", "delete", "p"],
      ["projects", "delete", "p", "--no-records-since", "yesterday"],
      ["projects", "archive", "p", "--no-records-since", "1d"],
      ["projects", "--no-records-since", "1d"],
      ["projects", "archive"],
    ]) {
      expect((await tally(...args, "--url", server.url)).code, args.join(" ")).toBe(2);
    }
  });

  it("fails with exit 1 and the server's reason on a refused call", async () => {
    const bad = await tally("cost", "not a valid id", "--url", server.url);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^tally: Tally refused the call: InvalidArgument: project_id "not a valid id" has characters outside/);
    await client.recordCost({ projectId: "cli/locked", costNanos: 1n, requestId: "a" });
    const locked = await tally("budget", "set", "cli/locked", "5", "--currency", "EUR", "--url", server.url);
    expect(locked.code).toBe(1);
    expect(locked.stderr).toMatch(/FailedPrecondition: .*cannot change to EUR/);
  });

  it("fails with exit 1 and says where it looked when no Tally answers", async () => {
    const idle = await startTestServer();
    const url = idle.url;
    await idle.close(); // nothing listens on this port now
    const res = await tally("cost", "x", "--url", url);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`cannot reach Tally at ${url}`);
    expect(res.stderr).toMatch(/Set --url or TALLY_URL/);
  });

  it("rejects bad usage with exit 2 and the usage text", async () => {
    const res = await tally("budget", "set", "p", "1.5x", "--url", server.url);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^tally: amount "1.5x" must be a number/);
    expect(res.stderr).toMatch(/usage:/);
    // The rest in-process (same code path, without a process per case).
    for (const args of [
      ["budget"],
      ["budget", "set", "p"],
      ["budget", "set", "p", "-1"],
      ["budget", "get", "p", "--currency", "EUR"],
      ["cost"],
      ["cost", "a", "b"],
      ["projects", "x"],
      ["projects", "--order", "name"],
      ["projects", "--limit", "0"],
      ["cost", "p", "--bogus"],
      ["cost", "p", "--currency", "EUR"],
      ["projects", "--currency", "EUR"],
      ["budget", "get", "p", "--limit", "5"],
      ["budget", "set", "p", "1", "--order", "id"],
      ["cost", "p", "--limit", "5"],
      ["nope"],
      ["budget", "set", "p", "1", "--daily", "five"],
      ["budget", "set", "p", "1", "--monthly", "-1"],
      ["budget", "set", "p", "1", "--monthly", "1.0000000001"],
      ["budget", "set", "p", "1", "--daily"],
      ["budget", "set", "p", "1", "--alerts", ""],
      ["budget", "set", "p", "1", "--alerts", "50%"],
      ["budget", "set", "p", "1", "--alerts", "5000,,8000"],
      ["budget", "set", "p", "1", "--alerts", "-5000"],
      ["budget", "set", "p", "1", "--alerts", "3000000000"],
      ["budget", "get", "p", "--daily", "5"],
      ["cost", "p", "--alerts", "5000"],
      ["projects", "--time-zone", "UTC"],
      ["budget", "get", "p", "--monthly", "5"],
    ]) {
      const err: string[] = [];
      const code = await runClientCommand(
        [...args, "--url", server.url],
        {},
        { out: () => undefined, err: (line) => err.push(line), progress: false },
      );
      expect(code, args.join(" ")).toBe(2);
      expect(err.join("\n")).toMatch(/usage:/);
    }
    const daily: string[] = [];
    expect(
      await runClientCommand(
        ["budget", "set", "p", "1", "--daily", "five", "--url", server.url],
        {},
        { out: () => undefined, err: (line) => daily.push(line), progress: false },
      ),
    ).toBe(2);
    expect(daily.join("\n")).toMatch(/^tally: --daily "five" must be a number of currency units/);
    // None of these reached the server.
    expect((await client.getProjectBudget({ projectId: "p" })).budget?.configured).toBe(false);
    // An option another command reads is named, not ignored.
    const stray: string[] = [];
    expect(
      await runClientCommand(
        ["cost", "p", "--currency", "EUR", "--url", server.url],
        {},
        { out: () => undefined, err: (line) => stray.push(line), progress: false },
      ),
    ).toBe(2);
    expect(stray.join("\n")).toMatch(/^tally: --currency is for budget set\n/);
    const err: string[] = [];
    expect(
      await runClientCommand(
        ["cost", "p"],
        { TALLY_URL: "ftp://x" },
        { out: () => undefined, err: (line) => err.push(line), progress: false },
      ),
    ).toBe(2);
    expect(err.join("\n")).toMatch(/must be http\(s\):\/\/host:port/);
  });

  it("parses alert thresholds as basis points, leaving their range to the server", () => {
    expect(parseAlerts("5000,8000")).toEqual([5_000, 8_000]);
    expect(parseAlerts(" 8000 , 5000 ")).toEqual([8_000, 5_000]);
    expect(parseAlerts("none")).toEqual([]);
    expect(parseAlerts("20000")).toEqual([20_000]);
    for (const bad of ["", ",", "50%", "5000;8000", "1.5", "-1", "2147483648", "None"])
      expect(() => parseAlerts(bad), bad).toThrow(/must be basis points separated by commas/);
  });

  it("parses amounts exactly, never through a float", () => {
    expect(parseAmount("0")).toBe(0n);
    expect(parseAmount("12.5")).toBe(12_500_000_000n);
    expect(parseAmount("0.000000001")).toBe(1n);
    expect(parseAmount("9223372036.854775807")).toBe((1n << 63n) - 1n);
    expect(() => parseAmount("9223372036.854775808")).toThrow(/beyond the largest amount/);
    expect(() => parseAmount("1.0000000001")).toThrow(/up to 9 decimals/);
    expect(() => parseAmount("1e3")).toThrow();
  });
});
