// The one error table (src/api/errors.ts): domain errors become their codes
// around every method of the service, unary and streaming alike; anything else
// is a bug and answers INTERNAL (never a retryable code), its cause kept.
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { toConnectError, withErrorMapping } from "../../src/api/errors.ts";
import { ProjectNotFoundError, QueueFullError, StoreUnavailableError } from "../../src/ledger/errors.ts";

describe("the error table", () => {
  it("maps domain errors to their codes, keeping the message and the cause", () => {
    const notFound = new ProjectNotFoundError("p");
    const mapped = toConnectError(notFound);
    expect(mapped.code).toBe(Code.NotFound);
    expect(mapped.rawMessage).toBe(notFound.message);
    expect(mapped.cause).toBe(notFound);
    expect(toConnectError(new QueueFullError(8)).code).toBe(Code.ResourceExhausted);
    expect(toConnectError(new StoreUnavailableError(new Error("disk gone"))).code).toBe(Code.Unavailable);
  });

  it("answers a broken invariant INTERNAL, not a retryable code, and says nothing of its internals", () => {
    const bug = new Error("invariant: totals went negative");
    const mapped = toConnectError(bug);
    expect(mapped.code).toBe(Code.Internal);
    expect(mapped.rawMessage).toBe("internal error");
    expect(mapped.cause).toBe(bug);
    const already = new ConnectError("bad field", Code.InvalidArgument);
    expect(toConnectError(already)).toBe(already);
  });

  it("wraps every method: a unary rejection and a stream failing mid-way both arrive as codes", async () => {
    const impl = withErrorMapping(BudgetService, {
      async getProjectCost(): Promise<never> {
        throw new ProjectNotFoundError("absent");
      },
      async checkBudget(): Promise<never> {
        throw new Error("invariant broken");
      },
      async *watchBudget() {
        yield { event: { projectId: "w" } };
        throw new StoreUnavailableError(new Error("connection reset"), "read");
      },
    });
    const client = createClient(
      BudgetService,
      createRouterTransport((router) => router.service(BudgetService, impl)),
    );
    await expect(client.getProjectCost({ projectId: "absent" })).rejects.toMatchObject({ code: Code.NotFound });
    await expect(client.checkBudget({ projectId: "x" })).rejects.toMatchObject({ code: Code.Internal, rawMessage: "internal error" });
    const seen: string[] = [];
    const reading = (async () => {
      for await (const response of client.watchBudget({ projectId: "w" })) seen.push(response.event?.projectId ?? "");
    })();
    await expect(reading).rejects.toMatchObject({ code: Code.Unavailable });
    expect(seen).toEqual(["w"]);
  });
});
