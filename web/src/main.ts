// Tally's dashboard: a read-only page that calls Tally from the browser with
// connect-web (the Connect protocol, JSON over HTTP/1.1 or HTTP/2 fetch), using
// the same generated code as every other TypeScript client.
//
// Projects come from ListProjects (largest spend first, a bounded number of
// pages); the table sorts in the page. For the selected project the chart shows
// spend over time from the ledger itself (ListCostRecords, whose records carry
// the running total): the most recent window that fits a few pages (30 days
// when it can), then only the new records on each refresh (./history.ts).
//
// API keys: the page's files are public, its data is not. When Tally answers
// UNAUTHENTICATED (or PERMISSION_DENIED: ListProjects needs an admin key) the
// page shows nothing but a key entry; the key is kept in sessionStorage (this
// tab only, gone when it closes, never in the URL) and sent by an interceptor
// as "Authorization: Bearer <key>" on every call. Against an open Tally (no
// keys, loopback only) it never asks.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  BreakdownDimension,
  BudgetService,
  BudgetWindow,
  ProjectCostSchema,
  ProjectOrder,
  type ProjectCost,
  type ProjectSummary,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { renderChart } from "./chart.ts";
import { renderModels } from "./models.ts";
import { formatAmount, formatTime } from "./format.ts";
import { loadHistory, pointsMax, updateHistory, windowText, type History } from "./history.ts";
import { renderRemoval, wireRemoval } from "./removal.ts";
import { renderRows, renderTotals, totalsOf } from "./table.ts";
import { countsInTotals, renderChildren, treeRows } from "./tree.ts";
import { loadTreeData, type OwnCostCache, type TreeData } from "./tree-data.ts";
import "./style.css";

const pageSize = 500;
/** At most this many projects in the table (the biggest spenders first). */
const pagesMax = 10;
const refreshMs = 5_000;

const keyStorageName = "tally.apiKey";
function storedKey(): string | null {
  try {
    return sessionStorage.getItem(keyStorageName);
  } catch {
    return null; // storage disabled: the key must be entered again
  }
}
function storeKey(key: string | null): void {
  try {
    if (key === null) sessionStorage.removeItem(keyStorageName);
    else sessionStorage.setItem(keyStorageName, key);
  } catch {
    // storage disabled
  }
}

/** Sends the entered key, if any, on every call. */
const withKey: Interceptor = (next) => (req) => {
  const key = storedKey();
  if (key !== null) req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};

const client = createClient(BudgetService, createConnectTransport({ baseUrl: location.origin, interceptors: [withKey] }));

// Active holds (reserved_nanos): ListProjects reports them as GetProjectCost does.
const hasReserved = ProjectCostSchema.fields.some((field) => field.localName === "reservedNanos");
const reservedOf = (cost: ProjectCost | undefined): bigint => cost?.reservedNanos ?? 0n;

type SortKey = "project" | "spent" | "reserved" | "binding" | "limit" | "used" | "day" | "month" | "records" | "updated";
const state = {
  projects: [] as ProjectSummary[],
  /** Only projects whose id contains this (case-insensitive), and only blocked ones when set. */
  filter: { text: "", blockedOnly: false },
  /** List archived projects too (ListProjects include_archived). */
  showArchived: false,
  sort: { key: "spent" as SortKey, descending: true },
  selected: decodeURIComponent(new URLSearchParams(location.hash.slice(1)).get("project") ?? ""),
  /** The selected project's spend over time (null until loaded). */
  history: null as History | null,
  /** Set when Tally refused the key (or its absence): polling waits for a key. */
  needsKey: false,
  /** Parents whose children are folded away. */
  collapsed: new Set<string>(),
  /** Listed parents' own calls and the chains above unlisted parents (./tree-data.ts). */
  tree: { ownNanos: new Map(), ownUnread: new Set(), unlisted: new Map() } as TreeData,
};
const ownCostCache: OwnCostCache = new Map();

const $ = <T extends HTMLElement>(selector: string) => document.querySelector(selector) as T;

