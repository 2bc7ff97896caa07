// Per-key rate limits (keys file "rateLimitPerSecond"): a token bucket per key
// holding one second's worth of calls, refilled continuously. In memory, per
// process: with several replicas each enforces the limit on the calls it
// serves (docs/security.md).
import { Code, ConnectError } from "@connectrpc/connect";
import { apiKeysMax } from "../limits.ts";

interface Bucket {
  tokens: number;
  atMs: number;
  perSecond: number;
}

export class KeyRateLimiter {
  /** By the key's stored digest: a key re-created under the same id with a
   * new secret starts with a full bucket, and no id is trusted alone. */
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Takes one call from the key's bucket, or throws RESOURCE_EXHAUSTED
   * saying when the next call would be admitted. */
  take(keyId: string, keyDigest: string, perSecond: number): void {
    const nowMs = this.#now();
    let bucket = this.#buckets.get(keyDigest);
    if (bucket === undefined || bucket.perSecond !== perSecond) {
      // A new key, or its limit changed on reload: start full at the new rate.
      if (bucket === undefined && this.#buckets.size >= apiKeysMax) this.#forgetFull(nowMs);
      bucket = { tokens: perSecond, atMs: nowMs, perSecond };
      this.#buckets.set(keyDigest, bucket);
    } else {
      bucket.tokens = refilled(bucket, nowMs);
      bucket.atMs = nowMs;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const retryMs = Math.ceil(((1 - bucket.tokens) * 1000) / perSecond);
    throw new ConnectError(`API key "${keyId}" is over its rate limit of ${perSecond} calls/s; retry in ${retryMs} ms`, Code.ResourceExhausted);
  }

  /** Buckets of keys idle long enough to be full again hold nothing worth
   * keeping (a revoked key's bucket ends up here too). */
  #forgetFull(nowMs: number): void {
    for (const [digest, bucket] of this.#buckets) {
      if (refilled(bucket, nowMs) >= bucket.perSecond) this.#buckets.delete(digest);
    }
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/** The bucket's tokens at `nowMs`: refilled at its rate, never past one second's worth. */
function refilled(bucket: Bucket, nowMs: number): number {
  return Math.min(bucket.perSecond, bucket.tokens + ((nowMs - bucket.atMs) * bucket.perSecond) / 1000);
}
