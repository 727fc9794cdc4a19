// Unix-domain stream sockets against the real kernel, in a temporary directory: listen, accept,
// connect, read and write both ways (with node:net on the other end too), the non-blocking
// answers (null for EAGAIN, 0 for the end of a stream), EPIPE instead of SIGPIPE, the descriptor
// flags, and the errors a user sees for a bad path.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createConnection, createServer } from "node:net";
import { SysError } from "./errors.js";
import { O_CLOEXEC, O_NONBLOCK, close } from "./libc.js";
import { UNIX_PATH_MAX_BYTES, sockRead, sockWrite, unixAccept, unixConnect, unixListen } from "./unix.js";

/** A temporary directory short enough for socket paths (sun_path holds 107 bytes): TMPDIR, unless it is long. */
const shortTmp = (): string => (tmpdir().length <= 48 ? tmpdir() : "/tmp");

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(shortTmp(), "tv-unix-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Closes every fd pushed, at the end of the test. */
function fds(t: TestContext): number[] {
  const list: number[] = [];
  t.after(() => list.forEach((fd) => close(fd)));
  return list;
}

/** The open-file flags of one of our descriptors (proc(5), /proc/[pid]/fdinfo: "flags:" in octal). */
function fdFlags(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
  assert.ok(m, `no flags line in /proc/self/fdinfo/${fd}`);
  return parseInt(m[1]!, 8);
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 2));
  }
}

test("unixListen + unixConnect + unixAccept: bytes both ways, non-blocking and close-on-exec descriptors", (t) => {
  const path = join(tempDir(t), "s");
  const open = fds(t);
  const l = unixListen(path, 8);
  open.push(l);
  assert.equal(unixAccept(l), null, "nothing waits yet: null (EAGAIN), not a blocked thread");
  const c = unixConnect(path);
  assert.notEqual(c, null);
  open.push(c!);
  const a = unixAccept(l);
  assert.notEqual(a, null);
  open.push(a!);
  for (const fd of [l, c!, a!]) {
    assert.equal(fdFlags(fd) & O_NONBLOCK, O_NONBLOCK, `fd ${fd} is non-blocking`);
    assert.equal(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC, `fd ${fd} is close-on-exec`);
  }
  const buf = new Uint8Array(64);
  assert.equal(sockRead(a!, buf), null, "no data yet: null (EAGAIN)");
  assert.equal(sockWrite(c!, new TextEncoder().encode("hello")), 5);
  assert.equal(sockRead(a!, buf), 5);
  assert.equal(new TextDecoder().decode(buf.subarray(0, 5)), "hello");
  // A subarray's byteOffset is honoured both ways.
  const big = Uint8Array.from({ length: 32 }, (_, i) => i);
  assert.equal(sockWrite(a!, big.subarray(8, 16)), 8);
  assert.equal(sockRead(c!, buf.subarray(10, 20)), 8);
  assert.deepEqual([...buf.subarray(10, 18)], [8, 9, 10, 11, 12, 13, 14, 15]);
});

test("sockWrite fills the socket then answers null (EAGAIN); sockRead drains it; the end of a stream reads 0", (t) => {
  const path = join(tempDir(t), "s");
  const open = fds(t);
  const l = unixListen(path, 8);
  open.push(l);
  const c = unixConnect(path)!;
  const a = unixAccept(l)!;
  open.push(a);
  const chunk = new Uint8Array(65536).fill(0x5a);
  let sent = 0;
  for (let i = 0; i < 10_000; i++) {
    const n = sockWrite(c, chunk);
    if (n === null) break;
    sent += n;
  }
  assert.ok(sent > 0 && sent < 10_000 * chunk.length, `the socket buffer filled after ${sent} bytes`);
  assert.equal(sockWrite(c, chunk), null);
  let got = 0;
  const buf = new Uint8Array(65536);
  for (let n; (n = sockRead(a, buf)) !== null; ) {
    assert.ok(n > 0);
    assert.ok(buf.subarray(0, n).every((b) => b === 0x5a));
    got += n;
  }
  assert.equal(got, sent, "every byte written is read back");
  close(c);
  assert.equal(sockRead(a, buf), 0, "the peer closed: end of stream");
  assert.throws(() => sockRead(a, new Uint8Array(0)), RangeError);
});

test("sockWrite to a closed peer is SysError EPIPE (send with MSG_NOSIGNAL; Node ignores SIGPIPE anyway, other embedders need not)", (t) => {
  const path = join(tempDir(t), "s");
  const open = fds(t);
  const l = unixListen(path, 8);
  open.push(l);
  const c = unixConnect(path)!;
  open.push(c);
  close(unixAccept(l)!);
  assert.throws(
    () => sockWrite(c, Uint8Array.of(1, 2, 3)),
    (e: unknown) => e instanceof SysError && e.code === "EPIPE" && e.call === "send(socket)",
  );
});

