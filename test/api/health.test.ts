// gRPC health checking (grpc.health.v1.Health): SERVING until the server
// drains, then NOT_SERVING; Watch streams hear the change and end. At three
// depths: the handler class with a LifecycleGate, the routes in memory behind
// the gate's interceptor, and the real server (Connect's gRPC client and
// @grpc/grpc-js reading the official health.proto).
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createHandlerContext, createRouterTransport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckRequestSchema, HealthCheckResponse_ServingStatus as Status } from "../../gen/ts/grpc/health/v1/health_pb.ts";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { HealthHandler } from "../../src/api/health.ts";
import { LifecycleGate } from "../../src/transport/lifecycle-gate.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { inFlightCallsMax } from "../../src/limits.ts";
import { startTestServer } from "../helpers.ts";
import { root } from "../clients/tools.ts";

const services = ["tally.budget.v1.BudgetService", "grpc.health.v1.Health"];

function watchContext(signal?: AbortSignal) {
  return createHandlerContext({
    service: Health,
    method: Health.method.watch,
    protocolName: "in-process",
    requestMethod: "POST",
    url: "in-process://grpc.health.v1.Health/Watch",
    requestSignal: signal,
  });
}

async function collect<T>(stream: AsyncIterable<T>, max = 10): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) {
    out.push(item);
    if (out.length >= max) break;
  }
  return out;
}

describe("depth 1: HealthHandler", () => {
  it("reports SERVING for the server and each service, NOT_FOUND for an unknown service", () => {
    const handler = new HealthHandler(new LifecycleGate(), services);
    expect(handler.check(create(HealthCheckRequestSchema, { service: "" })).status).toBe(Status.SERVING);
    expect(handler.check(create(HealthCheckRequestSchema, { service: "tally.budget.v1.BudgetService" })).status).toBe(Status.SERVING);
    try {
      handler.check(create(HealthCheckRequestSchema, { service: "tally.budget.v1.Nope" }));
      expect.unreachable();
    } catch (error) {
      expect(ConnectError.from(error).code).toBe(Code.NotFound);
      expect(ConnectError.from(error).rawMessage).toMatch(/unknown service "tally.budget.v1.Nope"/);
    }
    const list = handler.list();
    expect(Object.keys(list.statuses).sort()).toEqual(["", ...services].sort());
    for (const response of Object.values(list.statuses)) expect(response.status).toBe(Status.SERVING);
  });

  it("reports NOT_SERVING once the gate drains", () => {
    const gate = new LifecycleGate();
    const handler = new HealthHandler(gate, services);
    gate.startDraining();
    expect(handler.check(create(HealthCheckRequestSchema, { service: "" })).status).toBe(Status.NOT_SERVING);
    expect(handler.list().statuses["tally.budget.v1.BudgetService"]?.status).toBe(Status.NOT_SERVING);
  });

  it("Watch sends the status at once, then NOT_SERVING when draining starts, then ends", async () => {
    const gate = new LifecycleGate();
    const handler = new HealthHandler(gate, services);
    const watching = collect(handler.watch(create(HealthCheckRequestSchema, { service: "" }), watchContext()));
    await new Promise((resolve) => setImmediate(resolve));
    gate.startDraining();
    expect((await watching).map((r) => r.status)).toEqual([Status.SERVING, Status.NOT_SERVING]);
  });

  it("Watch of an unknown service sends SERVICE_UNKNOWN and stays open until the client goes away", async () => {
    const client = new AbortController();
    const handler = new HealthHandler(new LifecycleGate(), services);
    const watching = collect(handler.watch(create(HealthCheckRequestSchema, { service: "nope" }), watchContext(client.signal)));
    await new Promise((resolve) => setImmediate(resolve));
    client.abort();
    expect((await watching).map((r) => r.status)).toEqual([Status.SERVICE_UNKNOWN]);
  });
});

describe("depth 2: routes in memory behind the lifecycle gate", () => {
  let init: InitializedStore;
  beforeAll(async () => {
    init = await initORM("sqlite::memory:");
  });
  afterAll(async () => {
    await init.store.close();
  });

  it("answers health checks while draining (NOT_SERVING) but refuses budget calls (UNAVAILABLE)", async () => {
    const gate = new LifecycleGate(inFlightCallsMax, { admitWhileDraining: [Health.typeName] });
    const ledger = new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 8, queueDepthMax: 64 }));
    const transport = createRouterTransport(tallyRoutes(ledger, gate), { router: { interceptors: [gate.interceptor] } });
    const health = createClient(Health, transport);
    const budget = createClient(BudgetService, transport);
    expect((await health.check({})).status).toBe(Status.SERVING);
    expect((await health.check({ service: BudgetService.typeName })).status).toBe(Status.SERVING);
    gate.startDraining();
    expect((await health.check({})).status).toBe(Status.NOT_SERVING);
    const refused = await budget.getProjectCost({ projectId: "p" }).catch((e: unknown) => ConnectError.from(e));
    expect((refused as ConnectError).code).toBe(Code.Unavailable);
  });

  it("without a gate (in-memory routes) the server is always SERVING", async () => {
    const ledger = new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 8, queueDepthMax: 64 }));
    const health = createClient(Health, createRouterTransport(tallyRoutes(ledger)));
    expect((await health.list({})).statuses[""]?.status).toBe(Status.SERVING);
  });
});

describe("depth 3: the real server", () => {
  it("serves Check and List to Connect's gRPC client and to @grpc/grpc-js", async () => {
    const server = await startTestServer();
    try {
      const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
      expect((await health.check({ service: "tally.budget.v1.BudgetService" })).status).toBe(Status.SERVING);
      expect(Object.keys((await health.list({})).statuses)).toContain("grpc.reflection.v1.ServerReflection");

      const definition = protoLoader.loadSync("grpc/health/v1/health.proto", { includeDirs: [`${root}third_party/proto`], enums: String });
      const pkg = grpc.loadPackageDefinition(definition) as any;
      const client = new pkg.grpc.health.v1.Health(server.url.replace("http://", ""), grpc.credentials.createInsecure()) as grpc.Client &
        Record<string, Function>;
      try {
        const call = (service: string) =>
          new Promise<any>((resolve, reject) =>
            client.Check!({ service }, (err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res))),
          );
        expect(await call("")).toEqual({ status: "SERVING" });
        expect(((await call("nope").catch((e: grpc.ServiceError) => e)) as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
      } finally {
        client.close();
      }
    } finally {
      await server.close();
    }
  });

  it("a Watch stream hears NOT_SERVING when the server shuts down, and ends so shutdown is not held up", async () => {
    const server = await startTestServer();
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const statuses: Status[] = [];
    let first!: () => void;
    const gotFirst = new Promise<void>((resolve) => (first = resolve));
    const watching = (async () => {
      for await (const response of health.watch({})) {
        statuses.push(response.status);
        first();
      }
    })();
    await gotFirst;
    await server.close();
    await watching; // ended by the server with OK, not by an error
    expect(statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
  });
});
