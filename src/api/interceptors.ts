// Cross-cutting concerns as Connect interceptors, so no handler repeats them:
// per-RPC logging. (The lifecycle gate, which refuses new calls while the
// server drains, is wire-level: src/transport/lifecycle-gate.ts.)
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { LogEvent, loggableId, type Logger } from "../log.ts";
import { principalKey, procedureOf } from "../auth/auth.ts";

/** One structured line per RPC: procedure, code, duration, project, and the id
 * of the API key that called (never the key). */
export function loggingInterceptor(logger: Logger): Interceptor {
  // The success line's constant fields (event, procedure, code) serialized once
  // per procedure, as a pino child's bindings: the line is byte for byte what
  // logger.info({ event, procedure, code: "ok", durationMs, projectId, keyId })
  // writes (bindings come right after the base fields, in this order), with
  // half the per-call field work. Bounded: one child per served procedure.
  // Level changes on `logger` would not reach the children; nothing changes a
  // logger's level after it is created.
  const completed = new Map<string, Logger>();
  const completedLogger = (procedure: string): Logger => {
    let child = completed.get(procedure);
    if (child === undefined) completed.set(procedure, (child = logger.child({ event: LogEvent.rpcCompleted, procedure, code: "ok" })));
    return child;
  };
  return (next) => async (req) => {
    const startedMs = performance.now();
    const projectId = req.stream ? undefined : loggableId((req.message as { projectId?: unknown }).projectId);
    const procedure = procedureOf(req.method);
    try {
      const res = await next(req);
      const keyId = req.contextValues.get(principalKey)?.keyId ?? undefined;
      completedLogger(procedure).info({ durationMs: elapsed(startedMs), projectId, keyId });
      return res;
    } catch (error) {
      const connectError = ConnectError.from(error);
      const keyId = req.contextValues.get(principalKey)?.keyId ?? undefined;
      const fields = {
        event: LogEvent.rpcFailed,
        procedure,
        code: codeToString(connectError.code),
        durationMs: elapsed(startedMs),
        projectId,
        keyId,
        message: connectError.rawMessage,
      };
      // Server-side failures are warnings (someone should look); bad input is info.
      if (connectError.code === Code.Internal || connectError.code === Code.Unavailable || connectError.code === Code.Unknown) {
        logger.warn({ ...fields, cause: connectError.cause instanceof Error ? connectError.cause.message : undefined });
      } else {
        logger.info(fields);
      }
      throw error;
    }
  };
}

function elapsed(startedMs: number): number {
  return Math.round((performance.now() - startedMs) * 1000) / 1000;
}
