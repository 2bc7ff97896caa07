import { describe, expect, it } from "vitest";
import { ClosedError, WatchOverloadError } from "../../src/ledger/errors.ts";
import { BudgetEventHub, type BudgetEvent } from "../../src/ledger/events.ts";

const event = (projectId: string, n: number): BudgetEvent => ({
  kind: "threshold_crossed",
  projectId,
  atMs: n,
  crossing: { projectId, window: "lifetime", period: "", thresholdBps: 5000, limitNanos: 10n, spentNanos: 5n, requestId: `r${n}`, atMs: n },
});

describe("BudgetEventHub", () => {
  it("delivers a project's events in order to each of its subscribers only", async () => {
    const hub = new BudgetEventHub({ queueDepthMax: 8, subscribersMax: 8 });
    const a1 = hub.subscribe("a");
    const a2 = hub.subscribe("a");
    const b = hub.subscribe("b");
    hub.publish(event("a", 1));
    hub.publish(event("a", 2));
    expect((await a1.next())?.atMs).toBe(1);
    expect((await a1.next())?.atMs).toBe(2);
    expect((await a2.next())?.atMs).toBe(1);
    expect(b.queued).toBe(0);
    // A waiting reader wakes on publish.
    const pending = b.next();
    hub.publish(event("b", 3));
    expect((await pending)?.atMs).toBe(3);
  });

  it("drops a subscriber that falls a whole queue behind, without blocking the publisher", async () => {
    const hub = new BudgetEventHub({ queueDepthMax: 4, subscribersMax: 8 });
    const slow = hub.subscribe("p");
    const fast = hub.subscribe("p");
    for (let n = 1; n <= 5; n++) {
      hub.publish(event("p", n));
      await fast.next();
    }
    await expect(slow.next()).rejects.toBeInstanceOf(WatchOverloadError);
    expect(hub.subscriberCount).toBe(1);
    hub.publish(event("p", 6));
    expect((await fast.next())?.atMs).toBe(6);
  });

  it("bounds the number of subscribers, and frees a slot on close", () => {
    const hub = new BudgetEventHub({ queueDepthMax: 4, subscribersMax: 2 });
    const first = hub.subscribe("p");
    hub.subscribe("q");
    expect(() => hub.subscribe("p")).toThrow(WatchOverloadError);
    first.close();
    expect(hub.subscribe("p")).toBeDefined();
  });

  it("holds each owner (API key) to its share of the slots; others still subscribe", () => {
    const hub = new BudgetEventHub({ queueDepthMax: 4, subscribersMax: 10, subscribersPerOwnerMax: 3 });
    const mine = [hub.subscribe("p", "team-a"), hub.subscribe("q", "team-a"), hub.subscribe("r", "team-a")];
    expect(() => hub.subscribe("p", "team-a")).toThrow(
      /API key team-a already has 3 WatchBudget streams open \(its share of the server's 10\)/,
    );
    expect(hub.subscribe("p", "team-b")).toBeDefined();
    // No key (open mode): no share, only the server's bound.
    for (let i = 0; i < 4; i++) hub.subscribe("p", null);
    mine[0]!.close();
    expect(hub.subscribe("p", "team-a").owner).toBe("team-a");
    expect(hub.subscriberCount).toBe(8);
  });

  it("returns null to a reader whose signal aborts or who closes, and fails everyone on hub close", async () => {
    const hub = new BudgetEventHub({ queueDepthMax: 4, subscribersMax: 8 });
    const abort = new AbortController();
    const watcher = hub.subscribe("p");
    const pending = watcher.next(abort.signal);
    abort.abort();
    expect(await pending).toBeNull();
    const other = hub.subscribe("p");
    const waiting = other.next();
    hub.close();
    await expect(waiting).rejects.toBeInstanceOf(ClosedError);
    expect(() => hub.subscribe("p")).toThrow(ClosedError);
  });
});
