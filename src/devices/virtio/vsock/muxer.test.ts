// The vsock device end to end over real rings: Firecracker's hybrid Unix-socket model
// (docs/vsock.md), credit flow control (virtio 1.2 §5.10.6.3), resets and hostile traffic.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { FakeStream, GUEST_CID, Rig, dec, enc } from "./testing.js";
import {
  VSOCK_HOST_CID,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_BOTH,
  VSOCK_TYPE_STREAM,
  type VsockPacket,
} from "./packet.js";
import { parseConnectLine, RST_BACKLOG_MAX } from "./muxer.js";

const HOST_PORT0 = 2 ** 30; // Firecracker's first host port: docs/vsock.md "OK 1073741824"
const UDS = "/run/v.sock";

const opName = (op: number): string =>
  ["INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE", "CREDIT_REQUEST"][op] ?? `op${op}`;
const ops = (pkts: VsockPacket[]): string[] => pkts.map((p) => opName(p.hdr.op));
const payloadOf = (pkts: VsockPacket[]): Uint8Array => {
  const out: number[] = [];
  for (const p of pkts) if (p.hdr.op === VSOCK_OP_RW) out.push(...p.payload);
  return new Uint8Array(out);
};

/** A guest-initiated connection guestPort -> hostPort, established; returns its host stream. */
function guestConnect(r: Rig, guestPort: number, hostPort: number): FakeStream {
  r.connector.listening.add(`${UDS}_${hostPort}`);
  r.send(guestPort, hostPort, VSOCK_OP_REQUEST);
  const pkts = r.settle([]);
  assert.deepEqual(ops(pkts), ["RESPONSE"]);
  return r.connector.accepted[r.connector.accepted.length - 1]!;
}

/** A host-initiated connection to guest port `port`, established; returns the client stream and host port. */
function hostConnect(r: Rig, port: number): { s: FakeStream; hostPort: number } {
  const s = new FakeStream();
  r.muxer.acceptHost(s);
  s.hostWrite(`CONNECT ${port}\n`);
  const pkts = r.settle([s]);
  assert.deepEqual(ops(pkts), ["REQUEST"]);
  const hostPort = pkts[0]!.hdr.srcPort;
  r.send(port, hostPort, VSOCK_OP_RESPONSE);
  r.settle([s]);
  assert.equal(dec(s.received.splice(0)), `OK ${hostPort}\n`);
  return { s, hostPort };
}

test("host-initiated (docs/vsock.md): CONNECT <port>\\n -> REQUEST to the guest port -> RESPONSE -> OK <hostport>\\n", () => {
  const r = new Rig();
  const s = new FakeStream();
  r.muxer.acceptHost(s);
  assert.deepEqual([s.readable, s.writable], [true, false], "the runtime polls the new client for its CONNECT line");
  s.hostWrite("CONNECT 5");
  assert.deepEqual(r.settle([s]), [], "half a line: nothing yet");
  s.hostWrite("2\n");
  const pkts = r.settle([s]);
  assert.equal(pkts.length, 1);
  assert.deepEqual(pkts[0]!.hdr, {
    srcCid: BigInt(VSOCK_HOST_CID),
    dstCid: BigInt(GUEST_CID),
    srcPort: HOST_PORT0,
    dstPort: 52,
    len: 0,
    type: VSOCK_TYPE_STREAM,
    op: VSOCK_OP_REQUEST,
    flags: 0,
    bufAlloc: 64 * 1024,
    fwdCnt: 0,
  });
  assert.equal(s.received.length, 0, "nothing to the client before the guest answers");
  r.send(52, HOST_PORT0, VSOCK_OP_RESPONSE);
  assert.deepEqual(r.settle([s]), []);
  assert.equal(dec(s.received), "OK 1073741824\n");
  assert.equal(r.muxer.connectionCount, 1);
  assert.equal(r.muxer.connection(HOST_PORT0, 52)?.state, "established");
  // The stream is live both ways.
  s.hostWrite("to guest");
  assert.equal(dec(payloadOf(r.settle([s]))), "to guest");
  r.send(52, HOST_PORT0, VSOCK_OP_RW, "to host");
  r.settle([s]);
  assert.equal(dec(s.received.slice(14)), "to host");
  // The next client gets the next port, round robin.
  assert.equal(hostConnect(r, 53).hostPort, HOST_PORT0 + 1);
});

