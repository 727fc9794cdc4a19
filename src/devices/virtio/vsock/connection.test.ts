// One connection's state machine on its own: credit arithmetic (virtio 1.2 §5.10.6.3, u32
// free-running counters), poll interest, handshakes and endings (§5.10.6.5).
import { test } from "node:test";
import assert from "node:assert/strict";
import { VsockConnection } from "./connection.js";
import { FakeStream, enc } from "./testing.js";
import {
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
} from "./packet.js";

function conn(initiator: "host" | "guest", peer: { bufAlloc?: number; fwdCnt?: number } = {}) {
  const stream = new FakeStream();
  let now = 0;
  const c = new VsockConnection({
    guestCid: 3,
    localPort: 7,
    peerPort: 1000,
    stream,
    initiator,
    bufAlloc: 1000,
    creditUpdateThreshold: 200,
    requestTimeoutMs: 50,
    shutdownTimeoutMs: 60,
    now: () => now,
    peerBufAlloc: peer.bufAlloc,
    peerFwdCnt: peer.fwdCnt,
  });
  const h = (op: number, extra: Partial<VsockHeader> = {}): VsockHeader => ({
    srcCid: 3n,
    dstCid: 2n,
    srcPort: 1000,
    dstPort: 7,
    len: 0,
    type: VSOCK_TYPE_STREAM,
    op,
    flags: 0,
    bufAlloc: peer.bufAlloc ?? 0,
    fwdCnt: 0,
    ...extra,
  });
  return { c, stream, h, setNow: (t: number) => (now = t) };
}

test("§5.10.6.3 peer_free = peer_buf_alloc - (tx_cnt - peer_fwd_cnt) in u32, across the 2^32 wrap", () => {
  // A guest whose fwd_cnt is just below 2^32 while ours restarts at 0 (a long-lived flow, seen mid-way).
  const { c, stream, h } = conn("guest", { bufAlloc: 300, fwdCnt: 0 });
  assert.equal(c.nextPacket(4096)?.hdr.op, VSOCK_OP_RESPONSE);
  c.guestPacket(h(VSOCK_OP_CREDIT_UPDATE, { bufAlloc: 300, fwdCnt: 0xffffff00 }), new Uint8Array(0));
  assert.equal(c.peerCredit(), 300 - 0x100, "tx_cnt 0 - 0xffffff00 = 0x100 in flight");
  stream.hostWrite(new Uint8Array(100));
  c.hostEvent("readable");
  assert.equal(c.nextPacket(4096)?.hdr.len, 44);
  assert.equal(c.peerCredit(), 0);
  c.guestPacket(h(VSOCK_OP_CREDIT_UPDATE, { bufAlloc: 300, fwdCnt: 44 }), new Uint8Array(0)); // wrapped past 2^32
  assert.equal(c.peerCredit(), 300);
  assert.equal(c.nextPacket(4096)?.hdr.len, 56);
});

test("poll interest: readable only once data can flow and until a read drains it; writable only while bytes are held", () => {
  const { c, stream, h } = conn("host");
  assert.deepEqual(c.interest(), { readable: false, writable: false }, "waiting for the guest's RESPONSE");
  assert.equal(c.nextPacket(4096)?.hdr.op, 1, "REQUEST");
  c.guestPacket(h(VSOCK_OP_RESPONSE, { bufAlloc: 5000 }), new Uint8Array(0));
  assert.equal(new TextDecoder().decode(new Uint8Array(stream.received)), "OK 7\n");
  assert.deepEqual(c.interest(), { readable: true, writable: false });
  c.hostEvent("readable");
  assert.deepEqual(c.interest(), { readable: false, writable: false }, "known readable: no need to poll");
  assert.equal(c.nextPacket(4096), undefined, "the read found nothing");
  assert.deepEqual(c.interest(), { readable: true, writable: false });
  stream.capacity = 0;
  c.guestPacket(h(VSOCK_OP_RW, { len: 10 }), enc("0123456789"));
  assert.deepEqual(c.interest(), { readable: true, writable: true });
  assert.equal(c.bufferedBytes, 10);
});

test("§5.10.6.5 SHUTDOWN flags are permanent; RCV stops our data; both end the flow with RST", () => {
  const { c, stream, h } = conn("guest", { bufAlloc: 5000 });
  c.nextPacket(4096);
  stream.hostWrite("abc");
  c.guestPacket(h(VSOCK_OP_SHUTDOWN, { flags: VSOCK_SHUTDOWN_RCV }), new Uint8Array(0));
  c.hostEvent("readable");
  assert.equal(c.hasPendingRx(), false, "the guest receives no more");
  assert.equal(c.interest().readable, false);
  c.guestPacket(h(VSOCK_OP_SHUTDOWN, { flags: 0 }), new Uint8Array(0));
  assert.equal(c.state, "established", "a later SHUTDOWN with no bits does not undo RCV");
  c.guestPacket(h(VSOCK_OP_SHUTDOWN, { flags: VSOCK_SHUTDOWN_SEND }), new Uint8Array(0));
  assert.equal(c.state, "killed");
  assert.equal(c.killReason, undefined, "a clean end, not a failure");
  assert.equal(stream.closed, true);
  assert.equal(c.nextPacket(4096)?.hdr.op, VSOCK_OP_RST);
  assert.equal(c.state, "closed");
  assert.equal(c.nextPacket(4096), undefined);
});

test("a CREDIT_REQUEST is answered with CREDIT_UPDATE; any packet we send carries the credit and clears it", () => {
  const { c, h } = conn("guest", { bufAlloc: 5000 });
  c.nextPacket(4096);
  c.guestPacket(h(VSOCK_OP_CREDIT_REQUEST), new Uint8Array(0));
  const p = c.nextPacket(4096)!;
  assert.deepEqual([p.hdr.op, p.hdr.bufAlloc, p.hdr.fwdCnt], [VSOCK_OP_CREDIT_UPDATE, 1000, 0]);
  assert.equal(c.hasPendingRx(), false);
  // 900 forwarded: the guest thinks 100 are free (< 200): an update is owed.
  c.guestPacket(h(VSOCK_OP_RW, { len: 900 }), new Uint8Array(900));
  assert.equal(c.forwardedBytes, 900);
  assert.equal(c.hasPendingRx(), true);
  assert.deepEqual([c.nextPacket(4096)!.hdr.op, c.hasPendingRx()], [VSOCK_OP_CREDIT_UPDATE, false]);
});

test("deadlines: an unanswered REQUEST and an unfinished SHUTDOWN expire to RST; a host close before the handshake resets", () => {
  const a = conn("host");
  assert.equal(a.c.deadline, 50);
  a.c.expire();
  assert.deepEqual([a.c.state, a.c.killReason, a.stream.closed], ["killed", "timeout", true]);
  const b = conn("guest", { bufAlloc: 100 });
  b.c.hostEvent("closed");
  assert.deepEqual([b.c.state, b.c.killReason], ["killed", "host-closed-early"]);
  assert.equal(b.c.nextPacket(4096)?.hdr.op, VSOCK_OP_RST, "RST instead of RESPONSE");
  const d = conn("guest", { bufAlloc: 100 });
  d.c.nextPacket(4096);
  d.stream.eof = true;
  d.c.hostEvent("closed");
  d.setNow(10);
  const p = d.c.nextPacket(4096)!;
  assert.equal(p.hdr.op, VSOCK_OP_SHUTDOWN);
  assert.equal(d.c.state, "local-closed");
  assert.equal(d.c.deadline, 70);
});
