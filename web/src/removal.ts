// Archive, unarchive and delete the selected project (admin RPCs: the
// dashboard already needs an admin key). Delete asks for confirmation and
// only removes a project that recorded nothing since the chosen day; the
// server refuses otherwise, and its reason is shown.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, type Client } from "@connectrpc/connect";
import type { BudgetService, ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";

const dayMs = 24 * 60 * 60 * 1000;
/** The delete guard's default: no cost recorded in the last 30 days. */
const inactiveDaysDefault = 30;

const $ = <T extends HTMLElement>(selector: string) => document.querySelector(selector) as T;

export interface RemovalHooks {
  client: Client<typeof BudgetService>;
  /** The selected project's listing row (undefined when none or not loaded). */
  selected: () => ProjectSummary | undefined;
  /** After a change: reload, and for a deleted project clear the selection. */
  changed: (deleted: boolean) => void;
}

export function wireRemoval(hooks: RemovalHooks): void {
  const since = $<HTMLInputElement>("#delete-since");
  since.value = new Date(Date.now() - inactiveDaysDefault * dayMs).toISOString().slice(0, 10);
  const say = (text: string, failed = false) => {
    const message = $("#removal-message");
    message.textContent = text;
    message.classList.toggle("error", failed);
  };
  const run = async (what: () => Promise<string>, deleted = false) => {
    try {
      say(await what());
      hooks.changed(deleted);
    } catch (error) {
      say(`Refused: ${ConnectError.from(error).rawMessage}`, true);
    }
  };
  $("#archive").addEventListener("click", () => {
    const p = hooks.selected();
    if (p === undefined) return;
    void run(async () => {
      if (p.archived) {
        await hooks.client.unarchiveProject({ projectId: p.projectId });
        return `${p.projectId} is active again.`;
      }
      await hooks.client.archiveProject({ projectId: p.projectId });
      return `${p.projectId} is archived: hidden from the list (tick "show archived"), writes refused, totals kept.`;
    });
  });
  $("#delete").addEventListener("click", () => {
    const p = hooks.selected();
    const sinceMs = Date.parse(`${since.value}T00:00:00Z`);
    if (p === undefined || Number.isNaN(sinceMs)) return;
    if (!confirm(`Delete ${p.projectId} for good (totals, budget, ledger)? Only if it recorded nothing since ${since.value}.`)) return;
    void run(async () => {
      const res = await hooks.client.deleteProject({ projectId: p.projectId, noRecordsSince: timestampFromMs(sinceMs) });
      return `${p.projectId} was deleted (${res.deletedRecordCount} cost records).`;
    }, true);
  });
}

/** Shows the buttons for the selected project's state. */
export function renderRemoval(p: ProjectSummary | undefined): void {
  $("#removal").hidden = p === undefined;
  if (p === undefined) return;
  $("#archive").textContent = p.archived ? "Unarchive" : "Archive";
}
