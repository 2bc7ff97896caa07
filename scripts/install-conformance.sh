#!/usr/bin/env bash
# Installs the Connect conformance runner (pinned) into .tools/bin through the Go
# module proxy, and generates TypeScript for its protos into test/conformance/gen.
# Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v1.0.7
export GOBIN="$PWD/.tools/bin"
if [ ! -x "$GOBIN/connectconformance" ] || ! go version -m "$GOBIN/connectconformance" | grep -q "connectrpc.com/conformance\s*$version"; then
  echo "installing connectconformance $version"
  go install "connectrpc.com/conformance/cmd/connectconformance@$version"
fi
proto="$(go env GOMODCACHE)/connectrpc.com/conformance@$version/proto"
[ -d "$proto" ] || go mod download -json "connectrpc.com/conformance@$version" >/dev/null
if [ ! -f test/conformance/gen/connectrpc/conformance/v1/service_pb.ts ]; then
  npx buf generate "$proto" --template test/conformance/buf.gen.yaml
fi
echo "connectconformance: $GOBIN/connectconformance"