test("a CONNECT line is read without taking the bytes after it: they reach the guest once the flow is up", () => {
  const r = new Rig();
  const s = new FakeStream();
  r.muxer.acceptHost(s);
  s.hostWrite("CONNECT 52\nhello");
  assert.deepEqual(ops(r.settle([s])), ["REQUEST"]);
  assert.equal(s.pendingForGuest, 5, "'hello' is still in the socket");
  assert.deepEqual(s.reads, [10, 1], "the shortest valid line first, then byte by byte");
  r.send(52, HOST_PORT0, VSOCK_OP_RESPONSE);
  const pkts = r.settle([s]);
  assert.deepEqual(ops(pkts), ["RW"]);
  assert.equal(dec(pkts[0]!.payload), "hello");
});

test("malformed or over-long CONNECT lines, or a client that hangs up or stays silent, close the client", () => {
  const bad = ["CONNECT x\n", "CONNECT\n", "HELLO 52\n", "CONNECT 52 53\n", "CONNECT 4294967296\n", "CONNECT -1\n", "CONNECT 0x10\n", `CONNECT ${"9".repeat(40)}`, "CONNECT 5\u00e92\n"];
  for (const line of bad) {
    const r = new Rig();
    const s = new FakeStream();
    r.muxer.acceptHost(s);
    s.hostWrite(line);
    assert.deepEqual(r.settle([s]), [], line);
    assert.equal(s.closed, true, `closed after ${JSON.stringify(line)}`);
    assert.equal(r.muxer.pendingClientCount, 0);
    assert.equal(r.count("connect-bad-line"), 1);
  }
  const r = new Rig();
  const early = new FakeStream();
  r.muxer.acceptHost(early);
  early.hostWrite("CONNECT 5");
  early.eof = true;
  r.settle([early]);
  assert.equal(early.closed, true, "EOF before the newline");
  const silent = new FakeStream();
  r.muxer.acceptHost(silent);
  assert.equal(r.muxer.nextDeadline(), 2000);
  r.time = 1999;
  r.muxer.sweep();
  assert.equal(silent.closed, false);
  r.time = 2000;
  r.muxer.sweep();
  assert.equal(silent.closed, true, "a client that never sends CONNECT is dropped at the request timeout");
  assert.equal(r.muxer.pendingClientCount, 0);
  // Firecracker accepts the verb in any case and surrounding whitespace.
  assert.equal(parseConnectLine(enc("connect 7\n")), 7);
  assert.equal(parseConnectLine(enc("CONNECT  4294967295 \r\n")), 4294967295);
});

test("host-initiated: the guest's RST, or no answer in time, closes the client and frees its port", () => {
  const r = new Rig();
  const s = new FakeStream();
  r.muxer.acceptHost(s);
  s.hostWrite("CONNECT 52\n");
  r.settle([s]);
  assert.equal(r.muxer.allocatedPortCount, 1);
  r.send(52, HOST_PORT0, VSOCK_OP_RST);
  assert.deepEqual(r.settle([s]), [], "an RST is never answered");
  assert.equal(s.closed, true);
  assert.equal(s.received.length, 0, "no OK");
  assert.equal(r.muxer.connectionCount, 0);
  assert.equal(r.muxer.allocatedPortCount, 0);

  const t = new FakeStream();
  r.time = 100;
  r.muxer.acceptHost(t);
  t.hostWrite("CONNECT 60\n");
  const req = r.settle([t]);
  const port = req[0]!.hdr.srcPort;
  assert.equal(r.muxer.nextDeadline(), 2100, "Firecracker's 2 s request timeout");
  r.time = 2100;
  r.muxer.sweep();
  assert.equal(t.closed, true);
  const rst = r.settle([t]);
  assert.deepEqual(ops(rst), ["RST"], "the guest is told, in case its RESPONSE is on the way");
  assert.deepEqual([rst[0]!.hdr.srcPort, rst[0]!.hdr.dstPort], [port, 60]);
  assert.equal(r.muxer.connectionCount, 0);
  // A late RESPONSE finds no flow and gets RST.
  r.send(60, port, VSOCK_OP_RESPONSE);
  assert.deepEqual(ops(r.settle([])), ["RST"]);
});

