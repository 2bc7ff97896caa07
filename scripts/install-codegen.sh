#!/usr/bin/env bash
# Installs, into .tools/ (gitignored), every tool that `buf generate` and the
# client tests need besides the npm dev dependencies, each pinned to an exact
# version and fetched only from its package registry:
#   PyPI:             .tools/venv  grpcio-tools (protoc with the python builtin and
#                     the gRPC Python plugin), mypy-protobuf (.pyi stubs), and the
#                     test/runtime deps (grpcio, protobuf, pytest, mypy, hatchling
#                     to build gen/python offline)
#   Go module proxy:  .tools/bin   protoc-gen-go, protoc-gen-connect-go, grpcurl
# Idempotent: does nothing when .tools/versions matches the versions below.
# Usage: scripts/install-codegen.sh [--force]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"

# --- pinned versions (bump here, then run `npm run generate` and commit gen/) --
python_pkgs=(
  grpcio-tools==1.85.1
  grpcio==1.85.1
  protobuf==7.36.2
  mypy-protobuf==5.1.0
  types-protobuf==7.35.1.20260906
  types-grpcio==1.85.0.20261028
  pytest==9.2.0
  mypy==2.4.1
  hatchling==1.33.0
)
go_pkgs=(
  google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
  connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
  github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
)

stamp="$tools/versions"
want="$(printf '%s\n' "${python_pkgs[@]}" "${go_pkgs[@]}")"
if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

mkdir -p "$tools/bin"
rm -f "$stamp"

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "install-codegen: $python not found (Python >= 3.10 is needed)" >&2; exit 1; }
command -v go >/dev/null || { echo "install-codegen: go not found (Go >= 1.24 is needed)" >&2; exit 1; }

echo "install-codegen: Python tools into .tools/venv"
[[ -x "$tools/venv/bin/python" ]] || "$python" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${python_pkgs[@]}"

echo "install-codegen: Go tools into .tools/bin"
for pkg in "${go_pkgs[@]}"; do
  GOBIN="$tools/bin" go install "$pkg"
done

printf '%s\n' "$want" > "$stamp"
echo "install-codegen: done ($(tr '\n' ' ' < "$stamp"))"