async function loadProjects(): Promise<{ projects: ProjectSummary[]; truncated: boolean }> {
  const projects: ProjectSummary[] = [];
  let pageToken = "";
  for (let page = 0; page < pagesMax; page++) {
    const res = await client.listProjects({ pageSize, pageToken, order: ProjectOrder.SPENT_DESC, includeArchived: state.showArchived });
    projects.push(...res.projects);
    if (res.nextPageToken === "") return { projects, truncated: false };
    pageToken = res.nextPageToken;
  }
  return { projects, truncated: true };
}

function sortValue(p: ProjectSummary, key: SortKey): bigint | string {
  switch (key) {
    case "project":
      return p.projectId;
    case "spent":
      return p.cost?.totalCostNanos ?? 0n;
    case "reserved":
      return reservedOf(p.cost);
    case "limit":
      return p.budget?.limitNanos ?? 0n;
    case "used":
      return p.limitUsedBasisPoints;
    case "binding":
      // Refusing first, then by the share used of the binding limit.
      return binding(p) === undefined ? -1n : (binding(p)!.allowed ? 0n : 1n << 62n) + binding(p)!.usedBasisPoints;
    case "day":
      return p.limits.find((l) => l.window === BudgetWindow.DAY)?.usedBasisPoints ?? -1n;
    case "month":
      return p.limits.find((l) => l.window === BudgetWindow.MONTH)?.usedBasisPoints ?? -1n;
    case "records":
      return p.cost?.recordCount ?? 0n;
    case "updated":
      return p.cost?.updatedAt ? BigInt(timestampMs(p.cost.updatedAt)) : -1n;
  }
}

const binding = (p: ProjectSummary) => p.limits.find((l) => l.window === p.decidedBy);

function matches(p: ProjectSummary): boolean {
  return (
    p.projectId.toLowerCase().includes(state.filter.text.toLowerCase()) && (!state.filter.blockedOnly || binding(p)?.allowed === false)
  );
}

function compare(a: ProjectSummary, b: ProjectSummary): number {
  const { key, descending } = state.sort;
  const [x, y] = [sortValue(a, key), sortValue(b, key)];
  const order = x < y ? -1 : x > y ? 1 : a.projectId < b.projectId ? -1 : a.projectId > b.projectId ? 1 : 0;
  return descending && x !== y ? -order : order;
}

function renderTable(): void {
  const rows = treeRows(state.projects, matches, compare, state.collapsed, state.tree.unlisted);
  const listed = new Map(state.projects.map((p) => [p.projectId, p]));
  // A flat listing (no tree of budgets) keeps its columns as they were.
  const anyTree = state.projects.some((p) => listed.has(p.budget?.parentId ?? ""));
  $("#own-header").hidden = !anyTree;
  renderRows($<HTMLTableSectionElement>("#projects tbody"), rows, state.selected, hasReserved, anyTree ? state.tree : null);
  // Matches only (a kept ancestor is context, not a match); a child's spend
  // is already in its listed parent's.
  const counted = state.projects.filter(matches);
  const totalled = new Set(counted.map((p) => p.projectId));
  renderTotals(
    $("#totals"),
    totalsOf(counted, (p) => countsInTotals(p, listed, totalled, state.tree.unlisted)),
    state.projects.length,
  );
  for (const th of document.querySelectorAll<HTMLTableCellElement>("th[data-sort]")) {
    const active = th.dataset.sort === state.sort.key;
    th.setAttribute("aria-sort", active ? (state.sort.descending ? "descending" : "ascending") : "none");
  }
  $("#project-count").textContent =
    counted.length === state.projects.length ? `(${state.projects.length})` : `(${counted.length} of ${state.projects.length})`;
}

/** The selected project's history, loaded once and then extended by the
 * records committed since its last point, whenever GetProjectCost says the
 * totals moved past it. */
async function historyOf(projectId: string, cost: ProjectCost | undefined): Promise<History> {
  const total = cost?.totalCostNanos ?? 0n;
  const updatedAtMs = cost?.updatedAt ? timestampMs(cost.updatedAt) : null;
  let history = state.history?.projectId === projectId ? state.history : null;
  const last = history?.points[history.points.length - 1];
  const behind = history === null || last?.spentNanos !== total || (updatedAtMs !== null && updatedAtMs > history.cursorMs);
  if (history !== null && behind && !(await updateHistory((req) => client.listCostRecords(req), history))) history = null;
  history ??= await loadHistory((req) => client.listCostRecords(req), projectId, Date.now(), total);
  // A refresh for another project may have started meanwhile: keep only the selected one's.
  if (state.selected === projectId) state.history = history;
  return history;
}

