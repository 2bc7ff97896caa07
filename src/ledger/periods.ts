// Calendar periods in a project's time zone, with nothing but Intl: the day
// key ("2026-11-27") and month key ("2026-11") that contain an instant. Window
// totals are stored under these keys, so "today" is whatever local date the
// commit's clock falls on, DST and month lengths included.
import { timeZoneDefault, timeZoneFormatterCacheMax, timeZoneLengthMax, timeZonePattern } from "../limits.ts";

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    if (formatters.size >= timeZoneFormatterCacheMax) formatters.clear();
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      calendar: "gregory",
      numberingSystem: "latn",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

export interface PeriodKeys {
  day: string;
  month: string;
}

function computeKeys(nowMs: number, timeZone: string): PeriodKeys {
  let year = "";
  let month = "";
  let day = "";
  for (const part of formatter(timeZone).formatToParts(nowMs)) {
    if (part.type === "year") year = part.value.padStart(4, "0");
    else if (part.type === "month") month = part.value;
    else if (part.type === "day") day = part.value;
  }
  if (year === "" || month === "" || day === "") throw new Error(`invariant: no date parts for ${nowMs} in ${timeZone}`);
  return { day: `${year}-${month}-${day}`, month: `${year}-${month}` };
}

const minuteMs = 60_000;
/** Per time zone, the UTC minute whose instants all share one local date. Every
 * read and write asks for the current period; Intl formatting costs several
 * microseconds, so it runs once a minute per zone instead of once a call. */
const minuteCache = new Map<string, { minute: number; keys: PeriodKeys }>();

/** The local day and month containing `nowMs` in `timeZone` (a canonical IANA name). */
export function periodKeys(nowMs: number, timeZone: string): PeriodKeys {
  const minute = Math.floor(nowMs / minuteMs);
  const cached = minuteCache.get(timeZone);
  if (cached !== undefined && cached.minute === minute) return cached.keys;
  // Cached only when both ends of the minute fall on the same local date: a
  // zone change inside the minute (a historical offset with seconds) is then
  // computed exactly every time.
  const first = computeKeys(minute * minuteMs, timeZone);
  const last = computeKeys(minute * minuteMs + minuteMs - 1, timeZone);
  if (first.day !== last.day) return computeKeys(nowMs, timeZone);
  if (minuteCache.size >= timeZoneFormatterCacheMax) minuteCache.clear();
  minuteCache.set(timeZone, { minute, keys: first });
  return first;
}

/** The canonical form of an IANA time zone name ("utc" -> "UTC"), or null when
 * the name is not one (offsets like "+05:00" and unknown names included). */
export function canonicalTimeZone(name: string): string | null {
  if (name.length === 0 || name.length > timeZoneLengthMax || !timeZonePattern.test(name)) return null;
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: name }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

export { timeZoneDefault };
