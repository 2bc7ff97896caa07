// Metrics of the price catalog (issue 17): how many recorded calls the
// catalog priced, and for reported costs that had a catalog price, both sums,
// so the drift between what agents report and the catalog is visible
// (reported / catalog). Counted from RecordCost answers, new records only.
import { Counter, type Registry } from "prom-client";
import { CostSource, type RecordCostRequest, type RecordCostResponse } from "../../gen/ts/tally/budget/v1/budget_pb.ts";

export class PricingMetrics {
  readonly #records: Counter<"cost_source" | "catalog_price">;
  readonly #reported: Counter;
  readonly #catalog: Counter;

  constructor(registry: Registry) {
    this.#records = new Counter({
      name: "tally_cost_records_total",
      help: "Recorded calls (duplicates not counted), by cost_source (reported, catalog) and whether the catalog had a price for them (catalog_price yes/no). Reported calls without a price are not checked against any catalog.",
      labelNames: ["cost_source", "catalog_price"],
      registers: [registry],
    });
    for (const source of ["reported", "catalog"])
      for (const priced of ["yes", "no"])
        if (!(source === "catalog" && priced === "no")) this.#records.inc({ cost_source: source, catalog_price: priced }, 0);
    this.#reported = new Counter({
      name: "tally_reported_cost_with_catalog_price_nanos_total",
      help: "Sum of reported cost_nanos of the reported calls that had a catalog price (compare with tally_catalog_cost_of_reported_nanos_total: their ratio is the drift). Float: exact to 2^53 nanos.",
      registers: [registry],
    });
    this.#catalog = new Counter({
      name: "tally_catalog_cost_of_reported_nanos_total",
      help: "Sum of the catalog's price of those same reported calls.",
      registers: [registry],
    });
  }

  /** Called with every RecordCost request and its answer. */
  observe(req: RecordCostRequest, res: RecordCostResponse): void {
    if (res.duplicate) return;
    const source = req.costSource === CostSource.CATALOG ? "catalog" : "reported";
    const priced = res.catalogCostNanos !== undefined;
    this.#records.inc({ cost_source: source, catalog_price: priced ? "yes" : "no" });
    if (source === "reported" && priced) {
      this.#reported.inc(Number(res.costNanos));
      this.#catalog.inc(Number(res.catalogCostNanos));
    }
  }
}
