// The vsock device under hostile input: fast-check properties over random ring contents and random
// (well-formed or not) packet sequences mixed with host stream events and time.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { SplitQueue, VirtqueueError } from "../queue.js";
import { DESC_SIZE } from "../spec.js";
import { layoutAt } from "../testing.js";
import { VsockDevice } from "./device.js";
import { VsockMuxer } from "./muxer.js";
import { FakeConnector, FakeStream, GUEST_CID, Rig } from "./testing.js";
import {
  VSOCK_HOST_CID,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RW,
  VSOCK_TYPE_STREAM,
  encodeHeader,
  type VsockHeader,
} from "./packet.js";

/** Runs `f`; the only exception allowed out is a fatal VirtqueueError (a broken ring). */
function onlyFatal(f: () => void): void {
  try {
    f();
  } catch (e) {
    if (e instanceof VirtqueueError && e.fatal) return;
    throw e;
  }
}

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
/** A descriptor that usually points at the data area, sometimes anywhere. */
const desc = fc.record({
  addr: fc.oneof(fc.integer({ min: 0x8000, max: 0x8fff }).map(BigInt), u64),
  len: fc.oneof(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 0xffffffff })),
  flags: fc.integer({ min: 0, max: 7 }),
  next: fc.integer({ min: 0, max: 20 }),
});
/** Mostly `usual`, sometimes anything `rare` gives: fuzzing that still reaches established flows. */
const mostly = <T>(usual: fc.Arbitrary<T>, rare: fc.Arbitrary<T>): fc.Arbitrary<T> =>
  fc.oneof({ weight: 8, arbitrary: usual }, { weight: 1, arbitrary: rare });
/** A header with every field drawn from values that matter, or anything. */
const header: fc.Arbitrary<VsockHeader> = fc.record({
  srcCid: mostly(fc.constant(BigInt(GUEST_CID)), fc.constantFrom(4n, BigInt(GUEST_CID) | (1n << 32n), 2n)),
  dstCid: mostly(fc.constant(BigInt(VSOCK_HOST_CID)), fc.constantFrom(1n, 0xffffffffn, BigInt(VSOCK_HOST_CID) | (1n << 63n))),
  srcPort: fc.constantFrom(1000, 1001),
  dstPort: fc.constantFrom(7, 2 ** 30, 2 ** 30 + 1),
  len: mostly(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff })),
  type: mostly(fc.constant(VSOCK_TYPE_STREAM), fc.constantFrom(0, 2, 0xffff)),
  // Data and credit traffic most often, as on a live flow; then handshakes and endings.
  op: mostly(fc.constantFrom(5, 5, 5, 6, 7, 1, 1, 2, 4, 3), fc.integer({ min: 0, max: 0xffff })),
  flags: mostly(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0xffffffff })),
  bufAlloc: mostly(fc.constantFrom(0, 100, 4096, 65536, 0xffffffff), fc.integer({ min: 0, max: 0xffffffff })),
  fwdCnt: mostly(fc.constantFrom(0, 0, 0, 100, 4096), fc.integer({ min: 0, max: 0xffffffff })),
});