async function renderDetail(): Promise<void> {
  const section = $("#detail");
  if (state.selected === "") {
    section.hidden = true;
    return;
  }
  const projectId = state.selected;
  const hasChildren = state.projects.some((p) => p.budget?.parentId === projectId);
  const [{ projectCost, ownCost, breakdowns }, { budget }] = await Promise.all([
    client.getProjectCost({
      projectId,
      breakdownBy: hasChildren ? [BreakdownDimension.MODEL, BreakdownDimension.CHILD] : [BreakdownDimension.MODEL],
    }),
    client.getProjectBudget({ projectId }),
  ]);
  const history = await historyOf(projectId, projectCost);
  if (state.selected !== projectId) return;
  // Extend the last step to now: spend stays flat until the next cost.
  const last = history.points[history.points.length - 1]!;
  const points = [...history.points, { atMs: Math.max(Date.now(), last.atMs), spentNanos: last.spentNanos }];
  const currency = budget?.currency ?? "USD";
  section.hidden = false;
  $("#detail-project").textContent = projectId;
  renderRemoval(state.projects.find((p) => p.projectId === projectId));
  $("#chart").replaceChildren(renderChart(points, budget?.limitNanos ?? 0n, currency));
  // Models are kept per project: a parent's are its own calls' only.
  $("#models")
    .querySelector("tbody")!
    .replaceWith(renderModels(breakdowns[0]?.entries ?? [], currency));
  const children = breakdowns.find((b) => b.dimension === BreakdownDimension.CHILD);
  $("#children").hidden = children === undefined;
  if (children !== undefined) {
    $("#children-note").textContent =
      `${formatAmount(projectCost?.totalCostNanos ?? 0n)} ${currency} rolled up, of which its own calls ${formatAmount(ownCost?.totalCostNanos ?? 0n)} ${currency}` +
      (budget?.parentId ? `; its parent is ${budget.parentId}.` : ".");
    $("#children-table")
      .querySelector("tbody")!
      .replaceWith(renderChildren(children.entries, projectCost?.totalCostNanos ?? 0n, currency));
  }
  $("#chart-note").textContent =
    `${formatAmount(projectCost?.totalCostNanos ?? 0n)} ${currency} spent over ${projectCost?.recordCount ?? 0n} calls. ` +
    (history.complete
      ? `The chart shows the last ${windowText(history.windowMs)} of the ledger (${history.records} costs${history.records > pointsMax ? `, the newest ${pointsMax} drawn` : ""}).`
      : `More than ${pointsMax} costs in the last ${windowText(history.windowMs)}: the chart shows the first ${pointsMax} of them, not the newest.`);
}

let refreshing = false;
/** A refresh asked for while one runs (e.g. a key was just entered) runs after it. */
let refreshAgain = false;
async function refresh(): Promise<void> {
  // Waiting for a key (the form's submit clears this first): a refresh without
  // one would only be refused again, and would replace the reason shown.
  if (state.needsKey) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  refreshAgain = false;
  const keyUsed = storedKey();
  try {
    const { projects, truncated } = await loadProjects();
    const tree = await loadTreeData(client, projects, ownCostCache);
    state.projects = projects;
    state.tree = tree;
    renderTable();
    const note = $("#truncated");
    note.hidden = !truncated;
    note.textContent = truncated ? `Showing the ${projects.length} projects with the largest spend.` : "";
    await renderDetail();
    $("#error").hidden = true;
    $("#status").textContent = `updated ${formatTime(Date.now())}`;
  } catch (error) {
    const e = ConnectError.from(error);
    if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) {
      // A key entered while this refresh ran is tried next, not thrown away.
      if (storedKey() === keyUsed) askForKey(e);
      return;
    }
    $("#error").hidden = false;
    $("#error").textContent = `Tally did not answer: ${e.code === undefined ? "" : `[${e.code}] `}${e.rawMessage}`;
    $("#status").textContent = "error";
  } finally {
    refreshing = false;
    if (refreshAgain && !state.needsKey) void refresh();
  }
}

