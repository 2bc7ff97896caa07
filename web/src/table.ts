// The projects table and the totals above it. Every amount is shown rounded to
// cents for reading, with the exact amount in the cell's tooltip (title) and
// data-nanos; every set window (lifetime, today, this month) has its own
// cells, the binding one (ListProjects' decided_by: what refuses first) is
// named in its own column and marked, and the thresholds spend has reached
// are listed. Projects of a tree of budgets sit under their parent, indented,
// and fold (./tree.ts).
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { BudgetWindow, type LimitStatus, type ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { formatAmount, formatAmountRounded, formatBasisPoints, formatTime } from "./format.ts";
import type { TreeRow } from "./tree.ts";
import type { TreeData } from "./tree-data.ts";

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

/** The project cell: indented by its depth in its tree of budgets, with a
 * fold button when it has listed children. */
function projectCell(row: HTMLTableRowElement, t: TreeRow): void {
  const p = t.project;
  const td = cell(row, "", { "data-field": "project", "data-depth": String(t.depth) });
  td.style.paddingLeft = `${0.5 + t.depth * 1.25}em`;
  if (t.children > 0) {
    const fold = document.createElement("button");
    fold.type = "button";
    fold.className = "fold";
    fold.dataset.toggle = p.projectId;
    fold.textContent = t.collapsed ? "▸" : "▾";
    fold.setAttribute("aria-expanded", String(!t.collapsed));
    fold.title = `${t.collapsed ? "show" : "hide"} its ${t.children} child project${t.children === 1 ? "" : "s"}`;
    td.append(fold, " ");
  }
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = p.archived ? `${p.projectId} (archived)` : p.projectId;
  td.append(name);
  const parent = p.budget?.parentId ?? "";
  if (parent !== "") td.dataset.parent = parent;
  if (t.unlistedParent !== "") {
    const note = document.createElement("small");
    note.className = "unlisted-parent";
    note.textContent = ` (${t.unlistedNote})`;
    td.append(note);
  }
  if (t.children > 0) td.title = "rolled up: its own calls and its child projects'";
}

/** A parent's own calls (GetProjectCost.own_cost, read by ./tree-data.ts):
 * Spent is rolled up, this is the part it spent itself. A project without
 * listed children has no split to show. */
function ownCell(row: HTMLTableRowElement, t: TreeRow, tree: Pick<TreeData, "ownNanos" | "ownUnread">, currency: string): void {
  const own = tree.ownNanos.get(t.project.projectId);
  if (t.children > 0 && own !== undefined) amountCell(row, "own", own, currency);
  else if (t.children > 0 && tree.ownUnread.has(t.project.projectId))
    cell(row, "…", { class: "num", "data-field": "own", title: "not read this time: more parents listed than the page reads at once" });
  else cell(row, "—", { class: "num", "data-field": "own", title: "no child project listed: Spent is what it spent" });
}

export function renderRows(
  body: HTMLTableSectionElement,
  rows: readonly TreeRow[],
  selected: string,
  showReserved: boolean,
  /** The Own column, shown only when some listed project has a listed child. */
  tree: Pick<TreeData, "ownNanos" | "ownUnread"> | null,
): void {
  body.replaceChildren();
  for (const t of rows) {
    const p = t.project;
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
    projectCell(row, t);
    amountCell(row, "spent", cost?.totalCostNanos ?? 0n, currency);
    if (tree !== null) ownCell(row, t, tree, currency);
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

/** `counted`: whether a project's amounts add to the totals (a child's are
 * already in its listed parent's rolled-up figures). */
export function totalsOf(projects: readonly ProjectSummary[], counted: (p: ProjectSummary) => boolean = () => true): Totals {
  const totals: Totals = { projects: projects.length, blocked: 0, alerting: 0, byCurrency: new Map() };
  for (const p of projects) {
    if (p.limits.some((l) => l.window === p.decidedBy && !l.allowed)) totals.blocked++;
    if (p.thresholdsReached.length > 0) totals.alerting++;
    if (!counted(p)) continue;
    const currency = p.budget?.currency ?? "USD";
    let sums = totals.byCurrency.get(currency);
    if (sums === undefined) {
      sums = { spentNanos: 0n, reservedNanos: 0n, limitNanos: 0n };
      totals.byCurrency.set(currency, sums);
    }
    sums.spentNanos += p.cost?.totalCostNanos ?? 0n;
    sums.reservedNanos += p.cost?.reservedNanos ?? 0n;
    sums.limitNanos += p.budget?.limitNanos ?? 0n;
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