test("guest-initiated (docs/vsock.md): REQUEST to CID 2 port P connects to <uds_path>_P; refused -> RST", () => {
  const r = new Rig();
  r.connector.listening.add(`${UDS}_1234`);
  r.send(1000, 1234, VSOCK_OP_REQUEST, undefined, { bufAlloc: 5000, fwdCnt: 0 });
  const pkts = r.settle([]);
  assert.deepEqual(r.connector.asked, [`${UDS}_1234`]);
  assert.deepEqual(ops(pkts), ["RESPONSE"]);
  assert.deepEqual(pkts[0]!.hdr, {
    srcCid: 2n,
    dstCid: 3n,
    srcPort: 1234,
    dstPort: 1000,
    len: 0,
    type: VSOCK_TYPE_STREAM,
    op: VSOCK_OP_RESPONSE,
    flags: 0,
    bufAlloc: 64 * 1024,
    fwdCnt: 0,
  });
  assert.equal(r.muxer.connection(1234, 1000)?.peerCredit(), 5000, "the REQUEST's buf_alloc is the guest's credit");

  r.send(1001, 999, VSOCK_OP_REQUEST);
  const refused = r.settle([]);
  assert.deepEqual(r.connector.asked, [`${UDS}_1234`, `${UDS}_999`]);
  assert.deepEqual(ops(refused), ["RST"]);
  assert.deepEqual([refused[0]!.hdr.srcPort, refused[0]!.hdr.dstPort], [999, 1001]);
  assert.equal(r.count("connect-refused"), 1);
  assert.equal(r.muxer.connectionCount, 1);
});

test("echo both ways: bytes reach the host stream and the guest intact, over many packets and credit updates", () => {
  const r = new Rig();
  const s = guestConnect(r, 1000, 7);
  r.send(1000, 7, VSOCK_OP_RW, "ping");
  r.settle([s]);
  assert.equal(dec(s.received), "ping");
  s.hostWrite("pong");
  assert.equal(dec(payloadOf(r.settle([s]))), "pong");

  // 300 KB host -> guest: split into RX-buffer-sized packets, in order.
  s.received.length = 0;
  const down = randomBytes(300_000);
  s.hostWrite(down);
  const got = r.settle([s], 16);
  for (let i = 0; s.pendingForGuest > 0; i++) {
    assert.ok(i < 100, "host -> guest stalled");
    assert.equal(got.at(-1)?.hdr.op, VSOCK_OP_CREDIT_REQUEST, "out of credit, the device asks");
    r.send(1000, 7, VSOCK_OP_CREDIT_UPDATE); // the guest app read everything (rig's fwd_cnt)
    got.push(...r.settle([s], 16));
  }
  assert.ok(got.every((p) => p.hdr.op !== VSOCK_OP_RW || p.hdr.len <= 4096), "no packet over the RX buffer");
  assert.deepEqual(Buffer.from(payloadOf(got)), down);

  // 300 KB guest -> host, the guest sending only within the credit we advertise (4 KiB packets).
  const up = randomBytes(300_000);
  let sent = 0;
  let ourBufAlloc = 64 * 1024;
  let ourFwd = 0;
  for (let round = 0; sent < up.length; round++) {
    assert.ok(round < 10_000, `stalled at ${sent} bytes: no credit update came`);
    const credit = ourBufAlloc - (sent - ourFwd);
    const n = Math.min(credit, 4096, up.length - sent);
    if (n > 0) {
      r.send(1000, 7, VSOCK_OP_RW, up.subarray(sent, sent + n));
      sent += n;
    }
    for (const p of r.settle([s])) {
      ourBufAlloc = p.hdr.bufAlloc;
      ourFwd = p.hdr.fwdCnt;
    }
  }
  assert.deepEqual(Buffer.from(s.received), up);
  assert.equal(r.count("conn-killed"), 0);
  assert.ok(r.seen.some((p) => p.hdr.op === VSOCK_OP_CREDIT_UPDATE), "proactive CREDIT_UPDATEs kept the guest sending");
});

