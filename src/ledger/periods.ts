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
    f = new Intl.DateTimeFormat("en-US", { timeZone, year: "numeric", month: "2-digit", day: "2-digit", calendar: "gregory", numberingSystem: "latn" });
    formatters.set(timeZone, f);
  }
  return f;
}

export interface PeriodKeys {
  day: string;
  month: string;
}

/** The local day and month containing `nowMs` in `timeZone` (a canonical IANA name). */
export function periodKeys(nowMs: number, timeZone: string): PeriodKeys {
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
