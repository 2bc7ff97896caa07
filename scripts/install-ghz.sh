#!/usr/bin/env bash
# Installs ghz (a gRPC load generator written in Go) into .tools/bin, pinned,
# through the Go module proxy. `npm run bench` drives gRPC with it when Go is
# available; it is not needed by the tests. Idempotent: does nothing when the
# pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
version="v0.121.0"
bin=".tools/bin/ghz"
# `go install` builds print "dev" for --version; the module version is in the binary.
if [ -x "$bin" ] && command -v go >/dev/null 2>&1 && go version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*github.com/bojand/ghz[[:space:]]*${version}"; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-ghz: Go is not installed; the benchmark falls back to its Node.js load generator" >&2
  exit 1
fi
mkdir -p .tools/bin
echo "install-ghz: go install github.com/bojand/ghz/cmd/ghz@${version} (a minute or two the first time)" >&2
GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@${version}"
"$bin" --help >/dev/null