test("unixConnect answers null when nothing listens: no file (ENOENT), a file nobody listens on (ECONNREFUSED), a full backlog (EAGAIN)", (t) => {
  const dir = tempDir(t);
  const open = fds(t);
  assert.equal(unixConnect(join(dir, "missing")), null);
  // A stale socket file: its listener closed, the file stays.
  const stale = join(dir, "stale");
  close(unixListen(stale, 1));
  assert.ok(existsSync(stale));
  assert.equal(unixConnect(stale), null);
  // A listener nobody accepts on: its backlog fills, then connects are refused with EAGAIN.
  const full = join(dir, "full");
  open.push(unixListen(full, 1));
  let connected = 0;
  for (let i = 0; i < 16; i++) {
    const fd = unixConnect(full);
    if (fd === null) break;
    open.push(fd);
    connected++;
  }
  assert.ok(connected >= 1 && connected < 16, `${connected} connects fit in a backlog of 1`);
  // Another failure is an error that names the path.
  const file = join(dir, "file");
  writeFileSync(file, "");
  assert.throws(() => unixConnect(join(file, "x")), (e: unknown) => e instanceof SysError && e.code === "ENOTDIR" && e.message.includes(file));
});

test("unixListen: something already at the path is an error naming it (the caller decides whether to unlink); bad paths are RangeErrors", (t) => {
  const dir = tempDir(t);
  const stale = join(dir, "stale");
  close(unixListen(stale, 1));
  assert.throws(
    () => unixListen(stale, 1),
    (e: unknown) => e instanceof SysError && e.code === "EADDRINUSE" && e.message.includes(stale) && /stale socket/.test(e.message),
  );
  assert.throws(() => unixListen(join(dir, "no", "such", "dir"), 1), (e: unknown) => e instanceof SysError && e.code === "ENOENT" && /does not exist/.test(e.message));
  const long = join(dir, "x".repeat(UNIX_PATH_MAX_BYTES));
  assert.throws(() => unixListen(long, 1), (e: unknown) => e instanceof RangeError && /at most 107/.test(e.message));
  assert.throws(() => unixConnect(long), RangeError);
  assert.throws(() => unixListen("", 1), RangeError);
  assert.throws(() => unixListen(join(dir, "a\0b"), 1), /NUL/);
  assert.throws(() => unixListen(join(dir, "b"), -1), RangeError);
});

test("a path of exactly 107 bytes works", (t) => {
  const dir = tempDir(t);
  const path = join(dir, "p".repeat(UNIX_PATH_MAX_BYTES - dir.length - 1));
  assert.equal(Buffer.byteLength(path), UNIX_PATH_MAX_BYTES);
  const l = unixListen(path, 1);
  const c = unixConnect(path);
  assert.notEqual(c, null);
  close(c!);
  close(l);
});

test("interoperates with node:net both ways", async (t) => {
  const dir = tempDir(t);
  const open = fds(t);
  // node:net client -> our listener.
  const ours = join(dir, "ours");
  const l = unixListen(ours, 8);
  open.push(l);
  const client = createConnection(ours);
  const fromUs: Buffer[] = [];
  client.on("data", (b) => fromUs.push(b));
  client.write("ping");
  let a: number | null = null;
  await until(() => (a = unixAccept(l)) !== null);
  open.push(a!);
  const buf = new Uint8Array(16);
  let n: number | null = null;
  await until(() => (n = sockRead(a!, buf)) !== null);
  assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "ping");
  assert.equal(sockWrite(a!, new TextEncoder().encode("pong")), 4);
  await until(() => Buffer.concat(fromUs).toString() === "pong");
  client.end();
  await until(() => sockRead(a!, buf) === 0);

  // Our client -> a node:net server.
  const theirs = join(dir, "theirs");
  const server = createServer((s) => s.on("data", (b) => s.write(b.toString().toUpperCase())));
  await new Promise<void>((r) => server.listen(theirs, r));
  t.after(() => server.close());
  const c = unixConnect(theirs);
  assert.notEqual(c, null);
  open.push(c!);
  assert.equal(sockWrite(c!, new TextEncoder().encode("echo")), 4);
  let got = "";
  await until(() => {
    const r = sockRead(c!, buf);
    if (r !== null && r > 0) got += new TextDecoder().decode(buf.subarray(0, r));
    return got === "ECHO";
  });
});
