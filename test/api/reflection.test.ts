// gRPC server reflection (v1 and v1alpha): the Reflector answering each kind
// of request, the bidi stream over the real server for both API versions, and
// the schema-less tools people actually use: grpcurl and buf curl with no
// --schema and no .proto files.
import { create, createFileRegistry, equals, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, SourceCodeInfoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createHandlerContext, createRouterTransport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../../gen/ts/grpc/health/v1/health_pb.ts";
import * as v1 from "../../gen/ts/grpc/reflection/v1/reflection_pb.ts";
import * as v1alpha from "../../gen/ts/grpc/reflection/v1alpha/reflection_pb.ts";
import { BudgetService, file_tally_budget_v1_budget } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { LifecycleGate } from "../../src/transport/lifecycle-gate.ts";
import { Reflector, ServerReflectionV1Handler } from "../../src/api/reflection.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { reflectionRequestsPerStreamMax } from "../../src/limits.ts";
import type { TallyServer } from "../../src/server.ts";
import { initORM } from "../../src/store/orm.ts";
import { generateApiKey } from "../../src/auth/keys.ts";
import { startTestServer, writeKeysFile } from "../helpers.ts";
import { runTool, tools } from "../clients/tools.ts";

const served = [BudgetService, Health, v1.ServerReflection, v1alpha.ServerReflection];
/** budget.proto and the files it imports (google/protobuf/timestamp.proto, ...). */
const budgetFiles = ["tally/budget/v1/budget.proto", ...file_tally_budget_v1_budget.dependencies.map((f) => f.proto.name)];
const request = (messageRequest: v1.ServerReflectionRequest["messageRequest"]) =>
  create(v1.ServerReflectionRequestSchema, { host: "h", messageRequest });

function fileNames(body: ReturnType<Reflector["answer"]>): string[] {
  expect(body.case).toBe("fileDescriptorResponse");
  if (body.case !== "fileDescriptorResponse") return [];
  return body.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name);
}

