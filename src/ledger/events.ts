// Budget events for watchers (WatchBudget): an in-process hub, fed by the
// ledger only after the write that caused an event committed.
//
// Publishing must never slow the write path, so it is a synchronous push onto
// each subscriber's queue, bounded by queueDepthMax. A subscriber whose queue
// is full has fallen behind: it is dropped (its next read fails with
// WatchOverloadError -> RESOURCE_EXHAUSTED) rather than buffered without
// bound or allowed to hold writers back. It resubscribes and starts from a
// fresh snapshot. Events are per process: each server instance tells its
// watchers about the writes it committed.
import { ClosedError, WatchOverloadError } from "./errors.ts";
import type { Budget, ThresholdCrossing } from "./types.ts";

export type BudgetEvent =
  | { kind: "threshold_crossed" | "exhausted"; projectId: string; atMs: number; crossing: ThresholdCrossing }
  | { kind: "limit_changed"; projectId: string; atMs: number; budget: Budget };

export interface BudgetEventHubOptions {
  queueDepthMax: number;
  subscribersMax: number;
  /** Subscriptions one owner (an API key) may hold, so one tenant cannot take
   * every slot. Default: subscribersMax (no share). */
  subscribersPerOwnerMax?: number;
}

export class BudgetEventHub {
  readonly #queueDepthMax: number;
  readonly #subscribersMax: number;
  readonly #subscribersPerOwnerMax: number;
  readonly #byOwner = new Map<string, number>();
  readonly #byProject = new Map<string, Set<Subscription>>();
  #count = 0;
  #closed = false;

  constructor(options: BudgetEventHubOptions) {
    if (!(options.queueDepthMax >= 1 && options.subscribersMax >= 1)) throw new Error("event hub: bounds must be >= 1");
    this.#queueDepthMax = options.queueDepthMax;
    this.#subscribersMax = options.subscribersMax;
    this.#subscribersPerOwnerMax = options.subscribersPerOwnerMax ?? options.subscribersMax;
  }

  get subscriberCount(): number {
    return this.#count;
  }

  /** A new subscription to one project's events, from now on. `owner` (an API
   * key id; null when no keys are configured) is held to its share. */
  subscribe(projectId: string, owner: string | null = null): Subscription {
    if (this.#closed) throw new ClosedError();
    if (this.#count >= this.#subscribersMax) {
      throw new WatchOverloadError(`the server already serves ${this.#subscribersMax} WatchBudget streams (the maximum); retry later`);
    }
    const owned = owner === null ? 0 : (this.#byOwner.get(owner) ?? 0);
    if (owner !== null && owned >= this.#subscribersPerOwnerMax) {
      throw new WatchOverloadError(
        `API key ${owner} already has ${this.#subscribersPerOwnerMax} WatchBudget streams open (its share of the server's ${this.#subscribersMax}); close one or retry later`,
      );
    }
    if (owner !== null) this.#byOwner.set(owner, owned + 1);
    const subscription = new Subscription(projectId, this.#queueDepthMax, (s) => this.#remove(s), owner);
    let set = this.#byProject.get(projectId);
    if (set === undefined) this.#byProject.set(projectId, (set = new Set()));
    set.add(subscription);
    this.#count++;
    return subscription;
  }

  /** Hands an event to every subscriber of its project. Never blocks, never throws. */
  publish(event: BudgetEvent): void {
    const set = this.#byProject.get(event.projectId);
    if (set === undefined) return;
    for (const subscription of set) subscription.push(event);
  }

  /** Ends every subscription (each read then fails with ClosedError) and
   * refuses new ones: for shutdown. */
  close(): void {
    this.#closed = true;
    for (const set of this.#byProject.values()) for (const subscription of set) subscription.fail(new ClosedError());
  }

  #remove(subscription: Subscription): void {
    const set = this.#byProject.get(subscription.projectId);
    if (set?.delete(subscription)) {
      this.#count--;
      const owner = subscription.owner;
      if (owner !== null) {
        const owned = (this.#byOwner.get(owner) ?? 1) - 1;
        if (owned === 0) this.#byOwner.delete(owner);
        else this.#byOwner.set(owner, owned);
      }
      if (set.size === 0) this.#byProject.delete(subscription.projectId);
    }
  }
}

export class Subscription {
  readonly projectId: string;
  /** The API key id it counts against (null: none). */
  readonly owner: string | null;
  readonly #queueDepthMax: number;
  readonly #detach: (s: Subscription) => void;
  #queue: BudgetEvent[] = [];
  #error: Error | null = null;
  #closed = false;
  #wake: (() => void) | null = null;

  constructor(projectId: string, queueDepthMax: number, detach: (s: Subscription) => void, owner: string | null = null) {
    this.projectId = projectId;
    this.owner = owner;
    this.#queueDepthMax = queueDepthMax;
    this.#detach = detach;
  }

  /** Events waiting to be read. */
  get queued(): number {
    return this.#queue.length;
  }

  push(event: BudgetEvent): void {
    if (this.#closed || this.#error !== null) return;
    if (this.#queue.length >= this.#queueDepthMax) {
      this.fail(
        new WatchOverloadError(
          `this WatchBudget stream fell ${this.#queueDepthMax} events behind and was dropped so writes are not held back; subscribe again (a new snapshot follows)`,
        ),
      );
      return;
    }
    this.#queue.push(event);
    this.#wakeUp();
  }

  /** Ends the subscription with an error: queued events are dropped. */
  fail(error: Error): void {
    if (this.#closed || this.#error !== null) return;
    this.#error = error;
    this.#queue = [];
    this.#detach(this);
    this.#wakeUp();
  }

  /** The next event; null once closed or when `signal` aborts. Throws the
   * error the subscription was failed with. */
  async next(signal?: AbortSignal): Promise<BudgetEvent | null> {
    for (;;) {
      if (this.#error !== null) throw this.#error;
      if (this.#closed || signal?.aborted) return null;
      const event = this.#queue.shift();
      if (event !== undefined) return event;
      await new Promise<void>((resolve) => {
        const onAbort = () => resolve();
        signal?.addEventListener("abort", onAbort, { once: true });
        this.#wake = () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  /** Unsubscribes (idempotent); a pending next() returns null. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#detach(this);
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
