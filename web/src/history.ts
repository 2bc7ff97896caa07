// Spend over time from the ledger (ListCostRecords), bounded. Each record
// carries the project's running total right after it (total_cost_nanos_after),
// so any slice of the ledger is a correct series on its own: nothing is summed
// from the first record, and the last point is the project's total.
//
// Bounds: at most `pagesMax` pages of `pageSize` records per load. Records come
// oldest first, so the page asks for the most recent window that fits: the last
// 30 days, else 7 days, 1 day, 1 hour, 5 minutes, 1 minute (a busy project
// costs a few more requests once, when it is selected). Later refreshes only
// fetch the records after the last one shown; the series keeps at most
// `pointsMax` points (the oldest are dropped).
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ListCostRecordsRequest, ListCostRecordsResponse } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { Point } from "./chart.ts";

export const pageSize = 1_000;
export const pagesMax = 3;
export const pointsMax = pageSize * pagesMax;
const minuteMs = 60_000;
const dayMs = 24 * 60 * minuteMs;
/** Windows tried in turn, largest first, until one fits in pagesMax pages. */
export const windowsMs = [30 * dayMs, 7 * dayMs, dayMs, 60 * minuteMs, 5 * minuteMs, minuteMs] as const;

export type ListCostRecords = (
  req: Pick<ListCostRecordsRequest, "projectId" | "pageSize" | "pageToken"> & { startTime?: ListCostRecordsRequest["startTime"] },
) => Promise<Pick<ListCostRecordsResponse, "records" | "nextPageToken">>;

export interface History {
  projectId: string;
  /** The start of the window shown. */
  fromMs: number;
  /** The window the first load fitted in (one of windowsMs). */
  windowMs: number;
  /** One point per record (record: true), after a first point at fromMs with
   * the total before the window's first record. */
  points: Point[];
  /** false when even the smallest window held more than pagesMax pages: the
   * series then stops at the last record fetched, before the newest ones. */
  complete: boolean;
  /** Records fetched (the first load and every update). */
  records: number;
  /** Where the next update starts: the commit time of the last record shown,
   * and the request ids recorded at that millisecond (already shown). */
  cursorMs: number;
  seenAtCursor: Set<string>;
}

interface Fetched {
  records: ListCostRecordsResponse["records"];
  truncated: boolean;
}

async function fetchSince(list: ListCostRecords, projectId: string, startMs: number): Promise<Fetched> {
  const records: ListCostRecordsResponse["records"] = [];
  let pageToken = "";
  for (let page = 0; page < pagesMax; page++) {
    const res = await list({ projectId, startTime: timestampFromMs(startMs), pageSize, pageToken });
    records.push(...res.records);
    if (res.nextPageToken === "") return { records, truncated: false };
    pageToken = res.nextPageToken;
  }
  return { records, truncated: true };
}

/** Loads the most recent window of the project's ledger that fits the bounds. */
export async function loadHistory(list: ListCostRecords, projectId: string, nowMs: number, totalNanos: bigint): Promise<History> {
  let fetched: Fetched = { records: [], truncated: false };
  let fromMs = nowMs;
  let windowMs: number = windowsMs[0];
  for (windowMs of windowsMs) {
    fromMs = nowMs - windowMs;
    fetched = await fetchSince(list, projectId, fromMs);
    if (!fetched.truncated) break;
  }
  const first = fetched.records[0];
  // Before the window's first record the total was its running total minus its
  // cost; with no record in the window, the total has not moved since it began.
  const startNanos = first === undefined ? totalNanos : first.totalCostNanosAfter - first.costNanos;
  // The line starts at the window's first cost (a window mostly empty would
  // squeeze every cost into its last pixels), or at the window's start without one.
  const startMs = first?.recordedAt === undefined ? fromMs : timestampMs(first.recordedAt);
  const history: History = {
    projectId,
    fromMs,
    windowMs,
    points: [{ atMs: startMs, spentNanos: startNanos }],
    complete: !fetched.truncated,
    records: 0,
    cursorMs: fromMs,
    seenAtCursor: new Set(),
  };
  append(history, fetched.records);
  return history;
}

/** "30 days", "1 hour", "5 minutes". */
export function windowText(windowMs: number): string {
  const [size, unit] =
    windowMs >= dayMs
      ? [windowMs / dayMs, "day"]
      : windowMs >= 60 * minuteMs
        ? [windowMs / (60 * minuteMs), "hour"]
        : [windowMs / minuteMs, "minute"];
  return `${size} ${unit}${size === 1 ? "" : "s"}`;
}

/** Adds the records committed since the last one shown. Returns false when
 * more than pagesMax pages arrived (the caller loads the history afresh). */
export async function updateHistory(list: ListCostRecords, history: History): Promise<boolean> {
  if (!history.complete) return false;
  const fetched = await fetchSince(list, history.projectId, history.cursorMs);
  if (fetched.truncated) return false;
  append(
    history,
    fetched.records.filter(
      (r) => !(r.recordedAt !== undefined && timestampMs(r.recordedAt) === history.cursorMs && history.seenAtCursor.has(r.requestId)),
    ),
  );
  return true;
}

function append(history: History, records: ListCostRecordsResponse["records"]): void {
  for (const r of records) {
    const atMs = r.recordedAt === undefined ? history.cursorMs : timestampMs(r.recordedAt);
    history.points.push({ atMs, spentNanos: r.totalCostNanosAfter, record: true });
    if (atMs !== history.cursorMs) history.seenAtCursor.clear();
    history.cursorMs = atMs;
    history.seenAtCursor.add(r.requestId);
    history.records++;
  }
  if (history.points.length > pointsMax) {
    // Keep the newest; the oldest kept point becomes the start of the line.
    history.points.splice(0, history.points.length - pointsMax);
    history.fromMs = history.points[0]!.atMs;
  }
}
