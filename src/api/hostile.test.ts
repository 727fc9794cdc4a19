// Hostile clients against the API socket, with a running (fake-machine) VM behind it: huge
// bodies, slow and half-closed clients, garbage, pipelining, and a burst of 1,000 requests. The
// VM must keep running, every request must be answered correctly or its connection closed, and
// memory must stay bounded.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { Agent, request } from "node:http";
import { join } from "node:path";
import { startApiServer, type ApiServerHandle } from "./server.js";
import { apiRequest } from "./client.js";
import { fakeFactory, fakeKernel, tempDir } from "./testing.js";

let sock: string;
let server: ApiServerHandle;
const HEADERS_TIMEOUT = 400;

before(async () => {
  const dir = tempDir();
  sock = join(dir, "api.sock");
  server = await startApiServer({
    socketPath: sock,
    vmFactory: fakeFactory(),
    consoleFd: -1,
    headersTimeoutMs: HEADERS_TIMEOUT,
    requestTimeoutMs: 800,
    keepAliveTimeoutMs: 1000,
  });
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  const r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 204, r.text);
});
after(async () => {
  await server?.close();
});

/** Writes `data` on a raw connection and collects what comes back until the server closes it (or `ms`). */
function raw(data: string | Buffer, opts: { halfClose?: boolean; ms?: number } = {}): Promise<{ text: string; closedByServer: boolean; elapsed: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s: Socket = connect(sock);
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closedByServer: false, elapsed: Date.now() - t0 });
    }, opts.ms ?? 3000);
    s.on("data", (c) => (text += c.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => {
      clearTimeout(timer);
      resolve({ text, closedByServer: true, elapsed: Date.now() - t0 });
    });
    s.write(data, () => {
      if (opts.halfClose) s.end();
    });
  });
}

const running = async () => assert.equal(((await apiRequest(sock, "GET", "/")).body as { state: string }).state, "Running");

test("a body over 51,200 bytes is refused with 400 without being read, and the connection closed", async () => {
  const r = await raw(`PUT /boot-source HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{"kernel_image_path": "`);
  assert.match(r.text, /^HTTP\/1\.1 400 /);
  assert.match(r.text, /larger than the limit of 51200 bytes/);
  assert.ok(r.closedByServer, "connection closed");
  // Chunked, no length announced: counted as it arrives.
  const big = "x".repeat(60_000);
  const chunked = `PUT /boot-source HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`;
  const r2 = await raw(chunked);
  assert.match(r2.text, /^HTTP\/1\.1 400 /);
  assert.match(r2.text, /larger than the limit/);
  await running();
});

test("a slow client (headers never finished) is answered 408 and closed after the headers timeout", async () => {
  const r = await raw("GET / HTTP/1.1\r\nHost: x\r\n", { ms: 5000 });
  assert.ok(r.closedByServer, "server closed the connection");
  assert.ok(r.elapsed < HEADERS_TIMEOUT + 2000, `closed after ${r.elapsed} ms`);
  assert.ok(r.text === "" || /^HTTP\/1\.1 408 /.test(r.text), r.text);
  // A body that never completes is cut off by the request timeout.
  const r2 = await raw("PUT /boot-source HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", { ms: 5000 });
  assert.ok(r2.closedByServer);
  assert.ok(r2.elapsed < 4000, `closed after ${r2.elapsed} ms`);
  await running();
});

test("half-closed clients: a complete request is still answered; an incomplete one is closed", async () => {
  const r = await raw("GET /version HTTP/1.1\r\nHost: x\r\n\r\n", { halfClose: true });
  assert.match(r.text, /^HTTP\/1\.1 200 /);
  assert.match(r.text, /firecracker_version/);
  assert.ok(r.closedByServer);
  const r2 = await raw("PUT /boot-source HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"ker", { halfClose: true });
  assert.ok(r2.closedByServer);
  assert.doesNotMatch(r2.text, /^HTTP\/1\.1 204/);
  await running();
});

test("garbage, oversized headers and bad request lines get 4xx and a closed connection", async () => {
  const r = await raw(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]));
  assert.match(r.text, /^HTTP\/1\.1 400 /);
  assert.ok(r.closedByServer);
  const r2 = await raw(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`);
  assert.match(r2.text, /^HTTP\/1\.1 431 /);
  const r3 = await raw("GET none HTTP/1.1\r\n\r\n");
  assert.match(r3.text, /^HTTP\/1\.1 400 /);
  await running();
});

test("100 pipelined requests on one connection are all answered, in order", async () => {
  let data = "";
  for (let i = 0; i < 100; i++) data += i % 2 ? "GET / HTTP/1.1\r\nHost: x\r\n\r\n" : "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
  data += "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const r = await raw(data, { ms: 10_000 });
  const statuses = [...r.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
  assert.equal(statuses.length, 101);
  statuses.slice(0, 100).forEach((s, i) => assert.equal(s, i % 2 ? 200 : 400, `response ${i}`));
  assert.equal(statuses[100], 200);
});

test("1,000 requests in a burst: all answered correctly, the VM keeps running, RSS stays bounded", async () => {
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  const one = (i: number) =>
    new Promise<{ i: number; status: number; body: string }>((resolve) => {
      const kinds = [
        ["GET", "/", undefined],
        ["PUT", "/machine-config", JSON.stringify({ vcpu_count: 1, mem_size_mib: 128 })],
        ["PUT", "/actions", "{not json"],
        ["GET", `/x${i}`, undefined],
        ["PATCH", "/vm", JSON.stringify({ state: "Resumed" })],
      ] as const;
      const [method, path, body] = kinds[i % kinds.length]!;
      const req = request({ socketPath: sock, method, path, agent, headers: body ? { "content-length": Buffer.byteLength(body) } : {} }, (res) => {
        let b = "";
        res.on("data", (c) => (b += c));
        res.on("end", () => resolve({ i, status: res.statusCode ?? 0, body: b }));
      });
      req.on("error", () => resolve({ i, status: -1, body: "" }));
      req.end(body);
    });
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => one(i)));
  const elapsed = Date.now() - t0;
  agent.destroy();
  const expected = [200, 400, 400, 400, 204];
  let closed = 0;
  for (const r of results) {
    if (r.status === -1) {
      closed++;
      continue;
    }
    assert.equal(r.status, expected[r.i % 5], `request ${r.i}: ${r.body}`);
  }
  assert.ok(closed <= 10, `${closed} connections closed instead of answered`);
  const rss1 = process.memoryUsage().rss;
  assert.ok(rss1 - rss0 < 64 * 1024 * 1024, `RSS grew by ${((rss1 - rss0) / 1048576).toFixed(1)} MiB`);
  assert.ok(elapsed < 15_000, `burst took ${elapsed} ms`);
  await running();
  assert.equal(server.vm?.state, "running");
  // Unknown paths are counted under one route, so the metrics table did not grow per path.
  assert.ok(Object.keys(server.metrics().api).length <= 16, Object.keys(server.metrics().api).join(","));
});
