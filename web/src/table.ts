// The projects table and the totals above it. Every amount is shown rounded to
// cents for reading, with the exact amount in the cell's tooltip (title) and
// data-nanos; every set window (lifetime, today, this month) has its own
// cells, the binding one (ListProjects' decided_by: what refuses first) is
// named in its own column and marked, and the thresholds spend has reached
// are listed.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { BudgetWindow, type LimitStatus, type ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { formatAmount, formatAmountRounded, formatBasisPoints, formatTime } from "./format.ts";

export const windowName: Record<BudgetWindow, string> = {
  [BudgetWindow.UNSPECIFIED]: "none",
  [BudgetWindow.LIFETIME]: "lifetime",
  [BudgetWindow.DAY]: "day",
  [BudgetWindow.MONTH]: "month",
  [BudgetWindow.ROLLING_MINUTE]: "per minute",
};

function cell(row: HTMLTableRowElement, text: string, attrs: Record<string, string> = {}): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = text;
  for (const [key, value] of Object.entries(attrs)) td.setAttribute(key, value);
  return td;
}

/** An amount cell: rounded text, exact amount on hover and in data-nanos. */
function amountCell(
  row: HTMLTableRowElement,
  field: string,
  nanos: bigint,
  currency: string,
  extra: Record<string, string> = {},
): HTMLTableCellElement {
  return cell(row, `${formatAmountRounded(nanos)} ${currency}`, {
    class: "num",
    "data-field": field,
    "data-nanos": String(nanos),
    title: `${formatAmount(nanos)} ${currency}`,
    ...extra,
  });
}

/** A bar under a share of a limit: blue, amber from 80 %, red from 100 %. */
function usedBar(td: HTMLTableCellElement, bp: bigint): void {
  const bar = document.createElement("span");
  bar.className = bp >= 10_000n ? "bar over" : bp >= 8_000n ? "bar warn" : "bar";
  bar.style.width = `${Number(bp > 10_000n ? 10_000n : bp) / 100}%`;
  td.prepend(bar);
}

/** One calendar window's cell: "1.20 / 2.00 · 60.00 %" (spent / limit, in the
 * project's currency, shown in Spent), or "—" when unset. */
function windowCell(row: HTMLTableRowElement, field: string, limit: LimitStatus | undefined, currency: string, binding: boolean): void {
  if (limit === undefined) {
    cell(row, "—", { class: "num used", "data-field": field });
    return;
  }
  const td = cell(
    row,
    `${formatAmountRounded(limit.spentNanos)} / ${formatAmountRounded(limit.limitNanos)} · ${formatBasisPoints(limit.usedBasisPoints)}`,
    {
      class: `num used${binding ? " binding" : ""}${limit.allowed ? "" : " refusing"}`,
      "data-field": field,
      "data-period": limit.period,
      "data-spent-nanos": String(limit.spentNanos),
      "data-limit-nanos": String(limit.limitNanos),
      "data-basis-points": String(limit.usedBasisPoints),
      title: `${limit.period}: ${formatAmount(limit.spentNanos)} of ${formatAmount(limit.limitNanos)} ${currency} spent, ${formatAmount(limit.remainingNanos)} ${currency} left after holds`,
    },
  );
  usedBar(td, limit.usedBasisPoints);
}