/** Hides every number and asks for a key, saying why the last one failed. */
function askForKey(e: ConnectError): void {
  const hadKey = storedKey() !== null;
  storeKey(null);
  state.needsKey = true;
  state.projects = [];
  state.tree = { ownNanos: new Map(), ownUnread: new Set(), unlisted: new Map() };
  ownCostCache.clear();
  state.history = null;
  renderTable();
  $("#detail").hidden = true;
  $("#truncated").hidden = true;
  $("#error").hidden = true;
  $("#forget-key").hidden = true;
  $("#key-message").textContent =
    e.code === Code.PermissionDenied
      ? `That key may not list projects: the dashboard needs an admin key. (${e.rawMessage})`
      : hadKey
        ? "That key was not accepted: it may be mistyped or revoked. Enter an admin API key."
        : "This Tally needs an API key to show its data. Enter an admin API key.";
  $("#key-form").hidden = false;
  $("#status").textContent = "API key needed";
  $<HTMLInputElement>("#key-input").focus();
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("#key-input");
  const key = input.value.trim();
  if (key === "") return;
  storeKey(key);
  input.value = "";
  state.needsKey = false;
  $("#key-form").hidden = true;
  $("#forget-key").hidden = false;
  void refresh();
});
$("#forget-key").addEventListener("click", () => {
  storeKey(null);
  askForKey(new ConnectError("the key was removed from this tab", Code.Unauthenticated));
  $("#key-message").textContent = "The key was removed from this tab. Enter an admin API key to see the data again.";
});
$("#forget-key").hidden = storedKey() === null;

function select(projectId: string): void {
  state.selected = projectId;
  history.replaceState(null, "", `#project=${encodeURIComponent(projectId)}`);
  renderTable();
  void refresh();
}

$("#reserved-header").hidden = !hasReserved;
for (const th of document.querySelectorAll<HTMLTableCellElement>("th[data-sort]")) {
  th.tabIndex = 0;
  const sortBy = () => {
    const key = th.dataset.sort as SortKey;
    state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "project" };
    renderTable();
  };
  th.addEventListener("click", sortBy);
  th.addEventListener("keydown", (event) => event.key === "Enter" && sortBy());
}
$("#projects tbody").addEventListener("click", (event) => {
  const fold = (event.target as HTMLElement).closest<HTMLElement>("[data-toggle]");
  if (fold !== null) {
    const id = fold.dataset.toggle!;
    if (!state.collapsed.delete(id)) state.collapsed.add(id);
    renderTable();
    return;
  }
  const row = (event.target as HTMLElement).closest("tr");
  if (row?.dataset.project) select(row.dataset.project);
});
$("#projects tbody").addEventListener("keydown", (event) => {
  const row = (event.target as HTMLElement).closest("tr");
  if (event.key === "Enter" && row?.dataset.project) select(row.dataset.project);
});
$("#refresh").addEventListener("click", () => void refresh());
$<HTMLInputElement>("#filter").addEventListener("input", (event) => {
  state.filter.text = (event.target as HTMLInputElement).value.trim();
  renderTable();
});
$<HTMLInputElement>("#show-archived").addEventListener("change", (event) => {
  state.showArchived = (event.target as HTMLInputElement).checked;
  void refresh();
});
wireRemoval({
  client,
  selected: () => state.projects.find((p) => p.projectId === state.selected),
  changed: (deleted) => {
    if (deleted) {
      state.selected = "";
      state.history = null;
      history.replaceState(null, "", "#");
    }
    void refresh();
  },
});
$<HTMLInputElement>("#blocked-only").addEventListener("change", (event) => {
  state.filter.blockedOnly = (event.target as HTMLInputElement).checked;
  renderTable();
});
setInterval(() => {
  if ($<HTMLInputElement>("#auto-refresh").checked && !state.needsKey) void refresh();
}, refreshMs);
void refresh();
