// Holds, calendar windows, alert thresholds, breakdowns, ListCostRecords and
// WatchBudget: one behaviour suite at three depths (the handler class, the
// routes in memory, a real server on port 0 through every protocol), each with
// a hand-moved clock so windows roll over and holds expire without sleeping.
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BreakdownDimension,
  BudgetDecisionReason,
  BudgetEventKind,
  BudgetService,
  BudgetWindow,
  type WatchBudgetResponse,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { BudgetServiceHandler } from "../../src/api/budget-service.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import type { TallyServer } from "../../src/server.ts";
import type { InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { classClient, memoryLedger } from "./depths.ts";
import { clientsFor, startTestServer, TestClock, within, type BudgetClient } from "../helpers.ts";

async function errorOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

let unique = 0;
const newProject = (label: string) => `hw${++unique}-${label}`;
const minuteMs = 60_000;

/** Reads a watch stream one event at a time, with a bound on waiting. */
function reader(stream: AsyncIterable<WatchBudgetResponse>) {
  const iterator = stream[Symbol.asyncIterator]();
  return {
    async next(): Promise<WatchBudgetResponse> {
      const result = await within(iterator.next(), "no watch event");
      if (result.done) throw new Error("watch stream ended");
      return result.value;
    },
    close: () => iterator.return?.(),
  };
}

function behaviour(name: string, getClient: () => BudgetClient, getClock: () => TestClock) {
  describe(name, () => {
    it("reserves the estimate atomically and settles it below the estimate in RecordCost", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("settle-below");
      await c.setProjectBudget({ projectId: project, limitNanos: 10n });
      const held = await c.checkBudget({ projectId: project, estimatedCostNanos: 4n, reserve: true });
      expect(held).toMatchObject({
        allowed: true,
        reason: BudgetDecisionReason.WITHIN_BUDGET,
        reservedNanos: 0n,
        remainingNanos: 10n,
        decidedBy: BudgetWindow.LIFETIME,
      });
      expect(held.holdId).toMatch(/^hold-/);
      expect(timestampDate(held.holdExpiresAt!).getTime()).toBe(clock.ms + 5 * minuteMs);
      // The hold counts against every later decision.
      const probe = await c.checkBudget({ projectId: project, estimatedCostNanos: 7n });
      expect(probe).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.EXCEEDS_REMAINING,
        reservedNanos: 4n,
        remainingNanos: 6n,
        holdId: "",
      });
      const cost = await c.getProjectCost({ projectId: project });
      expect(cost.projectCost).toMatchObject({ totalCostNanos: 0n, reservedNanos: 4n, activeHoldCount: 1n });

      const settled = await c.recordCost({ projectId: project, costNanos: 3n, requestId: "r1", holdId: held.holdId });
      expect(settled).toMatchObject({ duplicate: false, settledHoldNanos: 4n });
      expect(settled.projectCost?.totalCostNanos).toBe(3n);
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({
        totalCostNanos: 3n,
        reservedNanos: 0n,
        activeHoldCount: 0n,
      });
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 7n })).toMatchObject({ allowed: true, remainingNanos: 7n });
    });

    it("records the actual cost when it is above the estimate (reality wins)", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("settle-above");
      await c.setProjectBudget({ projectId: project, limitNanos: 10n });
      const held = await c.checkBudget({ projectId: project, estimatedCostNanos: 4n, reserve: true });
      const settled = await c.recordCost({ projectId: project, costNanos: 12n, requestId: "r1", holdId: held.holdId });
      expect(settled).toMatchObject({ settledHoldNanos: 4n, projectCost: { totalCostNanos: 12n } });
      expect(await c.checkBudget({ projectId: project })).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.EXHAUSTED,
        remainingNanos: -2n,
        reservedNanos: 0n,
      });
    });

    it("refuses settling an unknown or settled hold with FAILED_PRECONDITION naming it, and keeps a retry idempotent", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("settle-twice");
      const held = await c.checkBudget({ projectId: project, estimatedCostNanos: 5n, reserve: true });
      const first = await c.recordCost({ projectId: project, costNanos: 5n, requestId: "r1", holdId: held.holdId });
      // A retry of the same request is the same answer, not an error.
      const retry = await c.recordCost({ projectId: project, costNanos: 5n, requestId: "r1", holdId: held.holdId });
      expect(retry.duplicate).toBe(true);
      expect(retry.projectCost?.totalCostNanos).toBe(first.projectCost?.totalCostNanos);
      // Another request settling the same hold again: refused, nothing recorded.
      const twice = await errorOf(c.recordCost({ projectId: project, costNanos: 5n, requestId: "r2", holdId: held.holdId }));
      expect(twice.code).toBe(Code.FailedPrecondition);
      expect(twice.rawMessage).toContain(held.holdId);
      const unknown = await errorOf(c.recordCost({ projectId: project, costNanos: 1n, requestId: "r3", holdId: "hold-none" }));
      expect(unknown.code).toBe(Code.FailedPrecondition);
      expect(unknown.rawMessage).toContain("hold-none");
      // The same request_id with another hold is a different payload.
      const other = await c.checkBudget({ projectId: project, estimatedCostNanos: 1n, reserve: true });
      expect((await errorOf(c.recordCost({ projectId: project, costNanos: 5n, requestId: "r1", holdId: other.holdId }))).code).toBe(
        Code.AlreadyExists,
      );
      // A hold of another project cannot be settled here.
      const elsewhere = newProject("elsewhere");
      expect((await errorOf(c.recordCost({ projectId: elsewhere, costNanos: 1n, requestId: "x", holdId: other.holdId }))).code).toBe(
        Code.FailedPrecondition,
      );
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({
        totalCostNanos: 5n,
        recordCount: 1n,
        reservedNanos: 1n,
        activeHoldCount: 1n,
      });
    });

    it("releases a hold without spending; releasing again is NOT_FOUND", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("release");
      await c.setProjectBudget({ projectId: project, limitNanos: 10n });
      const held = await c.checkBudget({ projectId: project, estimatedCostNanos: 10n, reserve: true });
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 1n })).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.FULLY_RESERVED,
        remainingNanos: 0n,
      });
      // Another project cannot release it (nor learn that it exists).
      const other = await errorOf(c.releaseHold({ projectId: newProject("other"), holdId: held.holdId }));
      expect(other.code).toBe(Code.NotFound);
      expect(other.rawMessage).toMatch(/no such hold in this project/);
      expect(await c.releaseHold({ projectId: project, holdId: held.holdId })).toMatchObject({
        holdId: held.holdId,
        projectId: project,
        releasedNanos: 10n,
      });
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 10n })).toMatchObject({ allowed: true, reservedNanos: 0n });
      const again = await errorOf(c.releaseHold({ projectId: project, holdId: held.holdId }));
      expect(again.code).toBe(Code.NotFound);
      expect(again.rawMessage).toContain(held.holdId);
      expect((await errorOf(c.recordCost({ projectId: project, costNanos: 1n, requestId: "r", holdId: held.holdId }))).code).toBe(
        Code.FailedPrecondition,
      );
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: 0n, recordCount: 0n });
    });

    it("stops counting an expired hold at once, before any sweep, and refuses to settle or release it", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("expiry");
      await c.setProjectBudget({ projectId: project, limitNanos: 10n });
      const held = await c.checkBudget({ projectId: project, estimatedCostNanos: 10n, reserve: true, holdTtl: { seconds: 30n } });
      expect(timestampDate(held.holdExpiresAt!).getTime()).toBe(clock.ms + 30_000);
      clock.advance(29_999);
      expect((await c.checkBudget({ projectId: project, estimatedCostNanos: 1n })).reason).toBe(BudgetDecisionReason.FULLY_RESERVED);
      clock.advance(1); // expires_at is exclusive: the hold is gone at exactly its expiry
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 10n })).toMatchObject({ allowed: true, reservedNanos: 0n });
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ reservedNanos: 0n, activeHoldCount: 0n });
      const settle = await errorOf(c.recordCost({ projectId: project, costNanos: 1n, requestId: "late", holdId: held.holdId }));
      expect(settle.code).toBe(Code.FailedPrecondition);
      expect(settle.rawMessage).toMatch(/expired at 2026-11-27T12:00:30.000Z/);
      expect((await errorOf(c.releaseHold({ projectId: project, holdId: held.holdId }))).code).toBe(Code.NotFound);
      // A new reservation can take the whole limit again.
      expect((await c.checkBudget({ projectId: project, estimatedCostNanos: 10n, reserve: true })).allowed).toBe(true);
    });

    it("makes a reservation with request_id safe to retry: one hold, the first answer, clear errors after", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("reserve-key");
      await c.setProjectBudget({ projectId: project, limitNanos: 10n });
      const ask = { projectId: project, estimatedCostNanos: 6n, reserve: true, holdTtl: { seconds: 60n }, requestId: "call-1" };
      const first = await c.checkBudget(ask);
      expect(first).toMatchObject({ allowed: true, remainingNanos: 10n, reservedNanos: 0n, duplicate: false });
      clock.advance(1_000);
      const retry = await c.checkBudget(ask);
      expect(retry).toMatchObject({
        allowed: true,
        holdId: first.holdId,
        holdExpiresAt: first.holdExpiresAt,
        remainingNanos: 10n,
        reservedNanos: 0n,
        duplicate: true,
      });
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ reservedNanos: 6n, activeHoldCount: 1n });
      // Without the key the same ask is a second reservation, refused: 6 + 6 > 10.
      expect((await c.checkBudget({ ...ask, requestId: "" })).allowed).toBe(false);

      const conflict = await errorOf(c.checkBudget({ ...ask, estimatedCostNanos: 7n }));
      expect(conflict.code).toBe(Code.AlreadyExists);
      expect(conflict.rawMessage).toContain('request_id "call-1" was already reserved with a different payload');

      // The same id may name the RecordCost that settles the hold (its own namespace).
      await c.recordCost({ projectId: project, costNanos: 5n, requestId: "call-1", holdId: first.holdId });
      const ended = await errorOf(c.checkBudget(ask));
      expect(ended.code).toBe(Code.FailedPrecondition);
      expect(ended.rawMessage).toContain(
        `already reserved hold "${first.holdId}", which is no longer active (it was settled by RecordCost or released)`,
      );
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({
        totalCostNanos: 5n,
        reservedNanos: 0n,
        activeHoldCount: 0n,
      });

      // A refused reservation keeps no key: its retry is decided afresh.
      const refused = { ...ask, estimatedCostNanos: 9n, requestId: "call-2" };
      expect((await c.checkBudget(refused)).allowed).toBe(false);
      await c.setProjectBudget({ projectId: project, limitNanos: 20n });
      expect((await c.checkBudget(refused)).allowed).toBe(true);

      const code = async (call: Promise<unknown>) => (await errorOf(call)).code;
      expect(await code(c.checkBudget({ projectId: project, requestId: "call-3" }))).toBe(Code.InvalidArgument);
      expect(await code(c.checkBudget({ ...ask, requestId: "bad id" }))).toBe(Code.InvalidArgument);
      expect(await code(c.checkBudget({ ...ask, requestId: "x".repeat(129) }))).toBe(Code.InvalidArgument);
    });

    it("places a hold even without a limit, and refuses nothing", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("nolimit-hold");
      const held = await c.checkBudget({ projectId: project, estimatedCostNanos: 1_000n, reserve: true });
      expect(held).toMatchObject({ allowed: true, reason: BudgetDecisionReason.NO_LIMIT, decidedBy: BudgetWindow.UNSPECIFIED, limits: [] });
      expect(held.holdId).not.toBe("");
      expect((await c.getProjectCost({ projectId: project })).projectCost?.reservedNanos).toBe(1_000n);
    });

    it("validates hold fields", async () => {
      const c = getClient();
      const project = newProject("hold-invalid");
      const code = async (call: Promise<unknown>) => (await errorOf(call)).code;
      expect(await code(c.checkBudget({ projectId: project, holdTtl: { seconds: 60n } }))).toBe(Code.InvalidArgument);
      expect(await code(c.checkBudget({ projectId: project, reserve: true, holdTtl: { seconds: 0n } }))).toBe(Code.InvalidArgument);
      expect(await code(c.checkBudget({ projectId: project, reserve: true, holdTtl: { seconds: 24n * 3600n + 1n } }))).toBe(
        Code.InvalidArgument,
      );
      expect(await code(c.checkBudget({ projectId: project, reserve: true, holdTtl: { seconds: -5n } }))).toBe(Code.InvalidArgument);
      expect(await code(c.releaseHold({ projectId: project, holdId: "" }))).toBe(Code.InvalidArgument);
      expect(await code(c.releaseHold({ projectId: project, holdId: "bad id" }))).toBe(Code.InvalidArgument);
      expect(await code(c.releaseHold({ holdId: "hold-1" }))).toBe(Code.InvalidArgument);
      expect(await code(c.recordCost({ projectId: project, costNanos: 1n, holdId: "h#1" }))).toBe(Code.InvalidArgument);
      expect((await c.checkBudget({ projectId: project, reserve: true, holdTtl: { seconds: 24n * 3600n } })).allowed).toBe(true);
    });

    it("rolls the daily window over at local midnight and the monthly window at local month end", async () => {
      const [c, clock] = [getClient(), getClock()];
      const project = newProject("windows");
      const set = await c.setProjectBudget({
        projectId: project,
        dailyLimitNanos: 10n,
        monthlyLimitNanos: 25n,
        timeZone: "America/New_York",
      });
      expect(set.budget).toMatchObject({ limitNanos: 0n, dailyLimitNanos: 10n, monthlyLimitNanos: 25n, timeZone: "America/New_York" });
      // 18:00 and 20:00 in New York are on two UTC dates but the same local day.
      clock.set("2026-11-29T23:00:00Z");
      await c.recordCost({ projectId: project, costNanos: 4n, requestId: "a" });
      clock.set("2026-11-30T01:00:00Z");
      await c.recordCost({ projectId: project, costNanos: 6n, requestId: "b" });
      const exhausted = await c.checkBudget({ projectId: project, estimatedCostNanos: 1n });
      expect(exhausted).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.EXHAUSTED,
        decidedBy: BudgetWindow.DAY,
        limitNanos: 0n,
        spentNanos: 10n,
      });
      expect(exhausted.limits.map((l) => [l.window, l.period, l.spentNanos, l.allowed])).toEqual([
        [BudgetWindow.DAY, "2026-11-29", 10n, false],
        [BudgetWindow.MONTH, "2026-11", 10n, true],
      ]);
      const today = await c.getProjectCost({ projectId: project });
      expect(today.currentDay).toMatchObject({
        window: BudgetWindow.DAY,
        period: "2026-11-29",
        timeZone: "America/New_York",
        totalCostNanos: 10n,
        recordCount: 2n,
      });
      expect(today.currentMonth).toMatchObject({ window: BudgetWindow.MONTH, period: "2026-11", totalCostNanos: 10n });

      // One millisecond past local midnight: a new day, the same month.
      clock.set("2026-11-30T05:00:00.001Z");
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 10n })).toMatchObject({
        allowed: true,
        decidedBy: BudgetWindow.DAY,
      });
      await c.recordCost({ projectId: project, costNanos: 10n, requestId: "c" });
      clock.advance(60 * minuteMs);
      // Day exhausted again, month has 5 left: the refusing limit with the least remaining decides.
      const both = await c.checkBudget({ projectId: project, estimatedCostNanos: 6n });
      expect(both).toMatchObject({ allowed: false, decidedBy: BudgetWindow.DAY, reason: BudgetDecisionReason.EXHAUSTED });
      expect(both.limits.find((l) => l.window === BudgetWindow.MONTH)).toMatchObject({
        spentNanos: 20n,
        remainingNanos: 5n,
        allowed: false,
        reason: BudgetDecisionReason.EXCEEDS_REMAINING,
      });

      // Local month end: 2026-12-01 00:00 in New York is 05:00 UTC.
      clock.set("2026-12-01T04:59:59.999Z");
      expect((await c.getProjectCost({ projectId: project })).currentMonth).toMatchObject({ period: "2026-11", totalCostNanos: 20n });
      clock.set("2026-12-01T05:00:00Z");
      const december = await c.getProjectCost({ projectId: project });
      expect(december.currentDay).toMatchObject({ period: "2026-12-01", totalCostNanos: 0n, recordCount: 0n });
      expect(december.currentMonth).toMatchObject({ period: "2026-12", totalCostNanos: 0n });
      expect(december.projectCost?.totalCostNanos).toBe(20n);
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 10n })).toMatchObject({ allowed: true });
    });

    it("enforces every set limit, names the one that decided, and counts holds against each", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("which-limit");
      await c.setProjectBudget({ projectId: project, limitNanos: 100n, dailyLimitNanos: 30n, monthlyLimitNanos: 0n });
      await c.recordCost({ projectId: project, costNanos: 20n, requestId: "a" });
      const allowed = await c.checkBudget({ projectId: project, estimatedCostNanos: 5n });
      // Allowed: the day (10 left) binds before the lifetime limit (80 left).
      expect(allowed).toMatchObject({ allowed: true, decidedBy: BudgetWindow.DAY, limitNanos: 100n, remainingNanos: 80n });
      await c.checkBudget({ projectId: project, estimatedCostNanos: 8n, reserve: true });
      const refused = await c.checkBudget({ projectId: project, estimatedCostNanos: 3n });
      expect(refused).toMatchObject({
        allowed: false,
        decidedBy: BudgetWindow.DAY,
        reason: BudgetDecisionReason.EXCEEDS_REMAINING,
        reservedNanos: 8n,
        remainingNanos: 72n,
      });
      expect(refused.limits.find((l) => l.window === BudgetWindow.DAY)).toMatchObject({ remainingNanos: 2n, reservedNanos: 8n });
      // Removing the daily limit leaves the lifetime one.
      await c.setProjectBudget({ projectId: project, limitNanos: 100n, dailyLimitNanos: 0n });
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: 3n })).toMatchObject({
        allowed: true,
        decidedBy: BudgetWindow.LIFETIME,
      });
    });

    it("keeps budget fields that SetProjectBudget does not name, and validates the new ones", async () => {
      const c = getClient();
      const project = newProject("budget-fields");
      await c.setProjectBudget({
        projectId: project,
        limitNanos: 5n,
        dailyLimitNanos: 2n,
        monthlyLimitNanos: 4n,
        timeZone: "europe/berlin",
        alertThresholds: { basisPoints: [8000, 5000, 8000] },
      });
      // A v1 client sets only the lifetime limit: the rest stays.
      await c.setProjectBudget({ projectId: project, limitNanos: 6n });
      expect((await c.getProjectBudget({ projectId: project })).budget).toMatchObject({
        limitNanos: 6n,
        dailyLimitNanos: 2n,
        monthlyLimitNanos: 4n,
        timeZone: "Europe/Berlin",
        alertThresholdsBps: [5000, 8000],
      });
      await c.setProjectBudget({ projectId: project, limitNanos: 6n, alertThresholds: {} });
      expect((await c.getProjectBudget({ projectId: project })).budget?.alertThresholdsBps).toEqual([]);
      const code = async (call: Promise<unknown>) => (await errorOf(call)).code;
      expect(await code(c.setProjectBudget({ projectId: project, timeZone: "Mars/Olympus_Mons" }))).toBe(Code.InvalidArgument);
      expect(await code(c.setProjectBudget({ projectId: project, timeZone: "+05:00" }))).toBe(Code.InvalidArgument);
      expect(await code(c.setProjectBudget({ projectId: project, timeZone: "" }))).toBe(Code.InvalidArgument);
      expect(await code(c.setProjectBudget({ projectId: project, dailyLimitNanos: -1n }))).toBe(Code.InvalidArgument);
      expect(await code(c.setProjectBudget({ projectId: project, alertThresholds: { basisPoints: [0] } }))).toBe(Code.InvalidArgument);
      expect(await code(c.setProjectBudget({ projectId: project, alertThresholds: { basisPoints: [10_001] } }))).toBe(Code.InvalidArgument);
      expect(
        await code(c.setProjectBudget({ projectId: project, alertThresholds: { basisPoints: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] } })),
      ).toBe(Code.InvalidArgument);
      expect((await c.getProjectBudget({ projectId: project })).budget).toMatchObject({ limitNanos: 6n, timeZone: "Europe/Berlin" });
    });

    it("reports each threshold crossing once, re-arms it the next day and on a new limit, and tells CheckBudget where spend stands", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("alerts");
      await c.setProjectBudget({
        projectId: project,
        limitNanos: 100n,
        dailyLimitNanos: 40n,
        alertThresholds: { basisPoints: [5000, 8000] },
      });
      const first = await c.recordCost({ projectId: project, costNanos: 20n, requestId: "a" });
      expect(first.thresholdsCrossed.map((t) => [t.window, t.period, t.thresholdBps, t.spentNanos])).toEqual([
        [BudgetWindow.DAY, "2026-11-27", 5000, 20n],
      ]);
      // One write past two thresholds of the day, and the first of the lifetime limit.
      const second = await c.recordCost({ projectId: project, costNanos: 30n, requestId: "b" });
      expect(second.thresholdsCrossed.map((t) => [t.window, t.thresholdBps, t.limitNanos, t.spentNanos])).toEqual([
        [BudgetWindow.LIFETIME, 5000, 100n, 50n],
        [BudgetWindow.DAY, 8000, 40n, 50n],
        [BudgetWindow.DAY, 10000, 40n, 50n],
      ]);
      const retry = await c.recordCost({ projectId: project, costNanos: 30n, requestId: "b" });
      expect(retry).toMatchObject({ duplicate: true, thresholdsCrossed: [] });
      expect((await c.recordCost({ projectId: project, costNanos: 1n, requestId: "c" })).thresholdsCrossed).toEqual([]);
      const check = await c.checkBudget({ projectId: project });
      expect(check.thresholdsReached.map((t) => [t.window, t.thresholdBps])).toEqual([
        [BudgetWindow.LIFETIME, 5000],
        [BudgetWindow.DAY, 10000],
      ]);
      // Next day: the daily thresholds fire again.
      clock.set("2026-11-28T00:00:00Z");
      expect(
        (await c.recordCost({ projectId: project, costNanos: 20n, requestId: "d" })).thresholdsCrossed.map((t) => [
          t.window,
          t.period,
          t.thresholdBps,
        ]),
      ).toEqual([[BudgetWindow.DAY, "2026-11-28", 5000]]);
      // A new lifetime limit re-arms its thresholds: 71 of 80 is past 50 % and 80 %.
      await c.setProjectBudget({ projectId: project, limitNanos: 80n });
      expect(
        (await c.recordCost({ projectId: project, costNanos: 0n, requestId: "e" })).thresholdsCrossed.map((t) => [
          t.window,
          t.thresholdBps,
          t.limitNanos,
        ]),
      ).toEqual([
        [BudgetWindow.LIFETIME, 5000, 80n],
        [BudgetWindow.LIFETIME, 8000, 80n],
      ]);
    });

    it("breaks lifetime totals down by agent and model", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("breakdown");
      await c.recordCost({
        projectId: project,
        costNanos: 5n,
        inputTokens: 1n,
        outputTokens: 2n,
        agentId: "planner",
        model: "gpt-4o",
        requestId: "1",
      });
      await c.recordCost({
        projectId: project,
        costNanos: 7n,
        inputTokens: 3n,
        outputTokens: 4n,
        agentId: "coder",
        model: "gpt-4o",
        requestId: "2",
      });
      await c.recordCost({ projectId: project, costNanos: 7n, agentId: "planner", model: "claude-sonnet-4", requestId: "3" });
      await c.recordCost({ projectId: project, costNanos: 1n, requestId: "4" });
      const again = await c.recordCost({
        projectId: project,
        costNanos: 7n,
        inputTokens: 3n,
        outputTokens: 4n,
        agentId: "coder",
        model: "gpt-4o",
        requestId: "2",
      });
      expect(again.duplicate).toBe(true); // counted once in every breakdown too
      const report = await c.getProjectCost({ projectId: project, breakdownBy: [BreakdownDimension.MODEL, BreakdownDimension.AGENT] });
      expect(report.breakdowns.map((b) => b.dimension)).toEqual([BreakdownDimension.MODEL, BreakdownDimension.AGENT]);
      const [models, agents] = report.breakdowns;
      expect(models?.entries.map((e) => [e.key, e.totalCostNanos, e.recordCount])).toEqual([
        ["gpt-4o", 12n, 2n],
        ["claude-sonnet-4", 7n, 1n],
        ["", 1n, 1n],
      ]);
      expect(agents?.entries.map((e) => [e.key, e.totalCostNanos, e.inputTokens, e.outputTokens])).toEqual([
        ["planner", 12n, 1n, 2n],
        ["coder", 7n, 3n, 4n],
        ["", 1n, 0n, 0n],
      ]);
      expect(agents?.truncated).toBe(false);
      const sum = (agents?.entries ?? []).reduce((total, e) => total + e.totalCostNanos, 0n);
      expect(sum).toBe(report.projectCost?.totalCostNanos);
      expect((await c.getProjectCost({ projectId: project })).breakdowns).toEqual([]);
      expect((await errorOf(c.getProjectCost({ projectId: project, breakdownBy: [BreakdownDimension.UNSPECIFIED] }))).code).toBe(
        Code.InvalidArgument,
      );
      expect(
        (await errorOf(c.getProjectCost({ projectId: project, breakdownBy: [BreakdownDimension.AGENT, BreakdownDimension.AGENT] }))).code,
      ).toBe(Code.InvalidArgument);
    });

    it("pages through the ledger with AIP-158 tokens, within a time range", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("list");
      const t0 = clock.ms;
      for (let i = 0; i < 7; i++) {
        await c.recordCost({ projectId: project, costNanos: BigInt(i), requestId: `r${i}`, agentId: "a", model: "m" });
        clock.advance(1_000);
      }
      await c.recordCost({ projectId: newProject("list-other"), costNanos: 1n, requestId: "r0" });
      const seen: string[] = [];
      let token = "";
      for (let pages = 0; pages < 10; pages++) {
        const page = await c.listCostRecords({ projectId: project, pageSize: 3, pageToken: token });
        expect(page.records.length).toBeLessThanOrEqual(3);
        seen.push(...page.records.map((r) => r.requestId));
        token = page.nextPageToken;
        if (token === "") break;
      }
      expect(seen).toEqual(["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
      const all = await c.listCostRecords({ projectId: project });
      expect(all.nextPageToken).toBe("");
      expect(all.records[2]).toMatchObject({ requestId: "r2", costNanos: 2n, agentId: "a", model: "m", holdId: "" });
      // Each record carries the running total right after it: 0, 0+1, 0+1+2, ...
      expect(all.records.map((r) => r.totalCostNanosAfter)).toEqual([0n, 1n, 3n, 6n, 10n, 15n, 21n]);
      expect(all.records.at(-1)?.totalCostNanosAfter).toBe((await c.getProjectCost({ projectId: project })).projectCost?.totalCostNanos);
      expect(timestampDate(all.records[2]!.recordedAt!).getTime()).toBe(t0 + 2_000);
      // [start, end): records at t0+2s, t0+3s, t0+4s.
      const range = { projectId: project, startTime: timestampFromMs(t0 + 2_000), endTime: timestampFromMs(t0 + 5_000) };
      const first = await c.listCostRecords({ ...range, pageSize: 2 });
      expect(first.records.map((r) => r.requestId)).toEqual(["r2", "r3"]);
      const second = await c.listCostRecords({ ...range, pageSize: 2, pageToken: first.nextPageToken });
      expect(second.records.map((r) => r.requestId)).toEqual(["r4"]);
      expect(second.nextPageToken).toBe("");
      // A token belongs to its query.
      const code = async (call: Promise<unknown>) => (await errorOf(call)).code;
      expect(await code(c.listCostRecords({ projectId: project, pageToken: first.nextPageToken }))).toBe(Code.InvalidArgument);
      expect(await code(c.listCostRecords({ projectId: project, pageToken: "not-a-token" }))).toBe(Code.InvalidArgument);
      // Forged tokens in the right format but out of range (issue 15): the
      // caller's bad input on both databases, never INTERNAL.
      const forge = (t: number, i: string) =>
        Buffer.from(JSON.stringify({ v: 1, p: project, s: null, e: null, t, i })).toString("base64url");
      for (const [t, i] of [
        [t0, "9999999999999999999"],
        [t0, "9223372036854775808"],
        [-8_000_000_000_000_000, "1"],
        [8_000_000_000_000_000, "1"],
        [Number.MAX_SAFE_INTEGER, "1"],
      ] as const) {
        const forged = await errorOf(c.listCostRecords({ projectId: project, pageToken: forge(t, i) }));
        expect({ t, i, code: forged.code }).toEqual({ t, i, code: Code.InvalidArgument });
        expect(forged.rawMessage).toMatch(/^page_token is not valid for this request \(not a token this server issued\)/);
      }
      // The largest position a real token can hold still works (an empty page).
      expect((await c.listCostRecords({ projectId: project, pageToken: forge(t0 + 10_000, "9223372036854775807") })).records).toEqual([]);
      expect(await code(c.listCostRecords({ projectId: project, pageSize: -1 }))).toBe(Code.InvalidArgument);
      expect(await code(c.listCostRecords({ projectId: project, startTime: timestampFromMs(t0 + 1), endTime: timestampFromMs(t0) }))).toBe(
        Code.InvalidArgument,
      );
      // A huge page size is coerced to the maximum, not refused.
      expect((await c.listCostRecords({ projectId: project, pageSize: 1_000_000 })).records).toHaveLength(7);
    });

    it("streams a snapshot, then threshold, exhaustion and limit events as they commit", async () => {
      const [c, clock] = [getClient(), getClock()];
      clock.set("2026-11-27T12:00:00Z");
      const project = newProject("watch");
      await c.setProjectBudget({ projectId: project, limitNanos: 10n, alertThresholds: { basisPoints: [5000] } });
      await c.checkBudget({ projectId: project, estimatedCostNanos: 2n, reserve: true });
      const abort = new AbortController();
      const events = reader(c.watchBudget({ projectId: project }, { signal: abort.signal }));
      try {
        const snapshot = (await events.next()).event;
        expect(snapshot).toMatchObject({
          kind: BudgetEventKind.SNAPSHOT,
          projectId: project,
          budget: { limitNanos: 10n },
          projectCost: { totalCostNanos: 0n, reservedNanos: 2n },
        });
        await c.recordCost({ projectId: project, costNanos: 6n, requestId: "a" });
        expect((await events.next()).event).toMatchObject({
          kind: BudgetEventKind.THRESHOLD_CROSSED,
          requestId: "a",
          threshold: { window: BudgetWindow.LIFETIME, thresholdBps: 5000, spentNanos: 6n },
        });
        await c.recordCost({ projectId: project, costNanos: 4n, requestId: "b" });
        expect((await events.next()).event).toMatchObject({
          kind: BudgetEventKind.EXHAUSTED,
          requestId: "b",
          threshold: { thresholdBps: 10000, limitNanos: 10n, spentNanos: 10n },
        });
        await c.setProjectBudget({ projectId: project, limitNanos: 20n });
        const changed = (await events.next()).event;
        expect(changed).toMatchObject({ kind: BudgetEventKind.LIMIT_CHANGED, budget: { limitNanos: 20n, alertThresholdsBps: [5000] } });
        expect(changed?.occurredAt).toBeDefined();
      } finally {
        abort.abort();
        await events.close();
      }
    });
  });
}