export function renderRows(
  body: HTMLTableSectionElement,
  projects: readonly ProjectSummary[],
  selected: string,
  showReserved: boolean,
): void {
  body.replaceChildren();
  for (const p of projects) {
    const cost = p.cost;
    const budget = p.budget;
    const currency = budget?.currency ?? "USD";
    const row = body.insertRow();
    row.dataset.project = p.projectId;
    row.tabIndex = 0;
    if (p.projectId === selected) row.classList.add("selected");
    if (p.archived) row.classList.add("archived");
    const binding = p.limits.find((l) => l.window === p.decidedBy);
    if (binding !== undefined && !binding.allowed) row.classList.add("blocked");
    cell(row, p.archived ? `${p.projectId} (archived)` : p.projectId, { "data-field": "project" });
    amountCell(row, "spent", cost?.totalCostNanos ?? 0n, currency);
    if (showReserved) amountCell(row, "reserved", cost?.reservedNanos ?? 0n, currency);
    // The limit that refuses first (ListProjects lists it first), with its share used.
    cell(
      row,
      binding === undefined
        ? "—"
        : `${binding.allowed ? "" : "✕ "}${windowName[binding.window]} ${formatBasisPoints(binding.usedBasisPoints)}`,
      {
        "data-field": "binding",
        title:
          binding === undefined
            ? "no limit set"
            : binding.allowed
              ? `binds first: ${formatAmount(binding.remainingNanos)} ${currency} left`
              : `refusing: CheckBudget says no (${windowName[binding.window]} limit)`,
        "data-window": binding === undefined ? "" : (windowName[binding.window] ?? ""),
      },
    );
    const limit = budget?.limitNanos ?? 0n;
    if (limit > 0n) amountCell(row, "limit", limit, currency);
    else cell(row, "no limit", { class: "num", "data-field": "limit", "data-nanos": "0" });
    const used = cell(row, limit > 0n ? formatBasisPoints(p.limitUsedBasisPoints) : "—", {
      class: `num used${binding?.window === BudgetWindow.LIFETIME ? " binding" : ""}`,
      "data-field": "used",
      "data-basis-points": String(p.limitUsedBasisPoints),
    });
    if (limit > 0n) usedBar(used, p.limitUsedBasisPoints);
    for (const [field, window] of [
      ["day", BudgetWindow.DAY],
      ["month", BudgetWindow.MONTH],
    ] as const) {
      windowCell(
        row,
        field,
        p.limits.find((l) => l.window === window),
        currency,
        binding?.window === window,
      );
    }
    cell(
      row,
      p.thresholdsReached.length === 0
        ? "—"
        : p.thresholdsReached.map((t) => `${windowName[t.window]} ${t.thresholdBps / 100} %`).join(", "),
      { "data-field": "reached" },
    );
    cell(row, String(cost?.recordCount ?? 0n), { class: "num", "data-field": "records" });
    cell(row, cost?.updatedAt ? formatTime(timestampMs(cost.updatedAt)) : "—", { "data-field": "updated" });
  }
}

export interface Totals {
  projects: number;
  /** Refused by some limit right now (the binding limit refuses). */
  blocked: number;
  /** Spend has reached an alert threshold (or exhaustion) of some limit. */
  alerting: number;
  /** Per currency, exact. */
  byCurrency: Map<string, { spentNanos: bigint; reservedNanos: bigint; limitNanos: bigint }>;
}

export function totalsOf(projects: readonly ProjectSummary[]): Totals {
  const totals: Totals = { projects: projects.length, blocked: 0, alerting: 0, byCurrency: new Map() };
  for (const p of projects) {
    const currency = p.budget?.currency ?? "USD";
    let sums = totals.byCurrency.get(currency);
    if (sums === undefined) {
      sums = { spentNanos: 0n, reservedNanos: 0n, limitNanos: 0n };
      totals.byCurrency.set(currency, sums);
    }
    sums.spentNanos += p.cost?.totalCostNanos ?? 0n;
    sums.reservedNanos += p.cost?.reservedNanos ?? 0n;
    sums.limitNanos += p.budget?.limitNanos ?? 0n;
    if (p.limits.some((l) => l.window === p.decidedBy && !l.allowed)) totals.blocked++;
    if (p.thresholdsReached.length > 0) totals.alerting++;
  }
  return totals;
}

/** The totals line: one figure per currency (amounts of different currencies never add up). */
export function renderTotals(container: HTMLElement, totals: Totals, of: number): void {
  container.replaceChildren();
  const item = (label: string, value: string, attrs: Record<string, string>) => {
    const div = document.createElement("div");
    div.className = "total";
    for (const [key, v] of Object.entries(attrs)) div.setAttribute(key, v);
    const strong = document.createElement("strong");
    strong.textContent = value;
    div.append(`${label} `, strong);
    container.append(div);
  };
  item("Projects", totals.projects === of ? String(of) : `${totals.projects} of ${of}`, { "data-total": "projects" });
  const currencies = [...totals.byCurrency.keys()].sort();
  for (const currency of currencies) {
    const sums = totals.byCurrency.get(currency)!;
    item(`Spent (${currency})`, formatAmountRounded(sums.spentNanos), {
      "data-total": `spent-${currency}`,
      "data-nanos": String(sums.spentNanos),
      title: `${formatAmount(sums.spentNanos)} ${currency}`,
    });
    item(`Reserved (${currency})`, formatAmountRounded(sums.reservedNanos), {
      "data-total": `reserved-${currency}`,
      "data-nanos": String(sums.reservedNanos),
      title: `${formatAmount(sums.reservedNanos)} ${currency}`,
    });
  }
  item("Blocked now", String(totals.blocked), { "data-total": "blocked" });
  item("At an alert", String(totals.alerting), { "data-total": "alerting" });
}
