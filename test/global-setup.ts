// Before any test file: make sure .tools/ has the pinned Python venv, Go
// plugins and grpcurl that the client and debugging tests use. A no-op when
// it is up to date (CI installs it before `npm test`); on a fresh checkout the
// first run installs it from PyPI and the Go module proxy.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const root = fileURLToPath(new URL("..", import.meta.url));
  execFileSync("bash", ["scripts/install-codegen.sh"], { cwd: root, stdio: "inherit" });
}
