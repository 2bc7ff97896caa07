// gRPC server reflection (grpc.reflection.v1 and v1alpha) on Connect, so
// `grpcurl -plaintext HOST:PORT list`, `buf curl` without --schema, Postman and
// other schema-less tools can discover and call Tally with no .proto files.
//
// Which files and symbols exist comes from the generated code itself (each
// generated file embeds its FileDescriptorProto), so what reflection describes
// is exactly what the server was built with. Those embedded descriptors carry
// no comments, so the bytes served are, per file, the ones `npm run generate`
// built from the same sources with source info (gen/descriptors/tally.binpb):
// `grpcurl describe` shows the proto's documentation. A file missing there
// (or a descriptor set that does not match the compiled code, which CI's
// "gen/ is up to date" check rules out) falls back to the embedded bytes.
import { readFileSync } from "node:fs";
import { create, type DescFile, type DescMessage, type DescService, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../../gen/ts/grpc/reflection/v1/reflection_pb.ts";
import * as v1alpha from "../../gen/ts/grpc/reflection/v1alpha/reflection_pb.ts";
import { reflectionRequestsPerStreamMax } from "../limits.ts";
import type { ServingState } from "./health.ts";

/** The one request shape both API versions share (v1alpha is v1 under another package). */
type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;
/** Built by scripts/generate.sh (`buf build`, source info included). */
export const documentedDescriptorsUrl = new URL("../../gen/descriptors/tally.binpb", import.meta.url);

/** The documented descriptor of each file, by name, or an empty map when the
 * set cannot be read (reflection then serves the embedded, comment-less ones). */
export function loadDocumentedDescriptors(url: URL = documentedDescriptorsUrl): Map<string, FileDescriptorProto> {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(url);
  } catch {
    return new Map();
  }
  return new Map(fromBinary(FileDescriptorSetSchema, bytes).file.map((file) => [file.name, file]));
}

type ResponseInit =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: Array<{ name: string }> } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** Answers reflection requests about a fixed set of services and every file
 * they need (transitively). */
export class Reflector {
  readonly #services: readonly DescService[];
  /** by FileDescriptorProto name, e.g. "tally/budget/v1/budget.proto" (DescFile.name lacks the ".proto") */
  readonly #files = new Map<string, DescFile>();
  readonly #fileBySymbol = new Map<string, DescFile>();
  /** extendee full name -> field number -> file declaring the extension */
  readonly #extensions = new Map<string, Map<number, DescFile>>();
  readonly #messages = new Set<string>();
  /** The bytes served per file name: documented when a matching descriptor exists. */
  readonly #bytes = new Map<string, Uint8Array>();

  constructor(services: readonly DescService[], documented: ReadonlyMap<string, FileDescriptorProto> = loadDocumentedDescriptors()) {
    this.#services = services;
    for (const service of services) this.#addFile(service.file);
    for (const [name, file] of this.#files) {
      const doc = documented.get(name);
      // Serve the documented descriptor only if it describes the same schema
      // as the compiled one (same messages, fields, services, options).
      const same = doc !== undefined && sameSchema(doc, file.proto);
      this.#bytes.set(name, toBinary(FileDescriptorProtoSchema, same ? doc : file.proto));
    }
  }

  /** True when the named file is served with its comments. */
  documented(fileName: string): boolean {
    const bytes = this.#bytes.get(fileName);
    return bytes !== undefined && (fromBinary(FileDescriptorProtoSchema, bytes).sourceCodeInfo?.location.length ?? 0) > 0;
  }

  #addFile(file: DescFile): void {
    if (this.#files.has(file.proto.name)) return;
    this.#files.set(file.proto.name, file);
    for (const dependency of file.dependencies) this.#addFile(dependency);
    const symbol = (name: string) => this.#fileBySymbol.set(name, file);
    const addMessage = (message: DescMessage) => {
      symbol(message.typeName);
      this.#messages.add(message.typeName);
      for (const field of message.fields) symbol(`${message.typeName}.${field.name}`);
      for (const oneof of message.oneofs) symbol(`${message.typeName}.${oneof.name}`);
      for (const nested of message.nestedMessages) addMessage(nested);
      for (const nested of message.nestedEnums) addEnum(nested, message.typeName);
      for (const extension of message.nestedExtensions) addExtension(extension);
    };
    // Enum values are scoped like siblings of their enum (C++ rules).
    const addEnum = (desc: DescFile["enums"][number], scope: string) => {
      symbol(desc.typeName);
      for (const value of desc.values) symbol(scope === "" ? value.name : `${scope}.${value.name}`);
    };
    const addExtension = (extension: DescFile["extensions"][number]) => {
      symbol(extension.typeName);
      let byNumber = this.#extensions.get(extension.extendee.typeName);
      if (byNumber === undefined) this.#extensions.set(extension.extendee.typeName, (byNumber = new Map()));
      byNumber.set(extension.number, file);
    };
    for (const message of file.messages) addMessage(message);
    for (const desc of file.enums) addEnum(desc, file.proto.package);
    for (const extension of file.extensions) addExtension(extension);
    for (const service of file.services) {
      symbol(service.typeName);
      for (const method of service.methods) symbol(`${service.typeName}.${method.name}`);
    }
  }

