// Summarizes a V8 .cpuprofile (node --cpu-prof): self time by function and by
// area (our code, Connect, protobuf, SQLite, pino, node internals, GC, idle),
// so a bench run says where a server's time goes without opening DevTools.
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  byArea: Array<{ area: string; ms: number; share: number }>;
  topFunctions: Array<{ name: string; where: string; ms: number; share: number }>;
}

function area(url: string, name: string): string {
  if (name === "(idle)") return "idle";
  if (name === "(garbage collector)") return "GC";
  if (name === "(program)") return "V8/native (program)";
  if (url.includes("/src/store/") || url.includes("better-sqlite3")) return "SQLite store";
  if (url.includes("/src/")) return "Tally (src/)";
  if (url.includes("/gen/") || url.includes("@bufbuild/protobuf")) return "protobuf";
  if (url.includes("@connectrpc")) return "Connect";
  if (url.includes("pino") || url.includes("sonic-boom") || url.includes("thread-stream")) return "pino (logging)";
  if (url.includes("@mikro-orm") || url.includes("kysely")) return "MikroORM";
  if (url.includes("@grpc")) return "grpc-js";
  if (url.startsWith("node:") || url === "") return "node internals (http2, streams, timers)";
  return "other";
}

export function summarizeCpuProfile(path: string, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const areas = new Map<string, number>();
  const functions = new Map<string, { name: string; where: string; us: number }>();
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || "(anonymous)";
    totalUs += us;
    const a = area(url, name);
    areas.set(a, (areas.get(a) ?? 0) + us);
    const where = url
      ? `${url.replace(/^file:\/\/.*?node_modules\//, "").replace(/^file:\/\/.*?\/(src|gen|bench)\//, "$1/")}:${lineNumber + 1}`
      : "";
    const key = `${name}@${where}`;
    const f = functions.get(key) ?? { name, where, us: 0 };
    f.us += us;
    functions.set(key, f);
  }
  const busyUs = totalUs - (areas.get("idle") ?? 0);
  const share = (us: number) => (busyUs > 0 ? us / busyUs : 0);
  return {
    totalMs: totalUs / 1000,
    byArea: [...areas]
      .filter(([a]) => a !== "idle")
      .map(([a, us]) => ({ area: a, ms: us / 1000, share: share(us) }))
      .sort((x, y) => y.ms - x.ms),
    topFunctions: [...functions.values()]
      .filter((f) => f.name !== "(idle)")
      .sort((x, y) => y.us - x.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, ms: f.us / 1000, share: share(f.us) })),
  };
}