describe("depth 1: Reflector", () => {
  const reflector = new Reflector(served);

  it("lists every service the server registers", () => {
    const body = reflector.answer(request({ case: "listServices", value: "*" }), new Set());
    expect(body).toEqual({ case: "listServicesResponse", value: { service: served.map((s) => ({ name: s.typeName })) } });
  });

  it("finds the file of a service, a method, a message, a field, a nested enum and an enum value", () => {
    for (const [symbol, file] of [
      ["tally.budget.v1.BudgetService", "tally/budget/v1/budget.proto"],
      ["tally.budget.v1.BudgetService.RecordCost", "tally/budget/v1/budget.proto"],
      ["tally.budget.v1.ProjectCost", "tally/budget/v1/budget.proto"],
      ["tally.budget.v1.ProjectCost.total_cost_nanos", "tally/budget/v1/budget.proto"],
      ["tally.budget.v1.BUDGET_DECISION_REASON_EXHAUSTED", "tally/budget/v1/budget.proto"],
      ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthCheckResponse.NOT_SERVING", "grpc/health/v1/health.proto"],
      ["grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"],
      ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
    ] as const) {
      expect(fileNames(reflector.answer(request({ case: "fileContainingSymbol", value: symbol }), new Set()))[0], symbol).toBe(file);
    }
  });

  it("sends a file with its dependencies, and each dependency once per stream", () => {
    const sent = new Set<string>();
    expect(budgetFiles).toContain("google/protobuf/timestamp.proto");
    expect(fileNames(reflector.answer(request({ case: "fileContainingSymbol", value: "tally.budget.v1.BudgetService" }), sent))).toEqual(
      budgetFiles,
    );
    // Asked again on the same stream: the requested file always, its dependency not again.
    expect(fileNames(reflector.answer(request({ case: "fileByFilename", value: "tally/budget/v1/budget.proto" }), sent))).toEqual([
      "tally/budget/v1/budget.proto",
    ]);
    expect(fileNames(reflector.answer(request({ case: "fileByFilename", value: "google/protobuf/timestamp.proto" }), sent))).toEqual([
      "google/protobuf/timestamp.proto",
    ]);
  });

  it("serves descriptors that rebuild the whole contract without any .proto file", () => {
    const body = reflector.answer(request({ case: "fileContainingSymbol", value: "tally.budget.v1.BudgetService" }), new Set());
    if (body.case !== "fileDescriptorResponse") throw new Error(body.case);
    const files = body.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes)).reverse();
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: files }));
    const service = registry.getService("tally.budget.v1.BudgetService");
    expect(service?.methods.map((m) => m.name)).toEqual(BudgetService.methods.map((m) => m.name));
    // Every message, with every field, exactly as the server was compiled with.
    const shape = (m: { typeName: string; fields: Array<{ number: number; name: string; fieldKind: string }> } | undefined) =>
      m && [m.typeName, m.fields.map((f) => `${f.number}:${f.name}:${f.fieldKind}`)];
    expect(file_tally_budget_v1_budget.messages.length).toBeGreaterThan(10);
    for (const message of file_tally_budget_v1_budget.messages)
      expect(shape(registry.getMessage(message.typeName))).toEqual(shape(message));
    expect(registry.getMessage("tally.budget.v1.RecordCostRequest")?.fields.map((f) => f.name)).toContain("request_id");
  });

  it("serves every file with its proto comments (source info), and the schema it serves is the compiled one", () => {
    for (const name of budgetFiles) expect(reflector.documented(name), name).toBe(true);
    const body = reflector.answer(request({ case: "fileByFilename", value: "tally/budget/v1/budget.proto" }), new Set());
    if (body.case !== "fileDescriptorResponse") throw new Error(body.case);
    const served = fromBinary(FileDescriptorProtoSchema, body.value.fileDescriptorProto[0]!);
    const comments = served.sourceCodeInfo!.location.map((l) => l.leadingComments);
    expect(comments).toContain(
      " BudgetService records the cost of LLM calls per project and decides whether a\n project may spend more.\n",
    );
    // Without its comments, the served file is exactly the one compiled into the server.
    expect(
      equals(
        FileDescriptorProtoSchema,
        create(FileDescriptorProtoSchema, { ...served, sourceCodeInfo: undefined }),
        file_tally_budget_v1_budget.proto,
      ),
    ).toBe(true);
  });

  it("falls back to the compiled (comment-less) descriptor for a documented file that does not match it", () => {
    const stale = create(FileDescriptorProtoSchema, {
      ...file_tally_budget_v1_budget.proto,
      messageType: [],
      sourceCodeInfo: create(SourceCodeInfoSchema, { location: [{ path: [4, 0], span: [0, 0, 1], leadingComments: " stale\n" }] }),
    });
    const fallback = new Reflector(served, new Map([["tally/budget/v1/budget.proto", stale]]));
    expect(fallback.documented("tally/budget/v1/budget.proto")).toBe(false);
    expect(fileNames(fallback.answer(request({ case: "fileContainingSymbol", value: "tally.budget.v1.ProjectCost" }), new Set()))[0]).toBe(
      "tally/budget/v1/budget.proto",
    );
  });

  it("answers NOT_FOUND for unknown files, symbols and extensions, INVALID_ARGUMENT for an empty request", () => {
    const error = (r: v1.ServerReflectionRequest) => reflector.answer(r, new Set());
    expect(error(request({ case: "fileByFilename", value: "nope.proto" }))).toMatchObject({
      case: "errorResponse",
      value: { errorCode: Code.NotFound },
    });
    expect(error(request({ case: "fileContainingSymbol", value: "tally.budget.v1.Nope" }))).toMatchObject({
      case: "errorResponse",
      value: { errorCode: Code.NotFound },
    });
    expect(
      error(
        request({
          case: "fileContainingExtension",
          value: create(v1.ExtensionRequestSchema, { containingType: "tally.budget.v1.ProjectCost", extensionNumber: 100 }),
        }),
      ),
    ).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
    expect(error(request({ case: "allExtensionNumbersOfType", value: "tally.budget.v1.Nope" }))).toMatchObject({
      case: "errorResponse",
      value: { errorCode: Code.NotFound },
    });
    expect(error(request({ case: undefined }))).toMatchObject({ case: "errorResponse", value: { errorCode: Code.InvalidArgument } });
  });

  it("lists no extension numbers for a known message (Tally declares no extensions)", () => {
    expect(reflector.answer(request({ case: "allExtensionNumbersOfType", value: "tally.budget.v1.ProjectCost" }), new Set())).toEqual({
      case: "allExtensionNumbersResponse",
      value: { baseTypeName: "tally.budget.v1.ProjectCost", extensionNumber: [] },
    });
  });

  it(`ends a stream with RESOURCE_EXHAUSTED after ${reflectionRequestsPerStreamMax} requests`, async () => {
    const handler = new ServerReflectionV1Handler(reflector, new LifecycleGate());
    async function* requests() {
      for (let i = 0; i <= reflectionRequestsPerStreamMax; i++) yield request({ case: "listServices", value: "" });
    }
    const ctx = createHandlerContext({
      service: v1.ServerReflection,
      method: v1.ServerReflection.method.serverReflectionInfo,
      protocolName: "in-process",
      requestMethod: "POST",
      url: "in-process://x",
    });
    let answered = 0;
    const error = await (async () => {
      for await (const _ of handler.serverReflectionInfo(requests(), ctx)) answered++;
    })().catch((e: unknown) => ConnectError.from(e));
    expect(answered).toBe(reflectionRequestsPerStreamMax);
    expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
  });
});