  /** The answer to one request. `sent` holds the files already sent on this
   * stream: the requested file is always sent, its dependencies only once. */
  answer(request: Request, sent: Set<string>): ResponseInit {
    const r = request.messageRequest;
    switch (r.case) {
      case "fileByFilename":
        return this.#filesFor(this.#files.get(r.value), `no file named "${r.value}"`, sent);
      case "fileContainingSymbol":
        return this.#filesFor(this.#fileBySymbol.get(r.value), `no symbol named "${r.value}"`, sent);
      case "fileContainingExtension":
        return this.#filesFor(
          this.#extensions.get(r.value.containingType)?.get(r.value.extensionNumber),
          `no extension ${r.value.extensionNumber} of "${r.value.containingType}"`,
          sent,
        );
      case "allExtensionNumbersOfType": {
        if (!this.#messages.has(r.value)) return error(Code.NotFound, `no message type named "${r.value}"`);
        const numbers = [...(this.#extensions.get(r.value)?.keys() ?? [])].sort((a, b) => a - b);
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers } };
      }
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.#services.map((s) => ({ name: s.typeName })) } };
      default:
        return error(
          Code.InvalidArgument,
          "the request sets none of file_by_filename, file_containing_symbol, file_containing_extension, all_extension_numbers_of_type, list_services",
        );
    }
  }

  #filesFor(file: DescFile | undefined, notFound: string, sent: Set<string>): ResponseInit {
    if (file === undefined) return error(Code.NotFound, notFound);
    const out: Uint8Array[] = [];
    const visit = (f: DescFile, requested: boolean) => {
      if (!requested && sent.has(f.proto.name)) return;
      sent.add(f.proto.name);
      out.push(this.#bytes.get(f.proto.name) ?? toBinary(FileDescriptorProtoSchema, f.proto));
      for (const dependency of f.dependencies) visit(dependency, false);
    };
    visit(file, true);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  }
}

/** protoc-gen-es embeds descriptors as buf compiled them, but without source
 * info; compare everything else (as messages: field order on the wire differs). */
function sameSchema(documented: FileDescriptorProto, embedded: FileDescriptorProto): boolean {
  const strip = (file: FileDescriptorProto) => create(FileDescriptorProtoSchema, { ...file, sourceCodeInfo: undefined });
  return equals(FileDescriptorProtoSchema, strip(documented), strip(embedded));
}

function error(code: Code, message: string): ResponseInit {
  return { case: "errorResponse", value: { errorCode: code, errorMessage: message } };
}

/** The bidi stream shared by both API versions: one response per request, in
 * order. Ends when the client ends its side, or when the server starts
 * draining (so an idle stream never holds up shutdown). */
async function* serve<Req extends Request, Res>(
  reflector: Reflector,
  state: ServingState,
  requests: AsyncIterable<Req>,
  ctx: HandlerContext,
  respond: (request: Req, body: ResponseInit) => Res,
): AsyncGenerator<Res> {
  const sent = new Set<string>();
  let count = 0;
  const iterator = requests[Symbol.asyncIterator]();
  // A signal of our own per stream: listeners never pile up on the server-wide one.
  const stopSignal = AbortSignal.any([state.drainingSignal, ctx.signal]);
  const stop = new Promise<"stop">((resolve) => {
    if (stopSignal.aborted) resolve("stop");
    else stopSignal.addEventListener("abort", () => resolve("stop"), { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), stop]);
      if (next === "stop" || next.done === true) return;
      if (++count > reflectionRequestsPerStreamMax) {
        throw new ConnectError(
          `more than ${reflectionRequestsPerStreamMax} requests on one reflection stream; open a new stream`,
          Code.ResourceExhausted,
        );
      }
      yield respond(next.value, reflector.answer(next.value, sent));
    }
  } finally {
    void iterator.return?.();
  }
}

export class ServerReflectionV1Handler implements ServiceImpl<typeof v1.ServerReflection> {
  readonly #reflector: Reflector;
  readonly #state: ServingState;
  constructor(reflector: Reflector, state: ServingState) {
    this.#reflector = reflector;
    this.#state = state;
  }
  serverReflectionInfo(
    requests: AsyncIterable<v1.ServerReflectionRequest>,
    ctx: HandlerContext,
  ): AsyncIterable<v1.ServerReflectionResponse> {
    return serve(this.#reflector, this.#state, requests, ctx, (request, body) =>
      create(v1.ServerReflectionResponseSchema, {
        validHost: request.host,
        originalRequest: request,
        messageResponse: body,
      }),
    );
  }
}

export class ServerReflectionV1AlphaHandler implements ServiceImpl<typeof v1alpha.ServerReflection> {
  readonly #reflector: Reflector;
  readonly #state: ServingState;
  constructor(reflector: Reflector, state: ServingState) {
    this.#reflector = reflector;
    this.#state = state;
  }
  serverReflectionInfo(
    requests: AsyncIterable<v1alpha.ServerReflectionRequest>,
    ctx: HandlerContext,
  ): AsyncIterable<v1alpha.ServerReflectionResponse> {
    return serve(this.#reflector, this.#state, requests, ctx, (request, body) =>
      create(v1alpha.ServerReflectionResponseSchema, {
        validHost: request.host,
        originalRequest: request,
        messageResponse: body,
      }),
    );
  }
}
