// Plain HTTP endpoints for operators, next to the RPCs on the same port:
// GET /metrics (Prometheus text format) and the dashboard at / (static files
// built by Vite into dist/dashboard; the page itself calls the API through
// connect-web). Served from the Connect adapter's fallback, so RPC routes always
// win and everything else still gets the 404.
//
// The dashboard files are read once at start into memory (a bounded number and
// size), and only those exact paths are served: no file system access per
// request, so no path traversal.
//
// Who may read them, once API keys are configured: /metrics needs an admin key
// (it names the top spenders and their spend), checked by the same functions
// as every RPC (auth.ts). The dashboard's files stay public: they are the page's code and
// hold no data; every number on the page comes from API calls, which need a key.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import type http from "node:http";
import type http2 from "node:http2";
import { join, relative, sep } from "node:path";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { dashboardBytesMax, dashboardFilesMax } from "../limits.ts";
import { LogEvent, type Logger } from "../log.ts";
import { authenticate, authorizeProcedure, type Principal } from "../auth/auth.ts";
import type { KeyRing } from "../auth/keys.ts";
import type { TallyMetrics } from "./metrics.ts";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
/** What we need of an http or http2 response (Connect's fallback passes either). */
interface Response {
  writeHead(status: number, headers?: http.OutgoingHttpHeaders): unknown;
  end(): unknown;
  end(chunk: Uint8Array): unknown;
}

interface Asset {
  body: Buffer;
  contentType: string;
  cacheControl: string;
}

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".map": "application/json",
};

/** The built dashboard, keyed by URL path ("/", "/assets/index-abc123.js"), or
 * null when it was not built. */
export function loadDashboard(dir: string): Map<string, Asset> | null {
  if (!existsSync(join(dir, "index.html"))) return null;
  const assets = new Map<string, Asset>();
  let bytes = 0;
  const walk = (current: string) => {
    for (const name of readdirSync(current).sort()) {
      const path = join(current, name);
      if (statSync(path).isDirectory()) {
        walk(path);
        continue;
      }
      const body = readFileSync(path);
      bytes += body.length;
      if (assets.size >= dashboardFilesMax || bytes > dashboardBytesMax) {
        throw new Error(
          `dashboard in ${dir} has more than ${dashboardFilesMax} files or ${dashboardBytesMax} bytes; is it the Vite build?`,
        );
      }
      const urlPath = `/${relative(dir, path).split(sep).join("/")}`;
      const extension = name.slice(name.lastIndexOf("."));
      assets.set(urlPath, {
        body,
        contentType: contentTypes[extension] ?? "application/octet-stream",
        // Vite puts a content hash in every name under assets/: cache those for
        // good; the page itself is always revalidated so a deploy shows at once.
        cacheControl: urlPath.startsWith("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      });
    }
  };
  walk(dir);
  const index = assets.get("/index.html");
  if (index !== undefined) assets.set("/", index);
  return assets;
}

/** The name /metrics has in the authorization table: it is not listed in
 * procedureAccess, so it needs an admin key (project keys: PERMISSION_DENIED). */
export const metricsProcedure = "GET /metrics";

export interface OperatorHttpOptions {
  metrics: TallyMetrics;
  /** The current API keys (null: none configured, everything open on loopback). */
  keys: () => KeyRing | null;
  /** Refused scrapes are logged (with the key id, never the key). */
  logger?: Logger;
  /** null: not built; / answers 503 saying how to build it. */
  dashboard: Map<string, Asset> | null;
}

/** Returns a handler that answers the operator paths and returns true, or
 * returns false for anything else (the caller then answers 404). */
export function operatorHttp(options: OperatorHttpOptions): (req: Request, res: Response) => boolean {
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0] as string;
    const isMetrics = path === "/metrics";
    const asset = isMetrics ? undefined : options.dashboard?.get(path);
    const isDashboard = asset !== undefined || (options.dashboard === null && (path === "/" || path === "/index.html"));
    if (!isMetrics && !isDashboard) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(res, req, 405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" }, `${path} answers GET and HEAD only\n`);
      return true;
    }
    if (isMetrics) {
      let principal: Principal | null = null;
      try {
        principal = authenticate(options.keys(), headerOf(req, "authorization"), metricsProcedure);
        authorizeProcedure(principal, metricsProcedure);
      } catch (error) {
        const e = ConnectError.from(error);
        options.logger?.info({
          event: LogEvent.metricsDenied,
          procedure: metricsProcedure,
          code: codeToString(e.code),
          keyId: principal?.keyId ?? undefined,
          message: e.rawMessage,
        });
        const unauthenticated = e.code === Code.Unauthenticated;
        send(
          res,
          req,
          unauthenticated ? 401 : 403,
          {
            "content-type": "text/plain; charset=utf-8",
            "cache-control": "no-store",
            // RFC 6750: tells a client (and a person with curl -i) which scheme to use.
            ...(unauthenticated ? { "www-authenticate": 'Bearer realm="tally"' } : {}),
          },
          `${e.rawMessage}\n/metrics needs an admin API key (Prometheus: "authorization" in the scrape config; see README.md)\n`,
        );
        return true;
      }
      options.metrics.render().then(
        ({ contentType, body }) => send(res, req, 200, { "content-type": contentType, "cache-control": "no-store" }, body),
        (error: unknown) =>
          send(
            res,
            req,
            500,
            { "content-type": "text/plain; charset=utf-8" },
            `metrics failed: ${error instanceof Error ? error.message : String(error)}\n`,
          ),
      );
      return true;
    }
    if (asset === undefined) {
      send(
        res,
        req,
        503,
        { "content-type": "text/plain; charset=utf-8" },
        "the dashboard is not built: run `npm run build` (npm start and npm test do it), then restart Tally\n",
      );
      return true;
    }
    send(
      res,
      req,
      200,
      {
        "content-type": asset.contentType,
        "cache-control": asset.cacheControl,
        "x-content-type-options": "nosniff",
        // The page talks only to the server it came from, and runs only its own code.
        "content-security-policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
        "referrer-policy": "no-referrer",
      },
      asset.body,
    );
    return true;
  };
}

function headerOf(req: Request, name: string): string | null {
  const value = req.headers[name];
  return typeof value === "string" ? value : null;
}

function send(res: Response, req: Request, status: number, headers: Record<string, string>, body: string | Buffer): void {
  const bytes = typeof body === "string" ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, "content-length": String(bytes.length) });
  if (req.method === "HEAD") res.end();
  else res.end(bytes);
}
