// google.rpc.RetryInfo as Tally encodes it by hand: checked against the wire
// format (a Duration inside field 1), which every client decodes.
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { toConnectError } from "../../src/api/errors.ts";
import { encodeRetryInfo, retryableExhausted } from "../../src/retry-info.ts";
import { QueueFullError } from "../../src/ledger/errors.ts";
import { queueFullRetryDelayMs } from "../../src/limits.ts";

function decode(bytes: Uint8Array): { seconds: bigint; nanos: number } {
  const outer = new BinaryReader(bytes);
  const [field, wireType] = outer.tag();
  expect([field, wireType]).toEqual([1, 2]);
  const inner = new BinaryReader(outer.bytes());
  let seconds = 0n;
  let nanos = 0;
  while (inner.pos < inner.len) {
    const [f] = inner.tag();
    if (f === 1) seconds = BigInt(inner.int64());
    else if (f === 2) nanos = inner.int32();
    else throw new Error(`unexpected field ${f}`);
  }
  return { seconds, nanos };
}

describe("RetryInfo on retryable RESOURCE_EXHAUSTED", () => {
  it("encodes the delay as a Duration, rounded up to whole milliseconds", () => {
    expect(decode(encodeRetryInfo(250))).toEqual({ seconds: 0n, nanos: 250_000_000 });
    expect(decode(encodeRetryInfo(1_000))).toEqual({ seconds: 1n, nanos: 0 });
    expect(decode(encodeRetryInfo(2_500.2))).toEqual({ seconds: 2n, nanos: 501_000_000 });
    expect(decode(encodeRetryInfo(0))).toEqual({ seconds: 0n, nanos: 0 });
  });

  it("a full write queue says how long to wait; other RESOURCE_EXHAUSTED causes carry no RetryInfo", () => {
    const full = toConnectError(new QueueFullError(10));
    expect(full.code).toBe(Code.ResourceExhausted);
    expect(full.details).toHaveLength(1);
    const detail = full.details[0]!;
    expect("type" in detail && detail.type).toBe("google.rpc.RetryInfo");
    expect("type" in detail && decode(detail.value)).toEqual({ seconds: BigInt(queueFullRetryDelayMs / 1000), nanos: 0 });
    expect(retryableExhausted("x", 5).rawMessage).toBe("x");
  });
});
