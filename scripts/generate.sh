#!/usr/bin/env bash
# `npm run generate`: regenerates everything under gen/ from proto/ and
# third_party/proto with the pinned local plugins (see buf.gen.yaml).
#
# Layout contract: the files directly in gen/<language>/ (package.json,
# pyproject.toml, go.mod, go.sum, README.md) are hand-written package metadata;
# everything deeper is generated and is deleted here first, so a removed .proto
# or type leaves nothing stale behind (buf.gen.yaml cannot use `clean: true`
# without deleting the metadata too).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-codegen.sh   # no-op when .tools/ already has the pinned versions

find gen -mindepth 3 -type f -delete
find gen -mindepth 2 -type d -empty -delete

npx buf generate

# The descriptors gRPC reflection serves (src/api/reflection.ts), built from
# the same sources WITH source info, so `grpcurl describe` shows the proto's
# comments (the descriptors embedded in gen/ts carry none).
mkdir -p gen/descriptors
npx buf build --output gen/descriptors/tally.binpb

# PEP 561: type checkers read the .pyi stubs of an installed package only when
# its package directory has a py.typed marker.
find gen/python/src -name '*_pb2.py' -exec dirname {} \; | sort -u | while read -r dir; do
  : > "$dir/py.typed"
done
