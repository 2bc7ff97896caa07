// The selected project's spend by model: what was recorded and, for the calls
// the catalog could price, what the catalog says they cost (same calls on both
// sides, so the difference is the drift between agents' reports and the
// catalog). Exact amounts in the tooltip, rounded in the cell.
import type { CostBreakdownEntry } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { formatAmount, formatAmountRounded } from "./format.ts";

function cell(text: string, exact?: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  if (exact !== undefined) td.title = exact;
  return td;
}

const money = (nanos: bigint, currency: string) => cell(formatAmountRounded(nanos), `${formatAmount(nanos)} ${currency}`);

export function renderModels(entries: readonly CostBreakdownEntry[], currency: string): HTMLTableSectionElement {
  const body = document.createElement("tbody");
  for (const e of entries) {
    const row = document.createElement("tr");
    row.dataset.model = e.key;
    const priced = e.recordCount - e.unpricedRecordCount;
    row.append(
      cell(e.key === "" ? "(no model)" : e.key),
      cell(String(e.recordCount)),
      money(e.totalCostNanos, currency),
      priced === 0n ? cell("no price") : money(e.pricedCostNanos, currency),
      priced === 0n ? cell("—") : money(e.catalogCostNanos, currency),
      priced === 0n ? cell("—") : money(e.pricedCostNanos - e.catalogCostNanos, currency),
      cell(String(e.unpricedRecordCount)),
    );
    row.children[3]!.classList.add("recorded");
    row.children[4]!.classList.add("catalog");
    row.children[5]!.classList.add("drift");
    body.append(row);
  }
  return body;
}
