// The rng card for real: a worker filling memfd guest RAM from the host CSPRNG on an eventfd kick.
import { test } from "node:test";
import assert from "node:assert/strict";
import { signalEventfd } from "./index.js";
import { cardRig, waitIrq, waitUsed } from "./testing.js";
import { r32 } from "../devices/virtio/testing.js";
import { MMIO_DEVICE_ID, MMIO_STATUS, STATUS_DEVICE_NEEDS_RESET } from "../devices/virtio/spec.js";

const BUF = 0x100000;

test("rng card: buffers filled with CSPRNG bytes (sizes right, not all equal, every byte value near its share), hostile chains answered, card alive", { timeout: 20_000 }, async (t) => {
  const r = await cardRig(t, { kind: "rng", config: { maxRequestBytes: 32 * 1024 } });
  assert.equal(r32(r.dev, MMIO_DEVICE_ID), 4, "virtio 1.2 §5.4.1 device ID");
  r.mem.fill(BUF, 0x40000, 0);
  const a = r.drv.addChain([{ addr: BUF, len: 16, write: true }]);
  r.drv.publish(a);
  const b = r.drv.addChain([{ addr: BUF + 0x1000, len: 100, write: true }, { addr: BUF + 0x2000, len: 28, write: true }]);
  r.drv.publish(b);
  const big = r.drv.addChain([{ addr: BUF + 0x10000, len: 0x20000, write: true }]); // capped at 32 KiB
  r.drv.publish(big);
  // Hostile: a device-readable buffer (§5.4.6.2), and a descriptor pointing outside guest RAM.
  r.mem.fill(BUF + 0x3000, 64, 0x5a);
  const ro = r.drv.addChain([{ addr: BUF + 0x3000, len: 64 }]);
  r.drv.publish(ro);
  const outside = r.drv.addChain([{ addr: 0x40000000, len: 64, write: true }]);
  r.drv.publish(outside);
  signalEventfd(r.notifyFd);
  await waitIrq(r.irqFd);
  const used = r.drv.takeUsed();
  assert.deepEqual(used, [
    { id: a, len: 16 },
    { id: b, len: 128 },
    { id: big, len: 32 * 1024 },
    { id: ro, len: 0 },
    { id: outside, len: 0 },
  ]);
  const bytes = r.mem.read(BUF + 0x10000, 32 * 1024);
  assert.ok(r.mem.read(BUF + 0x10000 + 32 * 1024, 0x20000 - 32 * 1024).every((x) => x === 0), "nothing past the cap");
  assert.ok(new Set(r.mem.read(BUF, 16)).size > 1, "16 bytes not all equal");
  // Crude quality: 32 KiB gives each byte value 128 on average; a CSPRNG stays far inside [64, 200].
  const hist = new Array<number>(256).fill(0);
  for (const x of bytes) hist[x]!++;
  assert.ok(Math.min(...hist) > 64 && Math.max(...hist) < 200, `histogram spread ${Math.min(...hist)}..${Math.max(...hist)}`);
  assert.ok(r.mem.read(BUF + 0x3000, 64).every((x) => x === 0x5a), "a readable buffer is never written");
  assert.equal(r32(r.dev, MMIO_STATUS) & STATUS_DEVICE_NEEDS_RESET, 0, "hostile chains do not break the device");
  // Still serving after the hostile ones.
  const c = r.drv.addChain([{ addr: BUF + 0x4000, len: 64, write: true }]);
  r.drv.publish(c);
  signalEventfd(r.notifyFd);
  await waitIrq(r.irqFd);
  assert.deepEqual(r.drv.takeUsed(), [{ id: c, len: 64 }]);
  const m = r.card.metrics();
  assert.equal(m.requests, 4);
  assert.equal(m.bytes, 16 + 128 + 32 * 1024 + 64);
  assert.equal(m.errors, 2);
  assert.equal(r.card.failure, undefined);
});

test("rng card: a bandwidth limit throttles bytes and lifts while running", { timeout: 20_000 }, async (t) => {
  const r = await cardRig(t, { kind: "rng", config: { rateLimiter: { bandwidth: { size: 1024, refillTime: 100 } } } });
  const t0 = performance.now();
  const heads = [0, 1, 2].map((i) => {
    const h = r.drv.addChain([{ addr: BUF + 0x1000 * i, len: 1024, write: true }]);
    r.drv.publish(h);
    return h;
  });
  signalEventfd(r.notifyFd);
  const got: number[] = [];
  while (got.length < heads.length) {
    if (performance.now() - t0 > 5000) assert.fail("throttled requests never completed");
    got.push(...r.drv.takeUsed().map((u) => u.len));
    await new Promise((res) => setTimeout(res, 5));
  }
  const took = performance.now() - t0;
  assert.deepEqual(got, [1024, 1024, 1024]);
  assert.ok(took >= 150, `3 KiB at 1 KiB per 100 ms took ${took.toFixed(0)} ms`);
  assert.ok(r.card.metrics().throttled >= 1);
  r.card.updateRateLimiter({ bandwidth: null });
  await new Promise((res) => setTimeout(res, 30));
  const t1 = performance.now();
  const h = r.drv.addChain([{ addr: BUF, len: 4096, write: true }]);
  r.drv.publish(h);
  signalEventfd(r.notifyFd);
  assert.deepEqual(await waitUsed(r.drv, 1), [{ id: h, len: 4096 }]);
  assert.ok(performance.now() - t1 < 100, "no longer throttled");
});
