// virtio-rng request machine: virtio 1.2 §5.4 over plain guest memory, with hostile chains.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { SplitQueue } from "../queue.js";
import { TestDriver, layoutAt } from "../testing.js";
import type { Throttle } from "../blk/device.js";
import { DEVICE_ID_ENTROPY, RngDevice, rngDeviceInfo, rngFeatures } from "./device.js";
import { DESC_F_NEXT, DESC_F_WRITE, F_VERSION_1, bit } from "../spec.js";

function rig(opts: { max?: number; throttle?: Throttle; indirect?: boolean } = {}) {
  const mem = GuestMemory.anonymous([[0, 0x80000]]);
  const layout = layoutAt(0x1000, 16, { indirect: opts.indirect ?? false });
  const drv = new TestDriver(mem, layout);
  const counts = { requests: 0, bytes: 0, errors: 0, throttled: 0 };
  const stats = {
    request: (b: number) => {
      counts.requests++;
      counts.bytes += b;
    },
    error: () => counts.errors++,
    throttled: () => counts.throttled++,
  };
  let n = 0;
  // A counting "entropy" source, so tests can see exactly which bytes were written.
  const source = { fill: (b: Uint8Array) => b.forEach((_, i) => (b[i] = 1 + (n++ % 250))) };
  const dev = new RngDevice(mem, source, { maxRequestBytes: opts.max }, stats, opts.throttle);
  const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 });
  return { mem, drv, dev, q, counts };
}

test("virtio 1.2 §5.4.1-4: device ID 4, one queue, no device features, no config", () => {
  const info = rngDeviceInfo();
  assert.equal(info.deviceId, DEVICE_ID_ENTROPY);
  assert.equal(info.deviceId, 4);
  assert.equal(info.numQueues, 1);
  assert.equal(info.config.length, 0);
  assert.equal(rngFeatures() >> 32n, bit(F_VERSION_1) >> 32n, "only VERSION_1 above bit 31");
  assert.equal(rngFeatures() & 0xffffffn, 0n, "no device-specific bits (0-23)");
});

test("virtio 1.2 §5.4.6.1: writable buffers are filled, used len = bytes written, across segments", () => {
  const r = rig();
  r.mem.fill(0x10000, 0x3000, 0);
  const a = r.drv.addChain([{ addr: 0x10000, len: 100, write: true }]);
  r.drv.publish(a);
  const b = r.drv.addChain([{ addr: 0x11000, len: 7, write: true }, { addr: 0x12000, len: 9, write: true }]);
  r.drv.publish(b);
  const res = r.dev.process(r.q);
  assert.equal(res.kind, "idle");
  assert.equal(res.interrupt, true);
  assert.deepEqual(r.drv.takeUsed(), [{ id: a, len: 100 }, { id: b, len: 16 }]);
  assert.ok(r.mem.read(0x10000, 100).every((x) => x !== 0));
  assert.equal(r.mem.readU8(0x10000 + 100), 0, "nothing past the buffer");
  assert.ok(r.mem.read(0x11000, 7).every((x) => x !== 0) && r.mem.read(0x12000, 9).every((x) => x !== 0));
  assert.equal(r.mem.readU8(0x11007), 0);
  assert.deepEqual(r.counts, { requests: 2, bytes: 116, errors: 0, throttled: 0 });
});

test("per-request cap: a 64 KiB buffer gets maxRequestBytes, the rest untouched (§5.4.6.1 'MAY use less')", () => {
  const r = rig({ max: 1000 });
  r.mem.fill(0x20000, 0x10000, 0);
  r.drv.publish(r.drv.addChain([{ addr: 0x20000, len: 0x10000, write: true }]));
  r.dev.process(r.q);
  assert.deepEqual(r.drv.takeUsed(), [{ id: 0, len: 1000 }]);
  assert.ok(r.mem.read(0x20000, 1000).every((x) => x !== 0));
  assert.ok(r.mem.read(0x20000 + 1000, 0x10000 - 1000).every((x) => x === 0));
});

test("hostile chains get used len 0 and the device carries on (§5.4.6.2 readable buffers, empty, out of RAM, loops)", () => {
  const r = rig();
  r.mem.fill(0x10000, 0x1000, 0x55);
  const readable = r.drv.addChain([{ addr: 0x10000, len: 64 }]);
  r.drv.publish(readable);
  const mixed = r.drv.addChain([{ addr: 0x10000, len: 8 }, { addr: 0x10100, len: 8, write: true }]);
  r.drv.publish(mixed);
  const empty = r.drv.addChain([{ addr: 0x10200, len: 0, write: true }]);
  r.drv.publish(empty);
  const outside = r.drv.addChain([{ addr: 0x7fff0000, len: 64, write: true }]);
  r.drv.publish(outside);
  // A self-loop: descriptor 9 names itself as next.
  r.drv.writeDesc(r.drv.layout.desc + 16 * 9, 0x10300, 8, DESC_F_WRITE | DESC_F_NEXT, 9);
  r.drv.publish(9);
  // Indirect without VIRTIO_RING_F_INDIRECT_DESC negotiated.
  const ind = r.drv.addIndirect(0x18000, [{ addr: 0x10400, len: 8, write: true }]);
  r.drv.publish(ind);
  const good = r.drv.addChain([{ addr: 0x10800, len: 32, write: true }]);
  r.drv.publish(good);
  r.dev.process(r.q);
  const used = r.drv.takeUsed();
  assert.deepEqual(used.map((u) => u.len), [0, 0, 0, 0, 0, 0, 32]);
  assert.deepEqual(used.map((u) => u.id), [readable, mixed, empty, outside, 9, ind, good]);
  assert.ok(r.mem.read(0x10000, 64).every((x) => x === 0x55), "a readable buffer is never written");
  assert.ok(r.mem.read(0x10100, 8).every((x) => x === 0x55), "nor the writable part of a refused chain");
  assert.equal(r.counts.errors, 6);
  assert.equal(r.counts.requests, 1);
});

test("the throttle holds a request in the ring and resumes it", () => {
  let allow = false;
  const seen: Array<[number, number]> = [];
  const throttle: Throttle = { consume: (b, o) => (seen.push([b, o]), allow ? 0 : 25) };
  const r = rig({ throttle });
  r.drv.publish(r.drv.addChain([{ addr: 0x10000, len: 48, write: true }]));
  const res = r.dev.process(r.q);
  assert.deepEqual(res, { kind: "throttled", interrupt: false, waitMs: 25 });
  assert.equal(r.drv.takeUsed().length, 0);
  allow = true;
  assert.equal(r.dev.process(r.q).kind, "idle");
  assert.deepEqual(r.drv.takeUsed(), [{ id: 0, len: 48 }]);
  assert.deepEqual(seen, [[48, 1], [48, 1]], "bytes and one op per request");
  assert.equal(r.counts.throttled, 1);
});