test("§5.10.6.3 credit: the device stops at the guest's free space, asks with CREDIT_REQUEST, resumes on CREDIT_UPDATE", () => {
  const r = new Rig();
  r.guestBufAlloc = 1000;
  const s = guestConnect(r, 1000, 7);
  const data = randomBytes(2500);
  s.hostWrite(data);
  let pkts = r.settle([s], 16);
  assert.equal(payloadOf(pkts).byteLength, 1000, "exactly the guest's buf_alloc");
  assert.deepEqual(ops(pkts).slice(-1), ["CREDIT_REQUEST"], "then it asks");
  assert.deepEqual(r.settle([s], 16), [], "and sends nothing more, RX buffers or not");
  assert.equal(s.pendingForGuest, 1500, "the rest stays in the host socket: no buffering on this side");
  // The guest app read 1000 bytes (rig's fwd_cnt): it says so.
  r.send(1000, 7, VSOCK_OP_CREDIT_UPDATE);
  pkts = r.settle([s], 16);
  assert.equal(payloadOf(pkts).byteLength, 1000);
  r.send(1000, 7, VSOCK_OP_CREDIT_UPDATE);
  pkts = [...pkts, ...r.settle([s], 16)];
  assert.deepEqual(Buffer.from([...r.seen.filter((p) => p.hdr.op === VSOCK_OP_RW).flatMap((p) => [...p.payload])]), data);
  // A guest that shrinks its buffer below what is in flight leaves no credit (never negative).
  s.hostWrite("more");
  r.send(1000, 7, VSOCK_OP_CREDIT_UPDATE, undefined, { bufAlloc: 10, fwdCnt: 0 });
  assert.equal(payloadOf(r.settle([s])).byteLength, 0);
  assert.equal(r.muxer.connection(7, 1000)?.peerCredit(), 0);
  assert.equal(s.pendingForGuest, 4);
});

test("our credit: CREDIT_REQUEST is answered, held bytes are flushed on writable and fwd_cnt follows", () => {
  const r = new Rig({ bufAlloc: 4096 });
  const s = guestConnect(r, 1000, 7);
  r.send(1000, 7, VSOCK_OP_CREDIT_REQUEST);
  let pkts = r.settle([s]);
  assert.deepEqual(ops(pkts), ["CREDIT_UPDATE"]);
  assert.deepEqual([pkts[0]!.hdr.bufAlloc, pkts[0]!.hdr.fwdCnt], [4096, 0]);
  s.capacity = 0; // the host app is not reading
  const data = randomBytes(3000);
  r.send(1000, 7, VSOCK_OP_RW, data);
  assert.deepEqual(r.settle([s]), [], "nothing forwarded, nothing to update");
  assert.equal(r.muxer.connection(7, 1000)?.bufferedBytes, 3000);
  assert.deepEqual([s.readable, s.writable], [true, true], "the runtime polls for room");
  s.capacity = 1000;
  pkts = r.settle([s]);
  assert.deepEqual(ops(pkts), ["CREDIT_UPDATE"], "the guest thinks we have 1096 free, under the 4 KiB threshold");
  assert.equal(pkts[0]!.hdr.fwdCnt, 1000);
  s.capacity = Number.POSITIVE_INFINITY;
  pkts = r.settle([s]);
  assert.equal(pkts.at(-1)!.hdr.fwdCnt, 3000);
  assert.deepEqual(Buffer.from(s.received), data, "in order");
  assert.equal(s.writable, false, "no more polling for room once the buffer is empty");
});

test("a guest that sends past our credit gets that connection RST; another connection keeps flowing", () => {
  const r = new Rig({ bufAlloc: 4096 });
  const a = guestConnect(r, 1000, 7);
  const b = guestConnect(r, 1001, 7);
  a.capacity = 0;
  r.send(1000, 7, VSOCK_OP_RW, randomBytes(4096));
  assert.deepEqual(r.settle([a, b]), [], "exactly the credit is fine");
  assert.equal(r.muxer.connection(7, 1000)?.bufferedBytes, 4096);
  r.send(1000, 7, VSOCK_OP_RW, "!");
  const pkts = r.settle([a, b]);
  assert.deepEqual(ops(pkts), ["RST"]);
  assert.deepEqual([pkts[0]!.hdr.srcPort, pkts[0]!.hdr.dstPort], [7, 1000]);
  assert.equal(a.closed, true);
  assert.equal(r.count("credit-overrun"), 1);
  assert.equal(r.muxer.connection(7, 1000), undefined, "forgotten, with its 4 KiB");
  // The other connection is untouched.
  r.send(1001, 7, VSOCK_OP_RW, "still here");
  b.hostWrite("and back");
  const back = r.settle([a, b]);
  assert.equal(dec(b.received), "still here");
  assert.equal(dec(payloadOf(back)), "and back");
  // Against the credit we advertised, not only our buffer: an empty buffer does not excuse it.
  const r2 = new Rig({ bufAlloc: 4096 });
  const c = guestConnect(r2, 1000, 7);
  r2.send(1000, 7, VSOCK_OP_RW, randomBytes(4096));
  r2.send(1000, 7, VSOCK_OP_RW, "x"); // before it saw any update from us
  assert.deepEqual(ops(r2.settle([c])), ["RST"]);
  assert.equal(c.received.length, 4096);
});