describe("depth 2: routes in memory", () => {
  it("ends an open reflection stream when the server starts draining", async () => {
    const init = await initORM("sqlite::memory:");
    try {
      const gate = new LifecycleGate();
      const ledger = new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 8, queueDepthMax: 64 }));
      const client = createClient(v1.ServerReflection, createRouterTransport(tallyRoutes(ledger, gate)));
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      async function* requests() {
        yield { messageRequest: { case: "listServices" as const, value: "" } };
        await held; // the client keeps its side open
      }
      const responses: string[] = [];
      for await (const response of client.serverReflectionInfo(requests())) {
        responses.push(response.messageResponse.case ?? "none");
        gate.startDraining();
      }
      release();
      expect(responses).toEqual(["listServicesResponse"]);
    } finally {
      await init.store.close();
    }
  });
});

describe("depth 3: the real server", () => {
  let server: TallyServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  for (const [version, service] of [
    ["v1", v1.ServerReflection],
    ["v1alpha", v1alpha.ServerReflection],
  ] as const) {
    it(`answers grpc.reflection.${version} over gRPC on the same port`, async () => {
      const client = createClient(service as typeof v1.ServerReflection, createGrpcTransport({ baseUrl: server.url }));
      async function* requests() {
        yield { host: "localhost", messageRequest: { case: "listServices" as const, value: "*" } };
        yield { messageRequest: { case: "fileContainingSymbol" as const, value: "tally.budget.v1.BudgetService" } };
      }
      const responses = [];
      for await (const response of client.serverReflectionInfo(requests())) responses.push(response);
      expect(responses[0]?.validHost).toBe("localhost");
      expect(responses[0]?.messageResponse).toMatchObject({ case: "listServicesResponse" });
      const names = (responses[0]!.messageResponse.value as v1.ListServiceResponse).service.map((s) => s.name);
      expect(names).toEqual([
        "tally.budget.v1.BudgetService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]);
      const files = (responses[1]!.messageResponse.value as v1.FileDescriptorResponse).fileDescriptorProto.map(
        (b) => fromBinary(FileDescriptorProtoSchema, b).name,
      );
      expect(files).toEqual(budgetFiles);
    });
  }

  it("grpcurl lists and describes the services and calls BudgetService with no .proto files", async () => {
    const address = server.url.replace("http://", "");
    const list = await runTool(tools.grpcurl, ["-plaintext", address, "list"]);
    expect(list.code, list.output).toBe(0);
    expect(list.stdout.trim().split("\n")).toEqual([
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "tally.budget.v1.BudgetService",
    ]);

    const describe = await runTool(tools.grpcurl, ["-plaintext", address, "describe", "tally.budget.v1.RecordCostRequest"]);
    expect(describe.code, describe.output).toBe(0);
    expect(describe.stdout).toContain("string request_id = 7;");
    // The proto's comments travel with the descriptors (source info): the
    // message's and each field's documentation, as written in budget.proto.
    expect(describe.stdout).toContain("// RecordCostRequest describes one LLM call whose cost is to be recorded.");
    expect(describe.stdout).toMatch(
      /\/\/ Client-chosen idempotency key, unique within the project[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n\s*string request_id = 7;/,
    );
    const method = await runTool(tools.grpcurl, ["-plaintext", address, "describe", "tally.budget.v1.BudgetService.CheckBudget"]);
    expect(method.stdout).toContain("// CheckBudget tells whether a project may spend estimated_cost_nanos more.");

    const recorded = await runTool(tools.grpcurl, [
      "-plaintext",
      "-d",
      '{"projectId":"grpcurl","costNanos":"250","requestId":"g1"}',
      address,
      "tally.budget.v1.BudgetService/RecordCost",
    ]);
    expect(recorded.code, recorded.output).toBe(0);
    expect(JSON.parse(recorded.stdout).projectCost).toMatchObject({ projectId: "grpcurl", totalCostNanos: "250", recordCount: "1" });

    const health = await runTool(tools.grpcurl, ["-plaintext", address, "grpc.health.v1.Health/Check"]);
    expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });

    const invalid = await runTool(tools.grpcurl, [
      "-plaintext",
      "-d",
      '{"projectId":""}',
      address,
      "tally.budget.v1.BudgetService/GetProjectCost",
    ]);
    expect(invalid.code).not.toBe(0);
    expect(invalid.stderr).toMatch(/Code: InvalidArgument/);
  });

  it("buf curl calls BudgetService with no --schema (reflection), over Connect and gRPC", async () => {
    const url = `${server.url}/tally.budget.v1.BudgetService`;
    await runTool(tools.buf, [
      "curl",
      "--http2-prior-knowledge",
      `${url}/RecordCost`,
      "-d",
      '{"projectId":"demo","costNanos":"1500000000","requestId":"b1"}',
    ]);
    for (const protocol of ["connect", "grpc"]) {
      const read = await runTool(tools.buf, [
        "curl",
        "--protocol",
        protocol,
        "--http2-prior-knowledge",
        `${url}/GetProjectCost`,
        "-d",
        '{"projectId":"demo"}',
      ]);
      expect(read.code, read.output).toBe(0);
      expect(JSON.parse(read.stdout).projectCost).toMatchObject({ projectId: "demo", totalCostNanos: "1500000000", recordCount: "1" });
    }
    const services = await runTool(tools.buf, ["curl", "--list-services", "--http2-prior-knowledge", server.url]);
    expect(services.code, services.output).toBe(0);
    expect(services.stdout).toContain("tally.budget.v1.BudgetService");
    const methods = await runTool(tools.buf, ["curl", "--list-methods", "--http2-prior-knowledge", server.url]);
    expect(methods.stdout).toContain("tally.budget.v1.BudgetService/CheckBudget");
  });
});

describe("with API keys configured", () => {
  it("reflection and health need no key (public), the budget calls do", async () => {
    const server = await startTestServer({ keysFile: writeKeysFile([{ id: "ops", role: "admin", key: generateApiKey() }]) });
    try {
      const address = server.url.replace("http://", "");
      const list = await runTool(tools.grpcurl, ["-plaintext", address, "list"]);
      expect(list.code, list.output).toBe(0);
      expect(list.stdout).toContain("tally.budget.v1.BudgetService");
      const health = await runTool(tools.grpcurl, ["-plaintext", address, "grpc.health.v1.Health/List"]);
      expect(health.code, health.output).toBe(0);
      expect(JSON.parse(health.stdout).statuses[""]).toEqual({ status: "SERVING" });
      const read = await runTool(tools.buf, [
        "curl",
        "--http2-prior-knowledge",
        `${server.url}/tally.budget.v1.BudgetService/GetProjectCost`,
        "-d",
        '{"projectId":"demo"}',
      ]);
      expect(read.code).not.toBe(0);
      expect(read.output).toMatch(/unauthenticated/);
    } finally {
      await server.close();
    }
  });
});