test("property: random TX and RX ring contents never throw anything but a fatal VirtqueueError", () => {
  fc.assert(
    fc.property(
      fc.array(desc, { minLength: 16, maxLength: 16 }),
      fc.array(desc, { minLength: 16, maxLength: 16 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 16, maxLength: 16 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(header, { minLength: 1, maxLength: 8 }),
      fc.uint8Array({ minLength: 0, maxLength: 512 }),
      fc.boolean(),
      (txDescs, rxDescs, ring, txIdx, rxIdx, hdrs, noise, indirect) => {
        const mem = GuestMemory.anonymous([[0, 0x10000]]);
        const txL = layoutAt(0x1000, 16, { indirect, eventIdx: indirect });
        const rxL = layoutAt(0x2000, 16, { indirect });
        const put = (base: number, ds: typeof txDescs) =>
          ds.forEach((d, i) => {
            const at = base + DESC_SIZE * i;
            mem.writeU64(at, d.addr);
            mem.writeU32(at + 8, d.len);
            mem.writeU16(at + 12, d.flags);
            mem.writeU16(at + 14, d.next);
          });
        put(txL.desc, txDescs);
        put(rxL.desc, rxDescs);
        ring.forEach((h, i) => {
          mem.writeU16(txL.avail + 4 + 2 * i, h);
          mem.writeU16(rxL.avail + 4 + 2 * i, ring[15 - i]!);
        });
        mem.writeU16(txL.avail + 2, txIdx);
        mem.writeU16(rxL.avail + 2, rxIdx);
        // The data area: headers (mostly well formed) with noise after them.
        hdrs.forEach((h, i) => mem.write(0x8000 + 0x100 * i, encodeHeader(h)));
        mem.write(0x8800, noise);
        const connector = new FakeConnector();
        connector.listenAll = true;
        const muxer = new VsockMuxer({ guestCid: GUEST_CID, udsPath: "/v", connector, now: () => 0 });
        const dev = new VsockDevice(mem, muxer);
        const tx = new SplitQueue(mem, txL, { lastAvail: 0, nextUsed: 0 });
        const rx = new SplitQueue(mem, rxL, { lastAvail: 0, nextUsed: 0 });
        for (let i = 0; i < 2; i++) {
          onlyFatal(() => dev.processTx(tx));
          onlyFatal(() => dev.fillRx(rx));
        }
        onlyFatal(() => muxer.sweep());
        assert.ok(connector.accepted.every((s) => s.misuse === 0));
      },
    ),
    { numRuns: 400 },
  );
});

type Action =
  | { kind: "pkt"; hdr: VsockHeader; payload: Uint8Array; fixLen: boolean }
  | { kind: "host"; stream: number; what: "data" | "eof" | "full" | "room" | "broken" | "readable" | "writable" | "closed"; data: Uint8Array }
  | { kind: "accept"; line: string }
  | { kind: "time"; ms: number }
  | { kind: "step"; rx: number };

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("pkt" as const), hdr: header, payload: fc.uint8Array({ maxLength: 300 }), fixLen: mostly(fc.constant(true), fc.constant(false)) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("host" as const),
      stream: fc.nat(5),
      what: fc.constantFrom("data", "eof", "full", "room", "broken", "readable", "writable", "closed"),
      data: fc.uint8Array({ minLength: 1, maxLength: 5000 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("accept" as const), line: fc.constantFrom("CONNECT 1000\n", "CONNECT 1001\n", "connect 7\nxyz", "junk\n", "CONNECT") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("time" as const), ms: fc.nat(3000) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("step" as const), rx: fc.nat(4) }) },
);

