#!/usr/bin/env bash
# Installs, into .tools/ (gitignored), every tool that `buf generate` and the
# client tests need besides the npm dev dependencies, each pinned to an exact
# version and fetched only from its package registry:
#   PyPI             -> .tools/venv: scripts/python-tools.txt (grpcio-tools: protoc
#                       with the python builtin and the gRPC Python generator;
#                       mypy-protobuf; grpcio, protobuf, pytest, mypy, hatchling)
#   Go module proxy  -> .tools/bin: protoc-gen-go, protoc-gen-connect-go,
#                       protoc-gen-go-grpc (grpc-go stubs), grpcurl
# Needs python3 (>= 3.10) and go (>= 1.26). Idempotent: does nothing when
# .tools/versions records exactly these versions.
# Usage: scripts/install-codegen.sh [--force]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"

# Pinned versions: bump here (or in python-tools.txt), then `npm run generate`
# and commit gen/.
go_pkgs=(
  google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
  connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
  google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
  github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
)
python_requirements="$root/scripts/python-tools.txt"

stamp="$tools/versions"
want="$(printf '%s\n' "${go_pkgs[@]}"; grep -v '^#' "$python_requirements")"
if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "install-codegen: $python not found (Python >= 3.10 is needed)" >&2; exit 1; }
command -v go >/dev/null || { echo "install-codegen: go not found (Go >= 1.26 is needed)" >&2; exit 1; }

mkdir -p "$tools/bin"
rm -f "$stamp"

echo "install-codegen: Python tools into .tools/venv (scripts/python-tools.txt)"
[[ -x "$tools/venv/bin/python" ]] || "$python" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$python_requirements"

echo "install-codegen: Go tools into .tools/bin"
for pkg in "${go_pkgs[@]}"; do
  GOBIN="$tools/bin" go install "$pkg"
done

printf '%s\n' "$want" > "$stamp"
echo "install-codegen: done"
