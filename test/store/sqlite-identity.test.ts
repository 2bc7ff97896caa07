// One SQLite file has one writer whatever name it is opened by (issue 15,
// item 3): a second server on a symlink or hard link of a served file is
// refused at start.
import { linkSync, mkdirSync, mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DatabaseInUseError } from "../../src/store/sqlite/connection.ts";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer } from "../helpers.ts";

describe("the SQLite lock follows the file, not its name", () => {
  const started: TallyServer[] = [];
  afterEach(async () => {
    for (const server of started.splice(0)) await server.close();
  });
  const serve = async (path: string) => {
    const server = await startTestServer({ databaseUrl: `sqlite:${path}` });
    started.push(server);
    return server;
  };

  it("refuses a second server on a symlink to the served file, or through a symlinked directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-ident-"));
    const file = join(dir, "tally.db");
    await serve(file);
    const link = join(dir, "link.db");
    symlinkSync(file, link);
    await expect(serve(link)).rejects.toThrow(DatabaseInUseError);
    await expect(serve(link)).rejects.toThrow(`the SQLite database ${link} (the file ${file}) is already served by another Tally process`);
    const dirLink = join(mkdtempSync(join(tmpdir(), "tally-ident-dir-")), "data");
    symlinkSync(dir, dirLink);
    await expect(serve(join(dirLink, "tally.db"))).rejects.toThrow(/is already served by another Tally process/);
  });

  it("refuses a second server on a hard link of the served file, and any server while the file has two names", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-ident-"));
    const file = join(dir, "tally.db");
    const first = await serve(file);
    const other = join(dir, "elsewhere");
    mkdirSync(other);
    const hard = join(other, "same.db");
    linkSync(file, hard);
    await expect(serve(hard)).rejects.toThrow(
      `the SQLite database ${hard} has 2 hard links: another Tally process may serve it under another name`,
    );
    // The running server is untouched and keeps serving.
    await first.ledger.recordCost({
      projectId: "p",
      costNanos: 5n,
      requestId: "r1",
      inputTokens: 0n,
      outputTokens: 0n,
      agentId: "",
      model: "",
    });
    expect((await first.ledger.getProjectCost("p")).totalCostNanos).toBe(5n);
    await first.close();
    started.splice(started.indexOf(first), 1);
    // Even with nobody serving it, two names are refused: which one would the next server be?
    await expect(serve(file)).rejects.toThrow(/has 2 hard links/);
  });
});
