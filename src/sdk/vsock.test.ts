// connectVsock against a stand-in for the VMM's vsock socket (a Unix-socket server speaking the
// CONNECT/OK handshake): the answer, bytes right after it, refusals and silence.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectVsock, VsockConnectError } from "./vsock.js";

async function serve(path: string, onClient: (s: Socket, line: string) => void): Promise<Server> {
  const server = createServer((s) => {
    let buf = "";
    s.on("data", function first(d) {
      buf += d.toString("latin1");
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      s.off("data", first);
      onClient(s, buf.slice(0, nl));
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return server;
}

test("connectVsock: CONNECT <port>, OK <hostport>; bytes sent with the answer are kept; the stream is live", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-vsock-sdk-"));
  const path = join(dir, "v.sock");
  const lines: string[] = [];
  const server = await serve(path, (s, line) => {
    lines.push(line);
    s.write("OK 1073741824\nhello");
    s.on("data", (d) => s.write(d)); // echo
  });
  t.after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const { socket, hostPort } = await connectVsock(path, 52);
  assert.equal(hostPort, 1073741824);
  assert.deepEqual(lines, ["CONNECT 52"]);
  const got: Buffer[] = [];
  socket.on("data", (d: Buffer) => got.push(d));
  socket.write(" world");
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(Buffer.concat(got).toString(), "hello world");
  socket.destroy();
});

test("connectVsock: refusals, wrong answers, silence and a missing socket are VsockConnectErrors with one sentence", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-vsock-sdk-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await assert.rejects(connectVsock(join(dir, "none.sock"), 1), (e: unknown) => e instanceof VsockConnectError && /nothing listens at .*none\.sock \(ENOENT\)/.test((e as Error).message));
  const refuse = await serve(join(dir, "r.sock"), (s) => s.end());
  const wrong = await serve(join(dir, "w.sock"), (s) => s.write("NO\n"));
  const silent = await serve(join(dir, "s.sock"), () => {});
  t.after(() => [refuse, wrong, silent].forEach((s) => s.close()));
  await assert.rejects(connectVsock(join(dir, "r.sock"), 7), /the guest refused the connection to port 7/);
  await assert.rejects(connectVsock(join(dir, "w.sock"), 7), /answered "NO", not "OK <port>"/);
  await assert.rejects(connectVsock(join(dir, "s.sock"), 7, { timeoutMs: 100 }), /did not accept a connection to port 7 within 100 ms/);
  await assert.rejects(connectVsock(join(dir, "s.sock"), -1), /vsock port must be a u32/);
});
