// The card runtime for real: memfd-backed guest memory mapped again in a worker, plain eventfds
// standing in for KVM's ioeventfd (the test writes it, as a guest kick would) and irqfd (the
// test reads it, as KVM would inject). What KVM itself adds (the registrations) is not here.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../sys/index.js";
import { createMemfdGuestMemory } from "../memory/create.js";
import { TestDriver, initDevice, layoutAt, r32, w32, type Buf } from "../devices/virtio/testing.js";
import {
  BLK_S_IOERR,
  BLK_S_OK,
  BLK_T_FLUSH,
  BLK_T_IN,
  BLK_T_OUT,
  INT_CONFIG_CHANGE,
  INT_USED_BUFFER,
  MMIO_INTERRUPT_ACK,
  MMIO_INTERRUPT_STATUS,
  MMIO_QUEUE_NOTIFY,
  MMIO_CONFIG,
  MMIO_CONFIG_GENERATION,
  BLK_CFG_CAPACITY,
  MMIO_STATUS,
  STATUS_DEVICE_NEEDS_RESET,
  F_RING_EVENT_IDX,
  bit,
} from "../devices/virtio/spec.js";
import { startWiredCard, waitIrq } from "./testing.js";
import { DriveConfigError, createTransportState, createVirtioMmioDevice, signalEventfd, startCard, type CardHandle, type RateLimiterConfig } from "./index.js";

const MiB = 1 << 20;
const IMG = 256 * 1024;
const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");


interface Rig {
  card: CardHandle;
  drv: TestDriver;
  dev: ReturnType<typeof createVirtioMmioDevice>;
  notifyFd: number;
  irqFd: number;
  image: string;
  /** Queues a request at slot `i`; returns its status byte address. */
  submit(i: number, type: number, sector: number, data?: Buf[]): number;
  mem: ReturnType<typeof createMemfdGuestMemory>["memory"];
  /** used.flags and used.avail_event as the card left them (virtio 1.2 §2.7.8). */
  usedFlags(): number;
  availEvent(): number;
}

async function rig(t: TestContext, opts: { readOnly?: boolean; rateLimiter?: RateLimiterConfig; base?: number; pollMs?: number; eventIdx?: boolean; pooled?: boolean } = {}): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), "card-"));
  const image = join(dir, "disk.img");
  writeFileSync(image, Buffer.alloc(IMG, 0xee));
  const { card, guest, dev, notifyFd, irqFd } = await startWiredCard(t, 2 * MiB, (wiring) =>
    startCard({ ...wiring, ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}), ...(opts.pooled === true ? { pooled: true } : {}), kind: "blk", config: { path: image, readOnly: opts.readOnly, rateLimiter: opts.rateLimiter, id: "card-test" } }),
  );
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const layout = layoutAt(opts.base ?? 0x1000, 64);
  assert.equal(initDevice(dev, layout, opts.eventIdx === false ? (f) => f & ~bit(F_RING_EVENT_IDX) : undefined), 0xf);
  const mem = guest.memory;
  const drv = new TestDriver(mem, layout);
  const submit = (i: number, type: number, sector: number, data: Buf[] = []): number => {
    const hdr = 0x8000 + 32 * i;
    const status = hdr + 16;
    mem.writeU32(hdr, type);
    mem.writeU64(hdr + 8, BigInt(sector));
    mem.writeU8(status, 0xff);
    drv.publish(drv.addChain([{ addr: hdr, len: 16 }, ...data, { addr: status, len: 1, write: true }]));
    return status;
  };
  return { card, drv, dev, notifyFd, irqFd, image, submit, mem, usedFlags: () => mem.readU16(layout.used), availEvent: () => mem.readU16(layout.used + 4 + 8 * layout.size) };
}