test("1000 short connections each way open and close with no state left behind", () => {
  const r = new Rig();
  for (let i = 0; i < 1000; i++) {
    const s = guestConnect(r, 20000 + i, 7000);
    r.send(20000 + i, 7000, VSOCK_OP_RW, "x");
    r.send(20000 + i, 7000, VSOCK_OP_SHUTDOWN, undefined, { flags: VSOCK_SHUTDOWN_BOTH });
    const pkts = r.settle([s]);
    assert.deepEqual(ops(pkts), ["RST"], "§5.10.6.5: a full SHUTDOWN is answered with RST");
    assert.equal(dec(s.received), "x");
    assert.equal(s.closed, true);
  }
  for (let i = 0; i < 1000; i++) {
    const { s, hostPort } = hostConnect(r, 80);
    assert.equal(hostPort, HOST_PORT0 + i);
    s.eof = true; // the host client hangs up
    const pkts = r.settle([s]);
    assert.deepEqual(ops(pkts), ["SHUTDOWN"]);
    assert.equal(pkts[0]!.hdr.flags, VSOCK_SHUTDOWN_BOTH);
    r.send(80, hostPort, VSOCK_OP_RST);
    assert.deepEqual(r.settle([s]), []);
    assert.equal(s.closed, true);
    assert.equal(s.closeCalls, 1);
  }
  assert.equal(r.muxer.connectionCount, 0);
  assert.equal(r.muxer.pendingClientCount, 0);
  assert.equal(r.muxer.allocatedPortCount, 0);
  assert.equal(r.muxer.hasPendingRx(), false);
  assert.equal(r.muxer.nextDeadline(), undefined);
  assert.equal(r.count("conn-added"), 2000);
  assert.equal(r.count("conn-removed"), 2000);
  assert.equal(r.count("conn-killed"), 0);
});

test("packets for unknown flows get RST (never an RST itself); wrong CIDs are dropped; unknown type -> RST", () => {
  const r = new Rig();
  r.send(1000, 4444, VSOCK_OP_RW, "zz");
  r.send(1000, 4444, VSOCK_OP_RST);
  r.send(1000, 4444, VSOCK_OP_SHUTDOWN, undefined, { flags: 3 });
  r.send(1000, 4444, VSOCK_OP_CREDIT_UPDATE);
  r.send(1000, 4444, VSOCK_OP_RESPONSE);
  let pkts = r.settle([]);
  assert.deepEqual(ops(pkts), ["RST", "RST", "RST", "RST"]);
  for (const p of pkts) {
    assert.deepEqual([p.hdr.srcCid, p.hdr.dstCid, p.hdr.srcPort, p.hdr.dstPort], [2n, 3n, 4444, 1000]);
  }
  // Not from the guest's CID, or not to the host, or reserved upper bits set: dropped, not answered.
  r.connector.listening.add(`${UDS}_5`);
  r.send(1000, 5, VSOCK_OP_REQUEST, undefined, { srcCid: 4n });
  r.send(1000, 5, VSOCK_OP_REQUEST, undefined, { dstCid: 1n });
  r.send(1000, 5, VSOCK_OP_REQUEST, undefined, { srcCid: 3n | (1n << 32n) });
  r.send(1000, 5, VSOCK_OP_RW, "x", { dstCid: 2n | (1n << 40n) });
  assert.deepEqual(r.settle([]), []);
  assert.equal(r.count("dropped"), 4);
  assert.deepEqual(r.connector.asked, []);
  // §5.10.6.4: an unknown type gets RST, and no connection.
  r.send(1000, 5, VSOCK_OP_REQUEST, undefined, { type: 2 });
  pkts = r.settle([]);
  assert.deepEqual(ops(pkts), ["RST"]);
  assert.deepEqual(r.connector.asked, []);
  // A closed flow's port: RST.
  const s = guestConnect(r, 1000, 5);
  r.send(1000, 5, VSOCK_OP_RST);
  r.settle([s]);
  assert.equal(s.closed, true);
  r.send(1000, 5, VSOCK_OP_RW, "late");
  assert.deepEqual(ops(r.settle([s])), ["RST"]);
});

