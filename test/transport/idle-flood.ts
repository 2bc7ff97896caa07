// Child process of idle-connections.test.ts: opens N connections of one idle
// kind to a server and holds them, in its own process so its file descriptors
// do not count against the test runner's (or the server's) limit.
//
//   node test/transport/idle-flood.ts <host> <port> <kind> <count>
//
// Prints {"opened":N,"open":M} once all are opened (M = still open), then the
// same line again for every line read on stdin; exits when stdin closes.
import net from "node:net";
import tls from "node:tls";

const [host, portText, kind, countText] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
// Opening this many at once stays under the listen backlog (somaxconn).
const concurrentMax = 256;

const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const emptySettings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
/** A TLS record header that announces a ClientHello and never sends it. */
const partialClientHello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);

let open = 0;
let opened = 0;
let failed = 0;
const sockets: net.Socket[] = [];

function openOne(): Promise<void> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (ok: boolean) => {
      if (settled) return;
      settled = true;
      if (ok) {
        opened++;
        open++;
        socket.once("close", () => open--);
      } else failed++;
      resolve();
    };
    let socket: net.Socket;
    if (kind === "tls-idle") {
      // A completed handshake (ALPN h2) that then says nothing.
      socket = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => settle(true));
    } else {
      socket = net.connect({ host, port }, () => {
        if (kind === "h2c-preface") socket.write(Buffer.concat([http2Preface, emptySettings]));
        else if (kind === "http1-partial") socket.write("G");
        else if (kind === "tls-handshake") socket.write(partialClientHello);
        settle(true);
      });
    }
    // The server may close it (evicting it, or its idle deadline); ignore.
    socket.on("error", () => {});
    socket.on("data", () => {});
    socket.once("close", () => settle(false));
    sockets.push(socket);
  });
}

let next = 0;
async function worker(): Promise<void> {
  while (next < count) {
    next++;
    await openOne();
  }
}
await Promise.all(Array.from({ length: concurrentMax }, worker));
const report = () => process.stdout.write(`${JSON.stringify({ kind, opened, failed, open })}\n`);
report();
process.stdin.on("data", report);
process.stdin.on("end", () => {
  for (const socket of sockets) socket.destroy();
  process.exit(0);
});