// Every depth runs on each database kind (test/databases.ts), one database per depth.
for (const kind of databaseKinds) {
  describe(`BudgetService on ${kind}: holds, windows, alerts, breakdowns, ledger, watch`, () => {
    const databases = new TestDatabases(kind);
    const clocks = {
      class: new TestClock("2026-11-27T12:00:00Z"),
      router: new TestClock("2026-11-27T12:00:00Z"),
      port: new TestClock("2026-11-27T12:00:00Z"),
    };
    let classInit: InitializedStore;
    let classHandler: BudgetServiceHandler;
    let routerInit: InitializedStore;
    let routerClient: BudgetClient;
    let server: TallyServer;
    let portClients: Record<string, BudgetClient>;

    beforeAll(async () => {
      const a = await memoryLedger(await databases.scratch(), clocks.class.now);
      classInit = a.init;
      classHandler = new BudgetServiceHandler(a.ledger);
      const b = await memoryLedger(await databases.scratch(), clocks.router.now);
      routerInit = b.init;
      routerClient = createClient(BudgetService, createRouterTransport(tallyRoutes(b.ledger)));
      server = await startTestServer({ databaseUrl: await databases.scratch() }, { now: clocks.port.now });
      portClients = clientsFor(server.url);
    });
    afterAll(async () => {
      await classInit?.store.close();
      await routerInit?.store.close();
      await server?.close();
      await databases.cleanup();
    });

    behaviour(
      "depth 1: the handler class",
      () => classClient(classHandler),
      () => clocks.class,
    );
    behaviour(
      "depth 2: createRouterTransport in memory",
      () => routerClient,
      () => clocks.router,
    );
    for (const protocol of ["connect+proto h2c", "connect+json http/1.1", "grpc h2c", "grpc-web http/1.1"]) {
      behaviour(
        `depth 3: real port 0, ${protocol}`,
        () => portClients[protocol] as BudgetClient,
        () => clocks.port,
      );
    }
  });
}
