#!/usr/bin/env bash
# `buf breaking` for the contract: v1 is published, so proto/ may only grow
# (new fields, RPCs, messages), never renumber, rename or remove. Compares the
# work tree with:
#   - where this branch left main (merge-base with a local main, or with
#     origin/main in a clone of a branch), i.e. what this branch changes (the
#     tip of main could have fields this branch has not seen yet);
#   - the first parent of HEAD, when HEAD is main itself (CI runs on main), i.e.
#     what the last merge or commit changed.
# Skips with a message when there is nothing to compare with, or when that
# version has no contract yet.
set -euo pipefail
cd "$(dirname "$0")/.."

contract=proto/tally/budget/v1/budget.proto
head="$(git rev-parse HEAD)"
against_sha=""
label=""
for ref in refs/heads/main refs/remotes/origin/main; do
  sha="$(git rev-parse --verify --quiet "$ref^{commit}" || true)"
  if [[ -n "$sha" && "$sha" != "$head" ]]; then
    against_sha="$(git merge-base HEAD "$sha" || true)"
    label="merge-base with $ref"
    break
  fi
  if [[ "$sha" == "$head" ]]; then
    against_sha="$(git rev-parse --verify --quiet "HEAD^1^{commit}" || true)"
    label="HEAD^1 (main before its last commit)"
    break
  fi
done

if [[ -z "$against_sha" ]]; then
  echo "buf breaking: skipped, no main branch (or no parent commit) to compare with"
  exit 0
fi
if ! git cat-file -e "$against_sha:$contract" 2>/dev/null; then
  echo "buf breaking: skipped, $label ($against_sha) has no $contract yet"
  exit 0
fi
echo "buf breaking: against $label ($against_sha)"
npx buf breaking --against ".git#ref=$against_sha"
echo "buf breaking: no breaking change"
