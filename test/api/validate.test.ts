import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { nonNegative, optionalCurrency, optionalId, optionalModel, requireId } from "../../src/api/validate.ts";

function codeOf(fn: () => unknown): Code | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    return error instanceof ConnectError ? error.code : undefined;
  }
}

describe("validation", () => {
  it.each(["a", "demo", "org/team/project-1", "A.b_c:d/e-f", "x".repeat(128), "550e8400-e29b-41d4-a716-446655440000"])(
    "accepts id %j",
    (id) => {
      expect(requireId("project_id", id)).toBe(id);
    },
  );

  it.each([
    ["empty", ""],
    ["too long", "x".repeat(129)],
    ["space", "my project"],
    ["unicode", "projét"],
    ["newline", "a\nb"],
    ["quote", 'a"b'],
    ["null byte", "a\u0000b"],
    ["emoji", "💸"],
  ])("rejects id (%s)", (_name, id) => {
    expect(codeOf(() => requireId("project_id", id))).toBe(Code.InvalidArgument);
  });

  it("names the field and the rule in the message", () => {
    expect(() => requireId("project_id", "")).toThrow(/project_id is required/);
    expect(() => requireId("request_id", "x".repeat(129))).toThrow(/request_id is 129 characters long; the maximum is 128/);
  });

  it("lets optional labels be empty but not malformed", () => {
    expect(optionalId("agent_id", "")).toBe("");
    expect(codeOf(() => optionalId("agent_id", "bad id"))).toBe(Code.InvalidArgument);
    expect(optionalModel("model", "anthropic/claude-sonnet-4@2025+tools")).toBe("anthropic/claude-sonnet-4@2025+tools");
    expect(codeOf(() => optionalModel("model", "gpt 4"))).toBe(Code.InvalidArgument);
    expect(codeOf(() => optionalModel("model", "m".repeat(129)))).toBe(Code.InvalidArgument);
  });

  it("refuses negative amounts and accepts zero", () => {
    expect(nonNegative("cost_nanos", 0n)).toBe(0n);
    expect(codeOf(() => nonNegative("cost_nanos", -1n))).toBe(Code.InvalidArgument);
    expect(() => nonNegative("input_tokens", -5n)).toThrow(/input_tokens must be >= 0, got -5/);
  });

  it("accepts ISO 4217 codes only", () => {
    expect(optionalCurrency("currency", "")).toBeNull();
    expect(optionalCurrency("currency", "EUR")).toBe("EUR");
    for (const bad of ["eur", "EURO", "E1R", "$"]) expect(codeOf(() => optionalCurrency("currency", bad))).toBe(Code.InvalidArgument);
  });
});
