// Reads README.md's fenced code blocks with the marker comment above each:
// <!-- snippet: shell [dir=D] -->, <!-- snippet: file=F dir=D run="CMD" -->,
// <!-- snippet: skip (why) -->. Only sh, python, go and ts blocks are
// snippets (yaml, tables and prose are not run).
import { readFileSync } from "node:fs";

export type Snippet = {
  /** 1-based line of the opening fence. */
  line: number;
  language: string;
  text: string;
  /** "" = the repository root (shell blocks only). */
  dir: string;
} & ({ kind: "shell" } | { kind: "file"; file: string; run: string } | { kind: "skip"; why: string } | { kind: "unmarked" });

const languages = new Set(["sh", "python", "go", "ts"]);

export function readmeSnippets(path: string): Snippet[] {
  const lines = readFileSync(path, "utf8").split("\n");
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(\w+)\s*$/.exec(lines[i]!);
    if (fence === null) continue;
    const end = lines.indexOf("```", i + 1);
    if (end < 0) throw new Error(`README.md line ${i + 1}: unclosed code block`);
    const language = fence[1]!;
    const text = `${lines.slice(i + 1, end).join("\n")}\n`;
    const line = i + 1;
    let j = i - 1;
    while (j >= 0 && lines[j]!.trim() === "") j--;
    const marker = /^<!-- snippet: (.*) -->$/.exec(lines[j] ?? "")?.[1];
    i = end;
    if (!languages.has(language)) continue;
    if (marker === undefined) {
      out.push({ line, language, text, dir: "", kind: "unmarked" });
      continue;
    }
    const skip = /^skip \((.+)\)$/.exec(marker);
    if (skip !== null) {
      out.push({ line, language, text, dir: "", kind: "skip", why: skip[1]! });
      continue;
    }
    const attrs = Object.fromEntries([...marker.matchAll(/(\w+)=(?:"([^"]*)"|(\S+))/g)].map((m) => [m[1]!, m[2] ?? m[3]!]));
    if (marker.startsWith("shell")) out.push({ line, language, text, dir: attrs.dir ?? "", kind: "shell" });
    else if (attrs.file !== undefined && attrs.dir !== undefined && attrs.run !== undefined)
      out.push({ line, language, text, dir: attrs.dir, kind: "file", file: attrs.file, run: attrs.run });
    else
      throw new Error(`README.md line ${j + 1}: snippet marker "${marker}" is none of shell [dir=D], file=F dir=D run="CMD", skip (why)`);
  }
  return out;
}