// The same card loop (card-loop.ts) in a worker of its own and pooled on this thread's event loop.
for (const pooled of [false, true]) {
  test(`card (${pooled ? "pooled: on this event loop" : "in its worker"}): a kick on the notify eventfd is answered in memfd guest memory, with an irqfd write`, { timeout: 20_000 }, async (t) => {
    const r = await rig(t, { pooled });
    r.mem.fill(0x100000, 8192, 0x42);
    const statuses = [
      r.submit(0, BLK_T_OUT, 8, [{ addr: 0x100000, len: 8192 }]),
      r.submit(1, BLK_T_FLUSH, 0),
      r.submit(2, BLK_T_IN, 8, [{ addr: 0x140000, len: 4096, write: true }]),
      r.submit(3, BLK_T_IN, IMG / 512, [{ addr: 0x150000, len: 512, write: true }]), // past the end
    ];
    signalEventfd(r.notifyFd); // what KVM does on the guest's QueueNotify write (ioeventfd)
    assert.ok((await waitIrq(r.irqFd)) >= 1);
    assert.equal(r32(r.dev, MMIO_INTERRUPT_STATUS) & INT_USED_BUFFER, INT_USED_BUFFER);
    w32(r.dev, MMIO_INTERRUPT_ACK, INT_USED_BUFFER);
    assert.deepEqual(statuses.map((s) => r.mem.readU8(s)), [BLK_S_OK, BLK_S_OK, BLK_S_OK, BLK_S_IOERR]);
    assert.equal(r.drv.takeUsed().length, 4, "every request of one kick answered");
    // Sampled right after the pass that raised the interrupt: give it the moment.
    for (let i = 0; i < 100 && r.card.metrics().cpuMicros === 0; i++) await new Promise((res) => setTimeout(res, 10));
    assert.ok(r.card.metrics().cpuMicros > 0, pooled ? "the card's own CPU time is counted" : "the card's thread CPU time is counted");
    assert.ok(r.mem.read(0x140000, 4096).every((b) => b === 0x42));
    const img = readFileSync(r.image);
    assert.ok(img.subarray(4096, 4096 + 8192).every((b) => b === 0x42) && img[4095] === 0xee && img[4096 + 8192] === 0xee);
    // The fallback path: QueueNotify through the MMIO bus device (no ioeventfd) also reaches the card.
    // EVENT_IDX was negotiated (initDevice accepts every offered feature): ask for the next interrupt. §2.7.10
    r.drv.setUsedEvent(4);
    const s = r.submit(4, BLK_T_IN, 0, [{ addr: 0x160000, len: 512, write: true }]);
    w32(r.dev, MMIO_QUEUE_NOTIFY, 0);
    await waitIrq(r.irqFd);
    assert.equal(r.mem.readU8(s), BLK_S_OK);
    const m = r.card.metrics();
    assert.equal(m.requests, 4);
    assert.equal(m.bytes, 8192 + 4096 + 512);
    assert.equal(m.errors, 1);
    assert.ok(m.interrupts >= 2);
  });
}

test("card: a read-only drive answers writes IOERR and the image file is untouched (hash)", { timeout: 20_000 }, async (t) => {
  const r = await rig(t, { readOnly: true });
  const before = sha(r.image);
  r.mem.fill(0x100000, 4096, 0x99);
  const w = r.submit(0, BLK_T_OUT, 0, [{ addr: 0x100000, len: 4096 }]);
  const rd = r.submit(1, BLK_T_IN, 0, [{ addr: 0x110000, len: 512, write: true }]);
  signalEventfd(r.notifyFd);
  await waitIrq(r.irqFd);
  assert.equal(r.mem.readU8(w), BLK_S_IOERR);
  assert.equal(r.mem.readU8(rd), BLK_S_OK);
  assert.equal(sha(r.image), before);
});

