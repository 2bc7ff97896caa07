import { describe, expect, it } from "vitest";
import { canonicalTimeZone, periodKeys } from "../../src/ledger/periods.ts";

const at = (iso: string) => Date.parse(iso);

describe("periodKeys", () => {
  it("puts an instant in the local day and month of the time zone", () => {
    expect(periodKeys(at("2026-11-27T23:59:59.999Z"), "UTC")).toEqual({ day: "2026-11-27", month: "2026-11" });
    expect(periodKeys(at("2026-11-28T00:00:00.000Z"), "UTC")).toEqual({ day: "2026-11-28", month: "2026-11" });
    // New York is UTC-5 in winter: its midnight is 05:00 UTC.
    expect(periodKeys(at("2026-12-01T04:59:59.999Z"), "America/New_York")).toEqual({ day: "2026-11-30", month: "2026-11" });
    expect(periodKeys(at("2026-12-01T05:00:00.000Z"), "America/New_York")).toEqual({ day: "2026-12-01", month: "2026-12" });
    // UTC+14 and UTC-11 are a whole day apart.
    expect(periodKeys(at("2026-12-31T10:00:00Z"), "Pacific/Kiritimati")).toEqual({ day: "2027-01-01", month: "2027-01" });
    expect(periodKeys(at("2026-12-31T10:00:00Z"), "Pacific/Pago_Pago")).toEqual({ day: "2026-12-30", month: "2026-12" });
  });

  it("follows daylight saving time and leap days", () => {
    // Berlin switches to UTC+2 on 2026-03-29 at 01:00 UTC.
    expect(periodKeys(at("2026-03-28T22:59:59Z"), "Europe/Berlin").day).toBe("2026-03-28");
    expect(periodKeys(at("2026-03-28T23:00:00Z"), "Europe/Berlin").day).toBe("2026-03-29");
    expect(periodKeys(at("2026-03-29T21:59:59Z"), "Europe/Berlin").day).toBe("2026-03-29");
    expect(periodKeys(at("2026-03-29T22:00:00Z"), "Europe/Berlin").day).toBe("2026-03-30");
    expect(periodKeys(at("2028-02-29T12:00:00Z"), "UTC")).toEqual({ day: "2028-02-29", month: "2028-02" });
  });
});

describe("canonicalTimeZone", () => {
  it("accepts IANA names in canonical form and rejects everything else", () => {
    expect(canonicalTimeZone("UTC")).toBe("UTC");
    expect(canonicalTimeZone("utc")).toBe("UTC");
    expect(canonicalTimeZone("europe/berlin")).toBe("Europe/Berlin");
    // ICU picks the canonical spelling of aliases (here the older "America/Buenos_Aires").
    expect(canonicalTimeZone("America/Argentina/Buenos_Aires")).toMatch(/^America\/(Argentina\/)?Buenos_Aires$/);
    for (const bad of ["", "Mars/Olympus_Mons", "+05:00", "UTC+5 ", "Europe/Berlin\n", "x".repeat(65)])
      expect(canonicalTimeZone(bad)).toBeNull();
  });
});