test("clean and forced endings: host hang-up, the guest's SHUTDOWN with bytes still held, timeouts", () => {
  const r = new Rig();
  // The host writes, then hangs up: the bytes arrive first, then SHUTDOWN; the guest's RST ends it.
  const s = guestConnect(r, 1000, 7);
  s.hostWrite("last words");
  s.eof = true;
  let pkts = r.settle([s]);
  assert.deepEqual(ops(pkts), ["RW", "SHUTDOWN"]);
  assert.equal(dec(pkts[0]!.payload), "last words");
  assert.equal(s.closed, true, "the host stream is closed at once");
  // The guest stays silent: RST after the shutdown timeout.
  r.time = 2000;
  r.muxer.sweep();
  assert.deepEqual(ops(r.settle([])), ["RST"]);
  assert.equal(r.muxer.connectionCount, 0);

  // The guest shuts down while the host has not taken its bytes: RST only once they are delivered.
  const t = guestConnect(r, 1001, 7);
  t.capacity = 0;
  r.send(1001, 7, VSOCK_OP_RW, "pending");
  r.send(1001, 7, VSOCK_OP_SHUTDOWN, undefined, { flags: 2 });
  r.send(1001, 7, VSOCK_OP_SHUTDOWN, undefined, { flags: 1 }); // flags are permanent: 2 | 1
  assert.deepEqual(r.settle([t]), []);
  t.capacity = Number.POSITIVE_INFINITY;
  pkts = r.settle([t]);
  assert.deepEqual(ops(pkts), ["RST"]);
  assert.equal(dec(t.received), "pending");
  assert.equal(t.closed, true);

  // A guest-initiated flow whose host end closes before our RESPONSE went out gets RST instead.
  r.connector.listening.add(`${UDS}_8`);
  r.send(1002, 8, VSOCK_OP_REQUEST);
  r.device.processTx(r.tx); // no RX buffers yet
  const u = r.connector.accepted.at(-1)!;
  u.emit("closed");
  assert.deepEqual(ops(r.settle([u])), ["RST"]);
  assert.equal(r.count("conn-killed"), 2, "the shutdown timeout and the early close");
  assert.equal(r.muxer.connectionCount, 0);
});

test("protocol violations reset the flow: data before the handshake, a second REQUEST, op INVALID", () => {
  const r = new Rig();
  const s = new FakeStream();
  r.muxer.acceptHost(s);
  s.hostWrite("CONNECT 52\n");
  r.settle([s]);
  r.send(52, HOST_PORT0, VSOCK_OP_RW, "too early");
  assert.deepEqual(ops(r.settle([s])), ["RST"]);
  assert.equal(s.closed, true);
  assert.equal(s.received.length, 0);
  const a = guestConnect(r, 1000, 7);
  r.send(1000, 7, VSOCK_OP_REQUEST);
  assert.deepEqual(ops(r.settle([a])), ["RST"]);
  const b = guestConnect(r, 1001, 7);
  r.send(1001, 7, 0);
  assert.deepEqual(ops(r.settle([b])), ["RST"]);
  assert.equal(r.count("conn-killed"), 3);
  assert.equal(r.muxer.connectionCount, 0);
});

test("§5.10.6.1: with no RX buffers, TX stops when the RST backlog is full and resumes after RX is served", () => {
  const r = new Rig({}, 512);
  for (let i = 0; i < 300; i++) r.send(1000 + i, 4444, VSOCK_OP_RW, "x");
  const res = r.device.processTx(r.tx);
  assert.equal(res.stalled, true);
  assert.equal(r.txDrv.takeUsed().length, RST_BACKLOG_MAX, "the rest stays in the ring");
  assert.equal(r.device.fillRx(r.rx).stalled, true, "RSTs are waiting for RX buffers");
  r.postRx(300);
  assert.equal(r.device.fillRx(r.rx).stalled, false);
  assert.equal(r.takeRx().length, RST_BACKLOG_MAX);
  assert.equal(r.device.processTx(r.tx).stalled, false);
  assert.equal(r.txDrv.takeUsed().length, 300 - RST_BACKLOG_MAX);
  r.device.fillRx(r.rx);
  const last = r.takeRx();
  assert.equal(last.length, 300 - RST_BACKLOG_MAX);
  assert.deepEqual(last.map((p) => p.hdr.dstPort), Array.from({ length: 44 }, (_, i) => 1256 + i), "in order, none lost");
});