test("card: a broken ring marks only that device NEEDS_RESET; a second drive keeps running; reset recovers", { timeout: 20_000 }, async (t) => {
  const bad = await rig(t);
  const good = await rig(t);
  // The driver moves avail.idx 1000 ahead: the ring is unusable (virtio 1.2 §2.1.2).
  bad.mem.writeU16(bad.drv.layout.avail + 2, 1000);
  signalEventfd(bad.notifyFd);
  await waitIrq(bad.irqFd);
  assert.equal(r32(bad.dev, MMIO_STATUS) & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
  assert.equal(r32(bad.dev, MMIO_INTERRUPT_STATUS) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
  assert.equal(bad.card.metrics().needsReset, 1);
  assert.equal(bad.card.failure, undefined, "the worker itself survived");
  // The other drive is unaffected.
  const s = good.submit(0, BLK_T_IN, 0, [{ addr: 0x100000, len: 512, write: true }]);
  signalEventfd(good.notifyFd);
  await waitIrq(good.irqFd);
  assert.equal(good.mem.readU8(s), BLK_S_OK);
  // The driver resets and sets the device up again: it works.
  bad.mem.fill(bad.drv.layout.desc, 0x2000, 0);
  const fresh = new TestDriver(bad.mem, bad.drv.layout);
  assert.equal(initDevice(bad.dev, bad.drv.layout), 0xf);
  bad.mem.writeU32(0x8000, BLK_T_IN);
  bad.mem.writeU64(0x8008, 0n);
  fresh.publish(fresh.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x100000, len: 512, write: true }, { addr: 0x8010, len: 1, write: true }]));
  signalEventfd(bad.notifyFd);
  await waitIrq(bad.irqFd);
  assert.equal(bad.mem.readU8(0x8010), BLK_S_OK);
});

test("card: ops rate limiter throttles, resumes by timer, counts, and updates while running", { timeout: 20_000 }, async (t) => {
  const r = await rig(t, { rateLimiter: { ops: { size: 1, refillTime: 150 } } });
  const t0 = performance.now();
  const st = [0, 1, 2].map((i) => r.submit(i, BLK_T_IN, i, [{ addr: 0x100000 + 512 * i, len: 512, write: true }]));
  signalEventfd(r.notifyFd); // one kick: the card resumes the rest by itself
  while (!st.every((s) => r.mem.readU8(s) === BLK_S_OK)) {
    if (performance.now() - t0 > 5000) assert.fail("throttled requests never completed");
    await new Promise((res) => setTimeout(res, 5));
  }
  const took = performance.now() - t0;
  assert.ok(took >= 250, `3 ops at 1 per 150 ms took ${took.toFixed(0)} ms`);
  assert.ok(r.card.metrics().throttled >= 2);
  r.card.updateRateLimiter({ ops: null });
  await new Promise((res) => setTimeout(res, 30));
  const t1 = performance.now();
  const more = [3, 4, 5, 6].map((i) => r.submit(i, BLK_T_IN, i, [{ addr: 0x100000 + 512 * i, len: 512, write: true }]));
  signalEventfd(r.notifyFd);
  while (!more.every((s) => r.mem.readU8(s) === BLK_S_OK)) {
    if (performance.now() - t1 > 2000) assert.fail("unthrottled requests did not complete");
    await new Promise((res) => setTimeout(res, 2));
  }
  assert.ok(performance.now() - t1 < 140, "no longer throttled");
});

