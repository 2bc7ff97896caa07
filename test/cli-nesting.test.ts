// `tally budget set`'s nested-budget options: parsed exactly into the
// request (parent, agent caps, overrides, rate), usage errors for what is not
// a value, shown by `budget get`, stored by the server, and its refusals
// reported as exit 1 with their reason, changing nothing.
import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProjectBudgetSchema } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { runClientCommand } from "../src/cli-commands.ts";
import { nestingRequestFields, nestingRows, parseAgentOverride } from "../src/cli-nesting.ts";
import type { TallyServer } from "../src/server.ts";
import { clientsFor, startTestServer, usd, type BudgetClient } from "./helpers.ts";

describe("budget set nesting options", () => {
  it("parses amounts in units, none as no parent, and overrides with missing caps as 0", () => {
    expect(nestingRequestFields({ parent: "org/team-a", "agent-limit": "5", "agent-daily": "0.5", rate: "2.25" })).toEqual({
      parentId: "org/team-a",
      agentLimitNanos: usd(5),
      agentDailyLimitNanos: usd(0.5),
      agentMonthlyLimitNanos: undefined,
      agentRateLimitNanosPerMinute: undefined,
      agentLimitOverrides: undefined,
      rateLimitNanosPerMinute: usd(2.25),
    });
    expect(nestingRequestFields({ parent: "none" }).parentId).toBe("");
    expect(parseAgentOverride("looper=5,1")).toEqual({
      agentId: "looper",
      limitNanos: usd(5),
      dailyLimitNanos: usd(1),
      monthlyLimitNanos: 0n,
      rateLimitNanosPerMinute: 0n,
    });
    expect(parseAgentOverride("team:bot-7=0,0,0,0.1").rateLimitNanosPerMinute).toBe(usd(0.1));
    expect(nestingRequestFields({ "agent-override": ["none"] }).agentLimitOverrides).toEqual({ agentLimits: [] });
  });

  it("refuses what is not a value as a usage error naming the option", () => {
    expect(() => parseAgentOverride("looper")).toThrow(/AGENT=LIMIT/);
    expect(() => parseAgentOverride("looper=1,2,3,4,5")).toThrow(/AGENT=LIMIT/);
    expect(() => parseAgentOverride("looper=1.5x")).toThrow(/--agent-override looper limit "1.5x"/);
    expect(() => nestingRequestFields({ "agent-override": ["none", "a=1"] })).toThrow(/cannot be combined/);
    expect(() => nestingRequestFields({ rate: "-1" })).toThrow(/--rate "-1"/);
  });

  it("budget get shows parent, caps, overrides and rate only when set", () => {
    const b = create(ProjectBudgetSchema, {
      currency: "USD",
      parentId: "org",
      agentLimitNanos: usd(5),
      agentRateLimitNanosPerMinute: usd(0.5),
      agentLimitOverrides: [{ agentId: "batch" }, { agentId: "looper", limitNanos: usd(1), dailyLimitNanos: usd(0.25) }],
      rateLimitNanosPerMinute: usd(2),
    });
    expect(nestingRows(b)).toEqual([
      ["parent", "org"],
      ["each agent", "5 USD lifetime, 0.5 USD/min"],
      ["agent batch", "no cap"],
      ["agent looper", "1 USD lifetime, 0.25 USD/day"],
      ["rate limit", "2 USD/min"],
    ]);
    expect(nestingRows(create(ProjectBudgetSchema, { currency: "USD" }))).toEqual([]);
  });
});

describe("budget set nesting options against a server", () => {
  let server: TallyServer;
  let client: BudgetClient;
  beforeAll(async () => {
    server = await startTestServer();
    client = clientsFor(server.url)["connect+json http/1.1"]!;
  });
  afterAll(async () => {
    await server.close();
  });

  async function tally(...args: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runClientCommand(
      [...args, "--url", server.url],
      { TALLY_URL: "" },
      { out: (l) => out.push(l), err: (l) => err.push(l), progress: false },
    );
    return { code, stdout: out.join("\n"), stderr: err.join("\n") };
  }

  it("sends the options: a parent and caps are set and shown, a missing parent is exit 1 with its reason, and nothing changes", async () => {
    expect((await tally("budget", "set", "cli/p", "10")).code).toBe(0);
    const missing = await tally("budget", "set", "cli/p", "20", "--parent", "cli/org");
    expect([missing.code, missing.stderr]).toEqual([
      1,
      expect.stringContaining('NotFound: project "cli/p": parent project "cli/org" does not exist'),
    ]);
    expect((await tally("budget", "set", "cli/org", "100")).code).toBe(0);
    const parent = await tally("budget", "set", "cli/p", "10", "--parent", "cli/org");
    expect(parent.code, parent.stderr).toBe(0);
    expect(parent.stdout).toMatch(/^parent\s+cli\/org$/m);
    expect((await client.getProjectBudget({ projectId: "cli/p" })).budget?.parentId).toBe("cli/org");
    expect((await tally("budget", "set", "cli/p", "10", "--parent", "none")).code).toBe(0);
    const cap = await tally("budget", "set", "cli/p", "20", "--agent-limit", "2", "--agent-override", "looper=1", "--rate", "3");
    expect(cap.code, cap.stderr).toBe(0);
    expect((await client.getProjectBudget({ projectId: "cli/p" })).budget).toMatchObject({
      limitNanos: usd(20),
      agentLimitNanos: usd(2),
      rateLimitNanosPerMinute: usd(3),
      agentLimitOverrides: [{ agentId: "looper", limitNanos: usd(1) }],
    });
    // No parent, no caps: back to what every project starts as.
    const none = await tally(
      "budget",
      "set",
      "cli/p",
      "20",
      "--parent",
      "none",
      "--agent-limit",
      "0",
      "--rate",
      "0",
      "--agent-override",
      "none",
    );
    expect(none.code).toBe(0);
    expect(none.stdout).not.toMatch(/^parent/m);
    expect((await client.getProjectBudget({ projectId: "cli/p" })).budget).toMatchObject({
      agentLimitNanos: 0n,
      rateLimitNanosPerMinute: 0n,
      agentLimitOverrides: [],
    });
    expect((await client.getProjectBudget({ projectId: "cli/p" })).budget?.limitNanos).toBe(usd(20));
    // The cycle is refused by the server's rule, whatever is stored.
    const cycle = await tally("budget", "set", "cli/p", "20", "--parent", "cli/p");
    expect([cycle.code, cycle.stderr]).toEqual([
      1,
      expect.stringContaining('FailedPrecondition: project "cli/p" cannot have parent "cli/p"'),
    ]);
  });

  it("the options are budget set's only", async () => {
    const misuse = await tally("budget", "get", "cli/p", "--parent", "x");
    expect([misuse.code, misuse.stderr]).toEqual([2, expect.stringContaining("--parent is for budget set")]);
    const bad = await tally("budget", "set", "cli/p", "1", "--agent-override", "looper");
    expect(bad.code).toBe(2);
  });
});
