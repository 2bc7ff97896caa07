// Spend over time as an inline SVG step chart: no chart library. Amounts stay
// bigint until they are scaled to pixels (a pixel position needs no exactness).
import { formatAmount, formatTime } from "./format.ts";

export interface Point {
  atMs: number;
  spentNanos: bigint;
  /** A recorded cost (drawn as a dot when there are few); otherwise the start
   * of the window or the extension of the line to now. */
  record?: boolean;
}

/** Past this many recorded costs the dots would hide the line: none are drawn. */
export const dotsMax = 300;

const svgNs = "http://www.w3.org/2000/svg";
const width = 720;
const height = 240;
const pad = { left: 110, right: 16, top: 16, bottom: 32 };

function el<K extends keyof SVGElementTagNameMap>(name: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const node = document.createElementNS(svgNs, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An axis label: whole units and two decimals, cut (not rounded) — the exact
 * amounts are in the table and the note. */
function axisAmount(nanos: bigint): string {
  return formatAmount(nanos - (nanos % 10_000_000n));
}

/** Draws `points` (sorted by time) and the limit line (0n: none). */
export function renderChart(points: readonly Point[], limitNanos: bigint, currency: string): SVGSVGElement {
  const records = points.filter((p) => p.record === true).length;
  // The last point's exact total, for readers and tests (pixels are rounded).
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "spend over time",
    class: "chart",
    "data-records": records,
    "data-last-nanos": String(points[points.length - 1]?.spentNanos ?? ""),
  });
  if (points.length === 0) {
    svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
    return svg;
  }
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const t0 = first.atMs;
  const t1 = Math.max(last.atMs, t0 + 1);
  let top = limitNanos;
  for (const p of points) if (p.spentNanos > top) top = p.spentNanos;
  if (top === 0n) top = 1n;
  const x = (ms: number) => pad.left + ((ms - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  // Scale in bigint first (per mille of the top), then to pixels.
  const y = (nanos: bigint) => pad.top + (1 - Number((nanos * 1000n) / top) / 1000) * (height - pad.top - pad.bottom);

  svg.append(el("line", { x1: pad.left, y1: y(0n), x2: width - pad.right, y2: y(0n), class: "axis" }));
  svg.append(el("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: y(0n), class: "axis" }));
  svg.append(el("text", { x: pad.left - 6, y: y(top) + 4, "text-anchor": "end", class: "label" }, `${axisAmount(top)} ${currency}`));
  svg.append(el("text", { x: pad.left - 6, y: y(0n) + 4, "text-anchor": "end", class: "label" }, `0 ${currency}`));
  svg.append(el("text", { x: pad.left, y: height - 8, class: "label" }, formatTime(t0)));
  svg.append(el("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "label" }, formatTime(t1)));
  if (limitNanos > 0n) {
    svg.append(el("line", { x1: pad.left, y1: y(limitNanos), x2: width - pad.right, y2: y(limitNanos), class: "limit" }));
    svg.append(
      el(
        "text",
        { x: width - pad.right, y: y(limitNanos) - 4, "text-anchor": "end", class: "label limit-label" },
        `limit ${formatAmount(limitNanos)}`,
      ),
    );
  }
  // Spend only changes when a cost is recorded: a step line.
  let d = `M ${x(first.atMs)} ${y(first.spentNanos)}`;
  for (const p of points.slice(1)) d += ` H ${x(p.atMs)} V ${y(p.spentNanos)}`;
  if (points.length === 1) d += ` H ${x(t1)}`;
  svg.append(el("path", { d, class: "spend" }));
  if (records <= dotsMax)
    for (const p of points) if (p.record === true) svg.append(el("circle", { cx: x(p.atMs), cy: y(p.spentNanos), r: 2.5, class: "dot" }));
  return svg;
}