test("malformed TX and RX chains get used length 0 and the device carries on", () => {
  const r = new Rig();
  r.postRx(0);
  // TX: a writable buffer, a short header, a len that disagrees with the bytes, a buffer outside RAM.
  const hdr = r.hdr(1000, 4444, VSOCK_OP_RW, { len: 3 });
  r.mem.write(0x30000, new Uint8Array(64));
  const w = r.txDrv.addChain([{ addr: 0x30000, len: 44 }, { addr: 0x30100, len: 3, write: true }]);
  r.txDrv.publish(w);
  const short = r.txDrv.addChain([{ addr: 0x30000, len: 20 }]);
  r.txDrv.publish(short);
  r.sendRaw(hdr, enc("ab"));
  const outside = r.txDrv.addChain([{ addr: 0x7fff0000, len: 44 }]);
  r.txDrv.publish(outside);
  r.send(1000, 4444, VSOCK_OP_RW, "ok");
  r.device.processTx(r.tx);
  const used = r.txDrv.takeUsed();
  assert.equal(used.length, 5);
  assert.ok(used.every((u) => u.len === 0), "TX is always used length 0");
  assert.equal(r.count("malformed"), 4);
  // RX: a chain with a readable buffer, then one too small for a header, then a good one.
  const ro = r.rxDrv.addChain([{ addr: 0x200000, len: 100 }]);
  r.rxDrv.publish(ro);
  const tiny = r.rxDrv.addChain([{ addr: 0x200100, len: 43, write: true }]);
  r.rxDrv.publish(tiny);
  r.postRx(1);
  r.device.fillRx(r.rx);
  const got = r.takeRx();
  assert.deepEqual(ops(got), ["RST"], "the valid packet's RST went to the good buffer");
  assert.equal(r.count("malformed"), 6);
  assert.equal(r.count("tx-packets"), 1);
});

test("§5.10.6.7 TRANSPORT_RESET: id 0 in the event buffer; every connection and client is dropped", () => {
  const r = new Rig();
  const a = guestConnect(r, 1000, 7);
  const { s: b } = hostConnect(r, 52);
  const c = new FakeStream();
  r.muxer.acceptHost(c);
  b.hostWrite("unsent");
  b.poll();
  assert.equal(r.device.sendTransportReset(r.ev).sent, false, "no event buffer yet");
  r.mem.fill(0x300000, 8, 0xff);
  const head = r.evDrv.addChain([{ addr: 0x300000, len: 8, write: true }]);
  r.evDrv.publish(head);
  const res = r.device.sendTransportReset(r.ev);
  assert.deepEqual(res, { sent: true, interrupt: true });
  assert.deepEqual(r.evDrv.takeUsed(), [{ id: head, len: 4 }]);
  assert.deepEqual([...r.mem.read(0x300000, 8)], [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  assert.ok(a.closed && b.closed && c.closed);
  assert.equal(r.muxer.connectionCount, 0);
  assert.equal(r.muxer.pendingClientCount, 0);
  assert.equal(r.muxer.allocatedPortCount, 0);
  assert.equal(r.muxer.hasPendingRx(), false);
});

test("connection limit: past maxConnections, clients are closed and guest REQUESTs get RST", () => {
  const r = new Rig({ maxConnections: 2 });
  guestConnect(r, 1000, 7);
  hostConnect(r, 52);
  const c = new FakeStream();
  r.muxer.acceptHost(c);
  assert.equal(c.closed, true);
  r.send(1001, 7, VSOCK_OP_REQUEST);
  assert.deepEqual(ops(r.settle([])), ["RST"]);
  assert.equal(r.count("conn-limit"), 2);
});

test("a host port is never given to a host client when a guest flow already uses that (port, guest port) key", () => {
  // Found by the random-sequence property: the guest may connect to a host port in [2^30, 2^31) too.
  const r = new Rig();
  const g = guestConnect(r, 52, HOST_PORT0);
  const { s, hostPort } = hostConnect(r, 52);
  assert.equal(hostPort, HOST_PORT0 + 1);
  r.send(52, HOST_PORT0, VSOCK_OP_RW, "to g");
  r.send(52, hostPort, VSOCK_OP_RW, "to s");
  r.settle([g, s]);
  assert.equal(dec(g.received), "to g");
  assert.equal(dec(s.received), "to s");
});