test("property: random packet sequences with host events and time keep every bound and never exceed the guest's credit", () => {
  fc.assert(
    fc.property(fc.array(action, { minLength: 10, maxLength: 80, size: "max" }), (actions) => {
      const r = new Rig({ maxConnections: 4, bufAlloc: 4096 });
      r.connector.listenAll = true;
      const clients: FakeStream[] = [];
      const streams = () => [...clients, ...r.connector.accepted];
      // The device's view of each flow's credit, from the guest packets it took (§5.10.6.3).
      const credit = new Map<string, { bufAlloc: number; fwdCnt: number; sent: number }>();
      const pendingHdrs: Array<VsockHeader> = [];
      const step = (rxBufs: number) => {
        if (((r.rxDrv.availIdx - r.rx.pos.lastAvail) & 0xffff) < 64) r.postRx(rxBufs);
        onlyFatalStrict(() => r.device.processTx(r.tx));
        r.txDrv.takeUsed();
        for (const h of pendingHdrs.splice(0)) {
          if (h.srcCid !== BigInt(GUEST_CID) || h.dstCid !== 2n || h.type !== VSOCK_TYPE_STREAM) continue;
          const k = `${h.dstPort}:${h.srcPort}`;
          const c = credit.get(k) ?? { bufAlloc: 0, fwdCnt: 0, sent: 0 };
          credit.set(k, { ...c, bufAlloc: h.bufAlloc, fwdCnt: h.fwdCnt });
        }
        onlyFatalStrict(() => r.device.fillRx(r.rx));
        for (const p of r.takeRx()) {
          assert.equal(p.hdr.srcCid, 2n);
          assert.equal(p.hdr.dstCid, BigInt(GUEST_CID));
          assert.equal(p.hdr.type, VSOCK_TYPE_STREAM);
          assert.ok(p.hdr.op >= VSOCK_OP_REQUEST && p.hdr.op <= VSOCK_OP_CREDIT_REQUEST, `op ${p.hdr.op}`);
          const k = `${p.hdr.srcPort}:${p.hdr.dstPort}`;
          if (p.hdr.op === VSOCK_OP_REQUEST || p.hdr.op === VSOCK_OP_RESPONSE) {
            const c = credit.get(k) ?? { bufAlloc: 0, fwdCnt: 0, sent: 0 };
            credit.set(k, { ...c, sent: 0 }); // a new flow: our tx_cnt starts at 0
          }
          if (p.hdr.op === VSOCK_OP_RW) {
            assert.ok(p.payload.byteLength > 0 && p.payload.byteLength <= 4096);
            const c = credit.get(k)!;
            c.sent = (c.sent + p.payload.byteLength) >>> 0;
            assert.ok(((c.sent - c.fwdCnt) >>> 0) <= c.bufAlloc, `sent past the guest's credit on ${k}`);
          }
        }
      };
      for (const a of actions) {
        switch (a.kind) {
          case "pkt": {
            const hdr = a.fixLen ? { ...a.hdr, len: a.payload.byteLength } : a.hdr;
            r.sendRaw(hdr, a.payload, [7]);
            // Only a packet the device will accept (len right and within bounds) updates its credit view.
            if (hdr.len === a.payload.byteLength) pendingHdrs.push(hdr);
            if (((r.txDrv.availIdx - r.tx.pos.lastAvail) & 0xffff) >= 32) step(2);
            break;
          }
          case "host": {
            const all = streams();
            const s = all.length === 0 ? undefined : all[a.stream % all.length];
            if (s === undefined || s.closed) break;
            if (a.what === "data") s.hostWrite(a.data);
            else if (a.what === "eof") s.eof = true;
            else if (a.what === "full") s.capacity = 0;
            else if (a.what === "room") s.capacity = Number.POSITIVE_INFINITY;
            else if (a.what === "broken") s.broken = true;
            else s.emit(a.what);
            s.poll();
            break;
          }
          case "accept": {
            const s = new FakeStream();
            clients.push(s);
            r.muxer.acceptHost(s);
            s.hostWrite(a.line);
            s.poll();
            break;
          }
          case "time":
            r.time += a.ms;
            r.muxer.sweep();
            break;
          case "step":
            step(a.rx);
            break;
        }
        assert.ok(r.muxer.connectionCount + r.muxer.pendingClientCount <= 4, "maxConnections");
        for (const s of streams()) assert.equal(s.misuse, 0, "no use of a closed stream");
      }
      step(4);
      // Nothing outlives a transport reset, and every host stream is closed exactly once.
      r.device.sendTransportReset(r.ev);
      assert.equal(r.muxer.connectionCount + r.muxer.pendingClientCount + r.muxer.allocatedPortCount, 0);
      assert.equal(r.muxer.hasPendingRx(), false);
      for (const s of streams()) {
        assert.equal(s.closed, true);
        assert.equal(s.misuse, 0);
      }
    }),
    { numRuns: 500 },
  );
});

/** Well-formed rings: nothing may throw at all. */
function onlyFatalStrict(f: () => void): void {
  f();
}

test("a guest flood of CREDIT_REQUESTs on one flow is answered once per RX buffer, not queued without bound", () => {
  const r = new Rig();
  r.connector.listenAll = true;
  r.send(1000, 7, VSOCK_OP_REQUEST);
  r.settle([]);
  for (let i = 0; i < 100; i++) r.send(1000, 7, VSOCK_OP_CREDIT_REQUEST);
  r.device.processTx(r.tx);
  r.postRx(10);
  r.device.fillRx(r.rx);
  assert.equal(r.takeRx().length, 1, "one pending CREDIT_UPDATE, however many requests");
});
