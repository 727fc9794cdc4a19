// virtio-nsm framing: the two-chain form of Linux drivers/misc/nsm.c and QEMU virtio-nsm.c, the
// one-chain form, size limits, and hostile chains, with a stub handler (the CBOR handler itself
// is tested in src/security/nsm.test.ts; the whole path in src/cards/nsm-card.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { SplitQueue } from "../queue.js";
import { TestDriver, layoutAt } from "../testing.js";
import { DEVICE_ID_NSM, NSM_REQUEST_MAX_SIZE, NSM_RESPONSE_MAX_SIZE, NsmDevice, nsmDeviceInfo, nsmErrorResponse, nsmFeatures, type NsmHandler } from "./device.js";
import { F_RING_EVENT_IDX, bit } from "../spec.js";

const REQ = 0x10000;
const RESP = 0x20000;

function rig(handler: NsmHandler = (req) => new Uint8Array([0xaa, req.length & 0xff, ...req.subarray(0, 4)])) {
  const mem = GuestMemory.anonymous([[0, 0x80000]]);
  const layout = layoutAt(0x1000, 16);
  const drv = new TestDriver(mem, layout);
  const counts = { requests: 0, bytes: 0, errors: 0 };
  const seen: Uint8Array[] = [];
  const dev = new NsmDevice(
    mem,
    (req) => {
      seen.push(req);
      return handler(req);
    },
    { request: (b) => (counts.requests++, (counts.bytes += b)), error: () => counts.errors++ },
  );
  const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 });
  /** Linux nsm.c: request outbuf, then response inbuf, each its own chain. */
  const pair = (req: Uint8Array, respLen = NSM_RESPONSE_MAX_SIZE, at = 0): [number, number] => {
    mem.write(REQ + at, req);
    const a = drv.addChain([{ addr: REQ + at, len: req.length }]);
    drv.publish(a);
    const b = drv.addChain([{ addr: RESP + at, len: respLen, write: true }]);
    drv.publish(b);
    return [a, b];
  };
  return { mem, drv, dev, q, counts, seen, pair };
}

test("device ID 33 (Linux virtio_ids.h VIRTIO_ID_NITRO_SEC_MOD), one queue, no config, no EVENT_IDX", () => {
  const info = nsmDeviceInfo();
  assert.equal(info.deviceId, DEVICE_ID_NSM);
  assert.equal(info.deviceId, 33);
  assert.equal(info.numQueues, 1);
  assert.equal(info.config.length, 0);
  assert.equal(nsmFeatures() & bit(F_RING_EVENT_IDX), 0n);
});

test("Linux/QEMU framing: request chain then response chain; used: request len 0, then response len", () => {
  const r = rig();
  const [a, b] = r.pair(new Uint8Array([1, 2, 3, 4, 5]));
  const [c, d] = r.pair(new Uint8Array([9, 8]), NSM_RESPONSE_MAX_SIZE, 0x4000);
  const res = r.dev.process(r.q);
  assert.equal(res.interrupt, true);
  assert.deepEqual(r.drv.takeUsed(), [{ id: a, len: 0 }, { id: b, len: 6 }, { id: c, len: 0 }, { id: d, len: 4 }]);
  assert.deepEqual([...r.mem.read(RESP, 6)], [0xaa, 5, 1, 2, 3, 4]);
  assert.deepEqual([...r.mem.read(RESP + 0x4000, 4)], [0xaa, 2, 9, 8]);
  assert.deepEqual(r.counts, { requests: 2, bytes: 10, errors: 0 });
});

test("a request whose response chain is not available yet waits for the next kick", () => {
  const r = rig();
  r.mem.write(REQ, new Uint8Array([7]));
  const a = r.drv.addChain([{ addr: REQ, len: 1 }]);
  r.drv.publish(a);
  assert.equal(r.dev.process(r.q).interrupt, false);
  assert.equal(r.drv.takeUsed().length, 0);
  assert.equal(r.q.pos.lastAvail, 0, "not consumed");
  const b = r.drv.addChain([{ addr: RESP, len: 64, write: true }]);
  r.drv.publish(b);
  r.dev.process(r.q);
  assert.deepEqual(r.drv.takeUsed(), [{ id: a, len: 0 }, { id: b, len: 3 }]);
});

