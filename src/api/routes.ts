// The Connect services Tally serves, registered in one place: used by the real
// server and by in-memory transports (createRouterTransport) alike.
import type { ConnectRouter } from "@connectrpc/connect";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { Ledger } from "../ledger/ledger.ts";
import { BudgetServiceHandler } from "./budget-service.ts";

export function tallyRoutes(ledger: Ledger) {
  const handler = new BudgetServiceHandler(ledger);
  return (router: ConnectRouter) => {
    router.service(BudgetService, handler);
  };
}
