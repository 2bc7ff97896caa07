// The Connect services Tally serves, registered in one place: used by the real
// server and by in-memory transports (createRouterTransport) alike.
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/ts/grpc/health/v1/health_pb.ts";
import { ServerReflection as ServerReflectionV1 } from "../../gen/ts/grpc/reflection/v1/reflection_pb.ts";
import { ServerReflection as ServerReflectionV1Alpha } from "../../gen/ts/grpc/reflection/v1alpha/reflection_pb.ts";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { Ledger } from "../ledger/ledger.ts";
import { BudgetServiceHandler } from "./budget-service.ts";
import { withErrorMapping } from "./errors.ts";
import { alwaysServing, HealthHandler, type ServingState } from "./health.ts";
import { Reflector, ServerReflectionV1AlphaHandler, ServerReflectionV1Handler } from "./reflection.ts";

/** `state` tells health checking (and the long-lived streams) when the server
 * drains; the real server passes its LifecycleGate. */
export function tallyRoutes(ledger: Ledger, state: ServingState = alwaysServing) {
  const handler = withErrorMapping(BudgetService, new BudgetServiceHandler(ledger));
  // Every service below is listed by reflection and known to health checking.
  const services = [BudgetService, Health, ServerReflectionV1, ServerReflectionV1Alpha];
  const reflector = new Reflector(services);
  return (router: ConnectRouter) => {
    router.service(BudgetService, handler);
    router.service(
      Health,
      new HealthHandler(
        state,
        services.map((s) => s.typeName),
      ),
    );
    router.service(ServerReflectionV1, new ServerReflectionV1Handler(reflector, state));
    router.service(ServerReflectionV1Alpha, new ServerReflectionV1AlphaHandler(reflector, state));
  };
}