test("card: a signal that lands on a throttled card's thread (poll ends with EINTR) only shortens its sleep", { timeout: 20_000 }, async (t) => {
  const r = await rig(t, { rateLimiter: { ops: { size: 1, refillTime: 100 } } });
  sys.installSignalHandler("SIGWINCH"); // handled (not ignored), so it interrupts the card's poll(2)
  const st = [0, 1, 2, 3].map((i) => r.submit(i, BLK_T_IN, i, [{ addr: 0x100000 + 512 * i, len: 512, write: true }]));
  signalEventfd(r.notifyFd);
  const t0 = performance.now();
  let signals = 0;
  while (!st.every((s) => r.mem.readU8(s) === BLK_S_OK)) {
    if (performance.now() - t0 > 5000) assert.fail(`throttled requests never completed (card failure: ${r.card.failure?.message})`);
    sys.tgkill(sys.getpid(), r.card.tid, constants.signals.SIGWINCH);
    signals++;
    await new Promise((res) => setTimeout(res, 2));
  }
  assert.ok(signals > 10, `${signals} signals sent while throttled`);
  assert.equal(r.card.failure, undefined);
  assert.equal(r32(r.dev, MMIO_STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
  assert.ok(r.card.metrics().throttled >= 2);
});

test("card: a device reset returns only once the card has left the rings (nothing is written to them afterwards)", { timeout: 20_000 }, async (t) => {
  const r = await rig(t);
  // A long pass: writes each followed by a FLUSH (fdatasync on the image's file system).
  const statuses: number[] = [];
  r.mem.fill(0x100000, 4096, 0x5a);
  for (let i = 0; i < 20; i++) { // 50 descriptors of the 64-entry table
    statuses.push(i % 2 === 0 ? r.submit(i, BLK_T_OUT, i, [{ addr: 0x100000, len: 4096 }]) : r.submit(i, BLK_T_FLUSH, 0));
  }
  signalEventfd(r.notifyFd);
  const t0 = performance.now();
  while (r.mem.readU8(statuses[0]!) === 0xff) {
    if (performance.now() - t0 > 5000) assert.fail("the card never started");
    await new Promise((res) => setImmediate(res));
  }
  w32(r.dev, MMIO_STATUS, 0); // the driver's reset, mid-pass (a vCPU thread's MMIO write in a VM)
  const after = statuses.map((st) => r.mem.readU8(st));
  const done = after.filter((b) => b !== 0xff).length;
  await new Promise((res) => setTimeout(res, 300));
  assert.deepEqual(statuses.map((st) => r.mem.readU8(st)), after, "status bytes changed after the reset had returned");
  t.diagnostic(`${done} of ${statuses.length} requests were answered before the reset returned`);
  assert.equal(r32(r.dev, MMIO_STATUS), 0);
});

for (const pooled of [false, true]) {
  test(`card${pooled ? " (pooled)" : ""}: replaceImage puts another image under the running drive — reads and writes go there, the guest sees the new capacity and a config change; a bad path changes nothing`, { timeout: 20_000 }, async (t) => {
    const r = await rig(t, { pooled });
    const dir = mkdtempSync(join(tmpdir(), "card-swap-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const other = join(dir, "other.img");
    const OTHER = 2 * IMG;
    writeFileSync(other, Buffer.alloc(OTHER, 0x77));
    const gen0 = r32(r.dev, MMIO_CONFIG_GENERATION);

    await assert.rejects(r.card.replaceImage(join(dir, "missing.img")), { name: "DriveConfigError", message: /missing\.img does not exist/ });
    let st = r.submit(0, BLK_T_IN, 0, [{ addr: 0x100000, len: 512, write: true }]);
    signalEventfd(r.notifyFd);
    await waitIrq(r.irqFd);
    assert.equal(r.mem.readU8(st), BLK_S_OK);
    assert.equal(r.mem.readU8(0x100000), 0xee, "still the first image");
    assert.equal(r32(r.dev, MMIO_CONFIG_GENERATION), gen0, "nothing changed");

    assert.deepEqual(await r.card.replaceImage(other), { sizeBytes: OTHER });
    assert.equal(await waitIrq(r.irqFd) >= 1, true, "a config-change interrupt");
    assert.equal(r32(r.dev, MMIO_INTERRUPT_STATUS) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
    w32(r.dev, MMIO_INTERRUPT_ACK, INT_CONFIG_CHANGE);
    assert.notEqual(r32(r.dev, MMIO_CONFIG_GENERATION), gen0);
    assert.equal(r32(r.dev, MMIO_CONFIG + BLK_CFG_CAPACITY), OTHER / 512, "capacity in sectors");

    r.mem.fill(0x110000, 512, 0x42);
    r.drv.setUsedEvent(1); // EVENT_IDX was negotiated: an interrupt once used.idx passes 1 (§2.7.10)
    st = r.submit(1, BLK_T_IN, IMG / 512, [{ addr: 0x100000, len: 512, write: true }]); // past the old end, inside the new
    const wr = r.submit(2, BLK_T_OUT, 1, [{ addr: 0x110000, len: 512 }]);
    signalEventfd(r.notifyFd);
    await waitIrq(r.irqFd);
    assert.equal(r.mem.readU8(st), BLK_S_OK);
    assert.equal(r.mem.readU8(0x100000), 0x77, "read from the new image");
    assert.equal(r.mem.readU8(wr), BLK_S_OK);
    assert.ok(readFileSync(other).subarray(512, 1024).every((b) => b === 0x42), "the write went to the new image");
    assert.ok(readFileSync(r.image).every((b) => b === 0xee), "the old image is untouched");
  });
}

/** A card with no memory and no eventfds: start-up stops at the image check. */
const startupBase = () => ({
  kind: "blk" as const,
  memfd: -1,
  regions: [],
  transportState: createTransportState(),
  notifyFd: -1,
  irqFd: -1,
});

test("card: a missing image is a clear start-up error", { timeout: 20_000 }, async () => {
  await assert.rejects(startCard({ ...startupBase(), config: { path: "/nonexistent/disk.img" } }), (e: unknown) => e instanceof DriveConfigError && /does not exist/.test((e as Error).message));
});

test("card: an unwritable image is a clear start-up error", { timeout: 20_000 }, async (t) => {
  let unwritable: string;
  if (process.getuid?.() === 0) {
    // root ignores file modes; sysfs refuses writes even to root.
    if (!existsSync("/sys/kernel/notes")) return t.skip("running as root and /sys/kernel/notes is absent (no sysfs mounted?): run as a non-root user, or mount sysfs, for a file root cannot write");
    unwritable = "/sys/kernel/notes";
  } else {
    const dir = mkdtempSync(join(tmpdir(), "card-ro-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    unwritable = join(dir, "ro.img");
    writeFileSync(unwritable, Buffer.alloc(4096));
    chmodSync(unwritable, 0o444);
  }
  await assert.rejects(startCard({ ...startupBase(), config: { path: unwritable } }), /cannot be opened for writing/);
});

for (const eventIdx of [false, true]) {
  test(`card polling${eventIdx ? " (EVENT_IDX)" : ""}: after work the card asks for no kicks and serves an unkicked request; when the window ends it asks again`, { timeout: 20_000 }, async (t) => {
    const r = await rig(t, { pollMs: 1500, eventIdx });
    // Whether the card wants a kick for the driver's next buffer, `served` requests in (§2.7.10).
    const wantsKick = (served: number): boolean => (eventIdx ? r.availEvent() === served : r.usedFlags() === 0);
    const first = r.submit(0, BLK_T_IN, 0, [{ addr: 0x140000, len: 512, write: true }]);
    signalEventfd(r.notifyFd);
    assert.ok((await waitIrq(r.irqFd)) >= 1);
    assert.equal(r.mem.readU8(first), BLK_S_OK);
    assert.equal(r.drv.takeUsed().length, 1);
    // The card interrupts at the end of its pass and turns kicks off as its polling begins, just
    // after: on a loaded host this thread can look in between.
    const polls = Date.now() + 1000;
    while (wantsKick(1) && Date.now() < polls) await new Promise((res) => setTimeout(res, 1));
    assert.equal(wantsKick(1), false, `while it polls the card asks for no kicks (flags ${r.usedFlags()}, avail_event ${r.availEvent()})`);
    if (!eventIdx) assert.equal(r.usedFlags(), 1, "VIRTQ_USED_F_NO_NOTIFY");
    else assert.equal(r.availEvent(), 0, "avail_event just behind the driver");
    const kicksBefore = r.card.metrics().kicks;
    // No kick: the polling card finds it.
    const second = r.submit(1, BLK_T_IN, 8, [{ addr: 0x150000, len: 512, write: true }]);
    // (With EVENT_IDX the driver's used_event, still 0, asks for no interrupt: look at the status.)
    const answered = Date.now() + 5000;
    while (r.mem.readU8(second) === 0xff && Date.now() < answered) await new Promise((res) => setTimeout(res, 5));
    assert.equal(r.mem.readU8(second), BLK_S_OK);
    assert.equal(r.drv.takeUsed().length, 1);
    assert.equal(r.card.metrics().kicks, kicksBefore, "served without a kick");
    // The window ends: kicks are wanted again, and a request then needs one.
    const until = Date.now() + 10_000;
    while (!wantsKick(2) && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
    assert.equal(wantsKick(2), true, "after the window the card asks for kicks again");
    const third = r.submit(2, BLK_T_IN, 16, [{ addr: 0x160000, len: 512, write: true }]);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(r.mem.readU8(third), 0xff, "asleep: an unkicked request waits");
    signalEventfd(r.notifyFd);
    const kicked = Date.now() + 5000;
    while (r.mem.readU8(third) === 0xff && Date.now() < kicked) await new Promise((res) => setTimeout(res, 5));
    assert.equal(r.mem.readU8(third), BLK_S_OK);
  });
}