test("one-chain framing: readable request then writable response, used len = response length", () => {
  const r = rig();
  r.mem.write(REQ, new Uint8Array([4, 4]));
  const h = r.drv.addChain([{ addr: REQ, len: 2 }, { addr: RESP, len: 2, write: true }, { addr: RESP + 0x100, len: 100, write: true }]);
  r.drv.publish(h);
  r.dev.process(r.q);
  assert.deepEqual(r.drv.takeUsed(), [{ id: h, len: 4 }]);
  assert.deepEqual([...r.mem.read(RESP, 2)], [0xaa, 2]);
  assert.deepEqual([...r.mem.read(RESP + 0x100, 2)], [4, 4], "the response continues in the next segment");
});

test("limits: a request over 0x1000 bytes is InputTooLarge (never handed over); a short response buffer BufferTooSmall", () => {
  const big = rig();
  const [a, b] = big.pair(new Uint8Array(NSM_REQUEST_MAX_SIZE + 1));
  big.dev.process(big.q);
  const tooLarge = nsmErrorResponse("InputTooLarge");
  assert.deepEqual(big.drv.takeUsed(), [{ id: a, len: 0 }, { id: b, len: tooLarge.length }]);
  assert.deepEqual(big.mem.read(RESP, tooLarge.length), tooLarge);
  assert.equal(big.seen.length, 0);

  const small = rig(() => new Uint8Array(500).fill(1));
  const [c, d] = small.pair(new Uint8Array([1]), 64);
  const [e, f] = small.pair(new Uint8Array([1]), 8, 0x4000); // not even the error fits
  small.dev.process(small.q);
  const bts = nsmErrorResponse("BufferTooSmall");
  assert.deepEqual(small.drv.takeUsed(), [{ id: c, len: 0 }, { id: d, len: bts.length }, { id: e, len: 0 }, { id: f, len: 0 }]);
  assert.deepEqual(small.mem.read(RESP, bts.length), bts);
  assert.equal(small.counts.errors, 1);
});

test("{\"Error\": code} is the CBOR serde/QEMU shape: a1 65 'Error' 6e 'BufferTooSmall'", () => {
  assert.equal(Buffer.from(nsmErrorResponse("BufferTooSmall")).toString("hex"), "a1654572726f726e427566666572546f6f536d616c6c");
});

test("hostile framing: response without request, request followed by a readable chain, bad descriptors; a throwing handler", () => {
  const r = rig();
  const lone = r.drv.addChain([{ addr: RESP, len: 64, write: true }]);
  r.drv.publish(lone);
  r.mem.write(REQ, new Uint8Array([1]));
  const req1 = r.drv.addChain([{ addr: REQ, len: 1 }]);
  r.drv.publish(req1);
  const notResp = r.drv.addChain([{ addr: REQ, len: 1 }]);
  r.drv.publish(notResp);
  const outside = r.drv.addChain([{ addr: 0x7fff0000, len: 16 }]);
  r.drv.publish(outside);
  const [a, b] = r.pair(new Uint8Array([3]));
  r.dev.process(r.q);
  assert.deepEqual(r.drv.takeUsed(), [
    { id: lone, len: 0 },
    { id: req1, len: 0 },
    { id: notResp, len: 0 },
    { id: outside, len: 0 },
    { id: a, len: 0 },
    { id: b, len: 3 },
  ]);
  assert.equal(r.counts.errors, 3);

  const t = rig(() => {
    throw new Error("boom");
  });
  const [c, d] = t.pair(new Uint8Array([1]));
  t.dev.process(t.q);
  const ie = nsmErrorResponse("InternalError");
  assert.deepEqual(t.drv.takeUsed(), [{ id: c, len: 0 }, { id: d, len: ie.length }]);
});
