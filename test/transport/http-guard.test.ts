// The one header-limit check both paths use (guardRequests on the
// compatibility path, the fast path on raw HTTP/2 streams).
import { describe, expect, it } from "vitest";
import { requestBodyReceiveMsMax, requestHeadersBytesMax, requestHeadersCountMax } from "../../src/limits.ts";
import { headersOverLimits, requestGuardLimits } from "../../src/transport/http-guard.ts";

/** A raw name/value list of `count` fields, `bytes` long in all. */
function rawHeaders(count: number, bytes: number): string[] {
  const raw: string[] = [];
  for (let i = 0; i < count; i++) raw.push("n", "v");
  raw[1] = "v".repeat(bytes - 2 * count + 1);
  return raw;
}

describe("headersOverLimits", () => {
  const limits = { headersCountMax: 4, headersBytesMax: 100 };

  it("accepts a header block at both limits", () => {
    expect(headersOverLimits(rawHeaders(4, 100), limits)).toBeNull();
  });

  it("refuses one field too many, naming the count and the limit", () => {
    expect(headersOverLimits(rawHeaders(5, 20), limits)).toBe("request has 5 header fields (metadata entries); at most 4");
  });

  it("refuses one byte too many, names plus values", () => {
    expect(headersOverLimits(rawHeaders(4, 101), limits)).toBe("request headers (metadata) are 101 bytes; at most 100");
  });

  it("both paths' limits are those in src/limits.ts", () => {
    expect(requestGuardLimits).toEqual({
      headersCountMax: requestHeadersCountMax,
      headersBytesMax: requestHeadersBytesMax,
      bodyReceiveMs: requestBodyReceiveMsMax,
    });
    const count = requestHeadersCountMax;
    const bytes = requestHeadersBytesMax;
    expect(headersOverLimits(rawHeaders(count, bytes), requestGuardLimits)).toBeNull();
    expect(headersOverLimits(rawHeaders(count + 1, bytes), requestGuardLimits)).toMatch(/header fields/);
    expect(headersOverLimits(rawHeaders(count, bytes + 1), requestGuardLimits)).toMatch(/bytes; at most/);
  });
});
