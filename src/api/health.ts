// gRPC health checking (grpc.health.v1.Health) on Connect, so load balancers,
// Kubernetes gRPC probes and grpc_health_probe can ask whether Tally takes
// calls. The server is SERVING until it starts draining (SIGTERM), then
// NOT_SERVING: a probe sees that before connections close, and open Watch
// streams get the change and end, so they never hold up shutdown.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthCheckResponseSchema,
  type HealthListResponse,
  HealthListResponseSchema,
} from "../../gen/ts/grpc/health/v1/health_pb.ts";

/** What health reports on: whether the server has started draining. The
 * LifecycleGate (src/transport/lifecycle-gate.ts) is one; in-memory routes use `alwaysServing`. */
export interface ServingState {
  readonly draining: boolean;
  /** Aborted when draining starts. */
  readonly drainingSignal: AbortSignal;
}

/** A server that never drains (routes behind an in-memory transport). */
export const alwaysServing: ServingState = { draining: false, drainingSignal: new AbortController().signal };

export class HealthHandler implements ServiceImpl<typeof Health> {
  readonly #state: ServingState;
  readonly #services: ReadonlySet<string>;

  /** `services`: the fully-qualified names of the services Tally serves; the
   * empty name asks about the server as a whole. */
  constructor(state: ServingState, services: Iterable<string>) {
    this.#state = state;
    this.#services = new Set(services);
  }

  #status(): ServingStatus {
    return this.#state.draining ? ServingStatus.NOT_SERVING : ServingStatus.SERVING;
  }

  #known(service: string): boolean {
    return service === "" || this.#services.has(service);
  }

  check(req: HealthCheckRequest): HealthCheckResponse {
    if (!this.#known(req.service)) {
      throw new ConnectError(
        `unknown service "${req.service}": Tally serves ${[...this.#services].join(", ")} (or "" for the whole server)`,
        Code.NotFound,
      );
    }
    return create(HealthCheckResponseSchema, { status: this.#status() });
  }

  /** Sends the current status at once, and NOT_SERVING when draining starts;
   * then the stream ends (the server is going away). An unknown service gets
   * SERVICE_UNKNOWN and the stream stays open, as the protocol asks. */
  async *watch(req: HealthCheckRequest, ctx: HandlerContext): AsyncGenerator<HealthCheckResponse> {
    const known = this.#known(req.service);
    yield create(HealthCheckResponseSchema, { status: known ? this.#status() : ServingStatus.SERVICE_UNKNOWN });
    if (this.#state.draining) return;
    await untilEither(this.#state.drainingSignal, ctx.signal);
    if (known && this.#state.draining) yield create(HealthCheckResponseSchema, { status: ServingStatus.NOT_SERVING });
  }

  list(): HealthListResponse {
    const status = this.#status();
    const statuses: Record<string, HealthCheckResponse> = { "": create(HealthCheckResponseSchema, { status }) };
    for (const service of this.#services) statuses[service] = create(HealthCheckResponseSchema, { status });
    return create(HealthListResponseSchema, { statuses });
  }
}

/** Resolves when either signal aborts. A signal of our own per call, so
 * listeners never pile up on the server-wide draining signal. */
function untilEither(a: AbortSignal, b: AbortSignal): Promise<void> {
  const either = AbortSignal.any([a, b]);
  if (either.aborted) return Promise.resolve();
  return new Promise((resolve) => either.addEventListener("abort", () => resolve(), { once: true }));
}
