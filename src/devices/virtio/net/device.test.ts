// virtio-net device model: virtio 1.2 §5.1 over real guest memory and split rings.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { SysError } from "../../../sys/errors.js";
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, virtio_net_hdr_mrg_rxbuf } from "../../../sys/tun.js";
import { SplitQueue, VirtqueueError } from "../queue.js";
import { DESC_F_NEXT, DESC_SIZE, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, bit } from "../spec.js";
import { TestDriver, layoutAt, type Buf } from "../testing.js";
import type { Throttle } from "../blk/device.js";
import {
  NET_QUEUE_SIZE_DEFAULT,
  NetDevice,
  NetIoError,
  netDeviceInfo,
  netFeatures,
  tapOffloadFlags,
  type SinkResult,
} from "./device.js";
import {
  DEVICE_ID_NET,
  NET_FRAME_MAX,
  NET_F_CSUM,
  NET_F_GUEST_CSUM,
  NET_F_GUEST_ECN,
  NET_F_GUEST_TSO4,
  NET_F_GUEST_TSO6,
  NET_F_GUEST_UFO,
  NET_F_HOST_TSO4,
  NET_F_HOST_TSO6,
  NET_F_HOST_UFO,
  NET_F_MAC,
  NET_F_MRG_RXBUF,
  NET_HDR_F_DATA_VALID,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_TCPV4,
  NET_HDR_GSO_UDP,
  NET_HDR_SIZE,
} from "./spec.js";

const RAM = 0x40000;
const QSIZE = 16;
const RX_RING = 0x1000;
const TX_RING = 0x2000;
const BUF = 0x10000;

const ALL = netFeatures();
const NO_MRG = ALL & ~bit(NET_F_MRG_RXBUF);
const NO_GUEST_OFFLOAD = ALL & ~(bit(NET_F_GUEST_CSUM) | bit(NET_F_GUEST_TSO4) | bit(NET_F_GUEST_TSO6) | bit(NET_F_GUEST_UFO));

const concat = (parts: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
};

/** A 12-byte header (fields as given, the rest 0) and `len` bytes of packet derived from `seed`. */
function frame(len: number, seed = 1, hdr: { flags?: number; gso?: number; numBuffers?: number } = {}): Uint8Array {
  const f = new Uint8Array(NET_HDR_SIZE + len);
  f[0] = hdr.flags ?? 0;
  f[1] = hdr.gso ?? 0;
  new DataView(f.buffer).setUint16(10, hdr.numBuffers ?? 0, true);
  for (let i = 0; i < len; i++) f[NET_HDR_SIZE + i] = (i * 7 + seed) & 0xff;
  return f;
}

interface RigOptions {
  features?: bigint;
  throttle?: Throttle;
  sink?: (segs: readonly Uint8Array[]) => SinkResult;
  maxTx?: number;
}

function rig(opts: RigOptions = {}) {
  const mem = GuestMemory.anonymous([[0, RAM]]);
  const features = opts.features ?? ALL;
  const ring = { indirect: (features & bit(F_RING_INDIRECT_DESC)) !== 0n, eventIdx: (features & bit(F_RING_EVENT_IDX)) !== 0n };
  const rxLayout = layoutAt(RX_RING, QSIZE, ring);
  const txLayout = layoutAt(TX_RING, QSIZE, ring);
  const rx = new TestDriver(mem, rxLayout);
  const tx = new TestDriver(mem, txLayout);
  const rxq = new SplitQueue(mem, rxLayout, { lastAvail: 0, nextUsed: 0 });
  const txq = new SplitQueue(mem, txLayout, { lastAvail: 0, nextUsed: 0 });
  const sent: Uint8Array[] = [];
  const calls: Array<readonly Uint8Array[]> = [];
  const sink = {
    writeFrame(segs: readonly Uint8Array[]): SinkResult {
      calls.push(segs);
      const r = opts.sink?.(segs) ?? "sent";
      if (r === "sent") sent.push(concat(segs));
      return r;
    },
  };
  const n = { txFrames: 0, txBytes: 0, rxFrames: 0, rxBytes: 0, txErrors: 0, rxErrors: 0, rxDropped: 0, txThrottled: 0 };
  const stats = {
    txFrame: (b: number) => ((n.txFrames += 1), (n.txBytes += b)),
    rxFrame: (b: number) => ((n.rxFrames += 1), (n.rxBytes += b)),
    txError: () => n.txErrors++,
    rxError: () => n.rxErrors++,
    rxDropped: () => n.rxDropped++,
    txThrottled: () => n.txThrottled++,
  };
  const dev = new NetDevice(mem, features, sink, stats, { txThrottle: opts.throttle, maxTxFramesPerPass: opts.maxTx });
  /** Puts `bytes` in guest memory at `addr` and returns a buffer for it. */
  const put = (addr: number, bytes: Uint8Array): Buf => {
    mem.write(addr, bytes);
    return { addr, len: bytes.byteLength };
  };
  return { mem, rx, tx, rxq, txq, dev, sent, calls, n, put };
}

// ---------------------------------------------------------------------------------------------
// Features and configuration.
// ---------------------------------------------------------------------------------------------

test("virtio 1.2 §5.1.1–§5.1.4: device ID 1, two queues, the feature bits by number, config = the mac", () => {
  const info = netDeviceInfo({ mac: "06:00:ac:10:00:02" });
  assert.equal(info.deviceId, 1);
  assert.equal(DEVICE_ID_NET, 1);
  assert.equal(info.numQueues, 2, "receiveq1 and transmitq1, no controlq (§5.1.2)");
  assert.equal(info.queueNumMax, NET_QUEUE_SIZE_DEFAULT);
  assert.equal(netDeviceInfo({ mac: "06:00:ac:10:00:02", queueSize: 1024 }).queueNumMax, 1024);
  // Bit numbers as §5.1.3 and §6 list them.
  const expected = [0, 1, 5, 7, 8, 10, 11, 12, 14, 15, 28, 29, 32];
  assert.equal(info.features, expected.reduce((f, b) => f | bit(b), 0n));
  assert.deepEqual(
    [NET_F_CSUM, NET_F_GUEST_CSUM, NET_F_MAC, NET_F_GUEST_TSO4, NET_F_GUEST_TSO6, NET_F_GUEST_UFO, NET_F_HOST_TSO4, NET_F_HOST_TSO6, NET_F_HOST_UFO, NET_F_MRG_RXBUF, F_RING_INDIRECT_DESC, F_RING_EVENT_IDX, F_VERSION_1],
    expected,
  );
  // Not offered: GUEST_ECN 9, HOST_ECN 13, STATUS 16, CTRL_VQ 17, MQ 22 (no control queue).
  for (const b of [9, 13, 16, 17, 22]) assert.equal(info.features & bit(b), 0n, `bit ${b} is not offered`);
  // §5.1.3.1: every offered offload comes with what it requires.
  const req: Array<[number, number]> = [
    [NET_F_GUEST_TSO4, NET_F_GUEST_CSUM], [NET_F_GUEST_TSO6, NET_F_GUEST_CSUM], [NET_F_GUEST_UFO, NET_F_GUEST_CSUM],
    [NET_F_HOST_TSO4, NET_F_CSUM], [NET_F_HOST_TSO6, NET_F_CSUM], [NET_F_HOST_UFO, NET_F_CSUM],
  ];
  for (const [f, needs] of req) assert.notEqual(info.features & bit(needs), 0n, `bit ${f} needs bit ${needs}`);
  assert.deepEqual([...info.config], [0x06, 0x00, 0xac, 0x10, 0x00, 0x02]);
  assert.deepEqual([...netDeviceInfo({ mac: Uint8Array.of(2, 0, 0, 0, 0, 9) }).config], [2, 0, 0, 0, 0, 9]);
  assert.throws(() => netDeviceInfo({ mac: "ff:ff:ff:ff:ff:ff" }), /group/);
  assert.throws(() => netDeviceInfo({ mac: Uint8Array.of(1, 2, 3) }), /6 bytes/);
});

test("virtio 1.2 §5.1.6: the 12-byte virtio_net_hdr is the TAP's struct virtio_net_hdr_mrg_rxbuf", () => {
  assert.equal(NET_HDR_SIZE, 12);
  assert.equal(virtio_net_hdr_mrg_rxbuf.size, NET_HDR_SIZE);
  assert.equal(virtio_net_hdr_mrg_rxbuf.fields.num_buffers, 10);
});

test("tapOffloadFlags: the TAP hands out only the offloads the guest accepted (GUEST_* → TUN_F_*)", () => {
  const f = (...bits: number[]): bigint => bits.reduce((a, b) => a | bit(b), bit(F_VERSION_1));
  assert.equal(tapOffloadFlags(f()), 0);
  assert.equal(tapOffloadFlags(ALL), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO);
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_CSUM)), TUN_F_CSUM);
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_CSUM, NET_F_GUEST_TSO4)), TUN_F_CSUM | TUN_F_TSO4);
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_CSUM, NET_F_GUEST_TSO6)), TUN_F_CSUM | TUN_F_TSO6);
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_CSUM, NET_F_GUEST_UFO)), TUN_F_CSUM | TUN_F_UFO);
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_CSUM, NET_F_GUEST_TSO4, NET_F_GUEST_ECN)), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN);
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_CSUM, NET_F_GUEST_ECN)), TUN_F_CSUM, "ECN needs TSO4 or TSO6 (§5.1.3.1)");
  // A driver that broke §5.1.3.1 (TSO without GUEST_CSUM) gets nothing: the kernel refuses TSO without TUN_F_CSUM.
  assert.equal(tapOffloadFlags(f(NET_F_GUEST_TSO4, NET_F_GUEST_TSO6, NET_F_GUEST_UFO)), 0);
  // Host-side (HOST_*, CSUM) features are about what the guest sends: they do not open the TAP's offloads.
  assert.equal(tapOffloadFlags(f(NET_F_CSUM, NET_F_HOST_TSO4, NET_F_HOST_TSO6, NET_F_HOST_UFO, NET_F_MRG_RXBUF)), 0);
});

// ---------------------------------------------------------------------------------------------
// TX.
// ---------------------------------------------------------------------------------------------

test("virtio 1.2 §5.1.6.2: TX frames reach the sink byte-exact as views into guest memory, used with length 0", () => {
  const { mem, tx, txq, dev, sent, calls, n, put } = rig();
  const a = frame(60, 1);
  const b = frame(1500, 2, { flags: NET_HDR_F_NEEDS_CSUM });
  const c = frame(3000, 3, { flags: NET_HDR_F_NEEDS_CSUM, gso: NET_HDR_GSO_TCPV4 });
  tx.publish(tx.addChain([put(BUF, a)]));
  // Header and packet split over three descriptors, the header itself cut in two.
  const h1 = put(BUF + 0x1000, b.subarray(0, 5));
  const h2 = put(BUF + 0x1100, b.subarray(5, 12));
  tx.publish(tx.addChain([h1, h2, put(BUF + 0x2000, b.subarray(12))]));
  tx.publish(tx.addIndirect(BUF + 0x8000, [put(BUF + 0x3000, c.subarray(0, 12)), put(BUF + 0x4000, c.subarray(12))]));
  const r = dev.processTx(txq);
  assert.deepEqual(r, { kind: "idle", interrupt: true });
  assert.deepEqual(sent, [a, b, c]);
  assert.equal(calls[1]!.length, 3, "one segment per descriptor: the card does one writev");
  const ram = mem.regions[0]!.bytes.buffer;
  assert.ok(calls.flat().every((s) => s.buffer === ram), "segments are views of guest RAM, not copies");
  assert.deepEqual(tx.takeUsed(), [{ id: 0, len: 0 }, { id: 1, len: 0 }, { id: 4, len: 0 }]);
  assert.deepEqual({ frames: n.txFrames, bytes: n.txBytes, errors: n.txErrors }, { frames: 3, bytes: 60 + 1500 + 3000, errors: 0 });
});

test("TX hostile chains are used with length 0, counted, and nothing of them reaches the sink", () => {
  const hostile: Array<[string, (r: ReturnType<typeof rig>) => void]> = [
    ["a device-writable buffer", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(60)), { addr: BUF + 0x1000, len: 64, write: true }]))],
    ["writable buffers only", (r) => r.tx.publish(r.tx.addChain([{ addr: BUF, len: 200, write: true }]))],
    ["shorter than the header", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(60).subarray(0, 11))]))],
    ["empty", (r) => r.tx.publish(r.tx.addChain([{ addr: BUF, len: 0 }]))],
    ["one byte over 12 + 65550", (r) => r.tx.publish(r.tx.addChain([{ addr: BUF, len: 0x8000 }, { addr: BUF, len: NET_HDR_SIZE + NET_FRAME_MAX + 1 - 0x8000 }]))],
    ["a loop", (r) => {
      const head = r.tx.addChain([r.put(BUF, frame(60))]);
      r.tx.writeDesc(TX_RING + DESC_SIZE * head, BUF, 72, DESC_F_NEXT, head);
      r.tx.publish(head);
    }],
    ["an address outside RAM", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(60).subarray(0, 12)), { addr: RAM + 0x1000, len: 60 }]))],
    ["a buffer running past the end of RAM", (r) => r.tx.publish(r.tx.addChain([{ addr: RAM - 40, len: 72 }]))],
    ["an address above 2^53", (r) => {
      const head = r.tx.addChain([r.put(BUF, frame(60))]);
      r.tx.writeDesc(TX_RING + DESC_SIZE * head, 2n ** 60n, 72, 0, 0);
      r.tx.publish(head);
    }],
    ["NEEDS_CSUM without VIRTIO_NET_F_CSUM", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(60, 1, { flags: NET_HDR_F_NEEDS_CSUM }))]))],
    ["TSO4 without NEEDS_CSUM", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(3000, 1, { gso: NET_HDR_GSO_TCPV4 }))]))],
    ["a GSO type never negotiated (UDP_L4)", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(3000, 1, { flags: 1, gso: 5 }))]))],
    ["GSO with ECN (HOST_ECN not offered)", (r) => r.tx.publish(r.tx.addChain([r.put(BUF, frame(3000, 1, { flags: 1, gso: 0x81 }))]))],
  ];
  for (const [what, add] of hostile) {
    // The CSUM case needs a driver without CSUM; the others use everything offered.
    const features = what.startsWith("NEEDS_CSUM") ? ALL & ~(bit(NET_F_CSUM) | bit(NET_F_HOST_TSO4) | bit(NET_F_HOST_TSO6) | bit(NET_F_HOST_UFO)) : ALL;
    const r = rig({ features });
    add(r);
    const good = frame(100, 9);
    r.tx.publish(r.tx.addChain([r.put(BUF + 0x20000, good)]));
    const res = r.dev.processTx(r.txq);
    assert.equal(res.kind, "idle", what);
    assert.equal(r.calls.length, 1, `${what}: the sink saw only the good frame`);
    assert.deepEqual(r.sent, [good], what);
    assert.deepEqual(r.tx.takeUsed().map((u) => u.len), [0, 0], what);
    assert.equal(r.n.txErrors, 1, what);
    assert.equal(r.n.txFrames, 1, what);
  }
});

test("TX at the bounds: exactly 12 bytes and exactly 12 + 65550 bytes are sent", () => {
  const r = rig();
  r.tx.publish(r.tx.addChain([r.put(BUF, frame(0))]));
  r.tx.publish(r.tx.addChain([{ addr: BUF, len: 0x8000 }, { addr: BUF + 0x8000, len: NET_HDR_SIZE + NET_FRAME_MAX - 0x8000 }]));
  r.dev.processTx(r.txq);
  assert.deepEqual(r.sent.map((f) => f.byteLength), [12, 12 + 65550]);
  assert.equal(r.n.txErrors, 0);
});

test("TX rate limiting: a throttled frame stays in the ring and is charged once, even when the sink was busy in between", () => {
  const charges: number[] = [];
  let wait = 5;
  const throttle = { consume: (bytes: number, ops: number) => (charges.push(bytes * 10 + ops), wait) };
  let busy = true;
  const r = rig({ throttle, sink: () => (busy ? "busy" : "sent") });
  r.tx.publish(r.tx.addChain([r.put(BUF, frame(100))]));
  assert.deepEqual(r.dev.processTx(r.txq), { kind: "throttled", interrupt: false, waitMs: 5 });
  assert.equal(r.calls.length, 0);
  assert.equal(r.txq.pending(), 1, "the frame stays in the ring");
  assert.equal(r.n.txThrottled, 1);
  wait = 0;
  assert.deepEqual(r.dev.processTx(r.txq), { kind: "blocked", interrupt: false });
  assert.equal(r.txq.pending(), 1, "a busy sink leaves the frame in the ring");
  busy = false;
  assert.deepEqual(r.dev.processTx(r.txq), { kind: "idle", interrupt: true });
  assert.deepEqual(charges, [1001, 1001], "charged when throttled and once when it went; not again after busy");
  assert.equal(r.sent.length, 1);
  assert.equal(r.n.txBytes, 100);
});

test("TX: a frame the host refuses (SysError, NetIoError) is counted and used with 0; any other exception is a bug and propagates", () => {
  const errors = [new SysError("writev(tap)", 5), new NetIoError("refused")];
  const r = rig({ sink: () => { const e = errors.shift(); if (e) throw e; return "sent"; } });
  for (let i = 0; i < 3; i++) r.tx.publish(r.tx.addChain([r.put(BUF + 0x1000 * i, frame(60, i))]));
  assert.equal(r.dev.processTx(r.txq).kind, "idle");
  assert.deepEqual(r.tx.takeUsed().map((u) => u.len), [0, 0, 0]);
  assert.equal(r.n.txErrors, 2);
  assert.equal(r.n.txFrames, 1);
  const bug = rig({ sink: () => { throw new TypeError("bug"); } });
  bug.tx.publish(bug.tx.addChain([bug.put(BUF, frame(60))]));
  assert.throws(() => bug.dev.processTx(bug.txq), TypeError);
});

test("TX: one pass takes at most maxTxFramesPerPass chains (good or bad) and says there is more", () => {
  const r = rig({ maxTx: 2 });
  r.tx.publish(r.tx.addChain([{ addr: BUF, len: 3 }])); // malformed: counts toward the pass
  for (let i = 0; i < 5; i++) r.tx.publish(r.tx.addChain([r.put(BUF + 0x1000 * (i + 1), frame(60, i))]));
  assert.equal(r.dev.processTx(r.txq).kind, "more");
  assert.equal(r.sent.length, 1);
  assert.equal(r.dev.processTx(r.txq).kind, "more");
  assert.equal(r.sent.length, 3);
  assert.equal(r.dev.processTx(r.txq).kind, "idle");
  assert.equal(r.sent.length, 5);
  assert.equal(r.n.txErrors, 1);
});

test("virtio 1.2 §2.7.10: TX with EVENT_IDX publishes avail_event and interrupts only when used_event is crossed", () => {
  const r = rig();
  r.tx.setUsedEvent(1); // interrupt once the second used entry is published
  r.tx.publish(r.tx.addChain([r.put(BUF, frame(60))]));
  assert.deepEqual(r.dev.processTx(r.txq), { kind: "idle", interrupt: false });
  assert.equal(r.tx.availEvent(), 1);
  r.tx.publish(r.tx.addChain([r.put(BUF + 0x1000, frame(60))]));
  assert.deepEqual(r.dev.processTx(r.txq), { kind: "idle", interrupt: true });
});

// ---------------------------------------------------------------------------------------------
// RX.
// ---------------------------------------------------------------------------------------------

const u16 = (mem: GuestMemory, addr: number): number => mem.readU16(addr);

test("virtio 1.2 §5.1.6.3.2, §5.1.6.4.1: RX with MRG_RXBUF spreads a frame over 3 chains, num_buffers = 3, all but the last filled", () => {
  const { mem, rx, rxq, dev, n } = rig();
  // The first buffer is two descriptors (8 + 92 bytes), so the header itself is split.
  rx.publish(rx.addChain([{ addr: BUF, len: 8, write: true }, { addr: BUF + 0x100, len: 92, write: true }]));
  rx.publish(rx.addChain([{ addr: BUF + 0x1000, len: 100, write: true }]));
  rx.publish(rx.addChain([{ addr: BUF + 0x2000, len: 100, write: true }]));
  rx.publish(rx.addChain([{ addr: BUF + 0x3000, len: 100, write: true }]));
  mem.fill(BUF + 0x2000, 100, 0xee);
  const f = frame(250, 5, { flags: NET_HDR_F_DATA_VALID, numBuffers: 0x7777 });
  const r = dev.deliverRx(rxq, f);
  assert.deepEqual(r, { kind: "delivered", interrupt: true });
  assert.deepEqual(rx.takeUsed(), [{ id: 0, len: 100 }, { id: 2, len: 100 }, { id: 3, len: 62 }]);
  const got = concat([mem.read(BUF, 8), mem.read(BUF + 0x100, 92), mem.read(BUF + 0x1000, 100), mem.read(BUF + 0x2000, 62)]);
  const want = f.slice();
  new DataView(want.buffer).setUint16(10, 3, true);
  assert.deepEqual(got, want, "header with num_buffers = 3 and DATA_VALID kept (GUEST_CSUM), then the packet");
  assert.ok(mem.read(BUF + 0x2000 + 62, 38).every((b) => b === 0xee), "nothing written past the frame in the last buffer");
  assert.equal(rxq.pending(), 1, "the fourth buffer is left for the next frame");
  assert.deepEqual({ frames: n.rxFrames, bytes: n.rxBytes }, { frames: 1, bytes: 250 });
});

test("RX with MRG_RXBUF: the used index moves once per frame, so the driver never sees a partial packet", () => {
  const { mem, rx, rxq, dev } = rig();
  for (let i = 0; i < 3; i++) rx.publish(rx.addChain([{ addr: BUF + 0x1000 * i, len: 64, write: true }]));
  const seen: number[] = [];
  const orig = mem.writeU16Atomic.bind(mem);
  mem.writeU16Atomic = (gpa: number | bigint, v: number) => {
    if (Number(gpa) === rx.layout.used + 2) seen.push(v);
    orig(gpa, v);
  };
  assert.equal(dev.deliverRx(rxq, frame(150)).kind, "delivered");
  assert.deepEqual(seen, [3], "one used.idx store covering all three buffers");
  assert.equal(u16(mem, BUF + 10), 3);
});

test("virtio 1.2 §5.1.6.3.2: RX without MRG_RXBUF puts the whole frame in one big chain, num_buffers = 1", () => {
  const { mem, rx, rxq, dev } = rig({ features: NO_MRG });
  rx.publish(rx.addChain([{ addr: BUF, len: 1000, write: true }, { addr: BUF + 0x1000, len: 1000, write: true }]));
  const f = frame(1514, 3, { numBuffers: 9 });
  assert.deepEqual(dev.deliverRx(rxq, f), { kind: "delivered", interrupt: true });
  assert.deepEqual(rx.takeUsed(), [{ id: 0, len: f.byteLength }]);
  const want = f.slice();
  new DataView(want.buffer).setUint16(10, 1, true);
  assert.deepEqual(concat([mem.read(BUF, 1000), mem.read(BUF + 0x1000, f.byteLength - 1000)]), want);
});

test("RX without MRG_RXBUF: a frame larger than the posted buffer is dropped (counted) and the buffer stays for the next", () => {
  const { rx, rxq, dev, n } = rig({ features: NO_MRG });
  rx.publish(rx.addChain([{ addr: BUF, len: 12 + 1514, write: true }]));
  assert.equal(dev.deliverRx(rxq, frame(1515)).kind, "dropped");
  assert.equal(n.rxDropped, 1);
  assert.equal(rxq.pending(), 1);
  assert.equal(dev.deliverRx(rxq, frame(1514)).kind, "delivered");
});

test("RX: no buffers → 'no-buffers', nothing consumed, avail_event asks for the next kick; the frame goes in once buffers come", () => {
  const { mem, rx, rxq, dev, n } = rig();
  const f = frame(300, 4);
  assert.deepEqual(dev.deliverRx(rxq, f), { kind: "no-buffers", interrupt: false });
  assert.equal(rx.availEvent(), 0);
  // Mergeable, not enough yet: the two posted buffers are not taken, and the kick is asked for at
  // the driver's current avail index (2), the next buffer it adds.
  rx.publish(rx.addChain([{ addr: BUF, len: 100, write: true }]));
  rx.publish(rx.addChain([{ addr: BUF + 0x1000, len: 100, write: true }]));
  assert.equal(dev.deliverRx(rxq, f).kind, "no-buffers");
  assert.equal(rxq.pos.lastAvail, 0, "nothing consumed");
  assert.equal(rx.availEvent(), 2);
  assert.deepEqual(rx.takeUsed(), []);
  rx.publish(rx.addChain([{ addr: BUF + 0x2000, len: 200, write: true }]));
  assert.equal(dev.deliverRx(rxq, f).kind, "delivered");
  assert.deepEqual(rx.takeUsed().map((u) => u.len), [100, 100, 112]);
  assert.equal(u16(mem, BUF + 10), 3);
  assert.equal(n.rxDropped, 0, "never dropped while waiting for buffers");
  // Without MRG_RXBUF the same: an empty ring is 'no-buffers'.
  const one = rig({ features: NO_MRG });
  assert.equal(one.dev.deliverRx(one.rxq, f).kind, "no-buffers");
});

test("RX with MRG_RXBUF: a frame the whole ring cannot hold is dropped, the buffers stay", () => {
  const { rx, rxq, dev, n } = rig();
  for (let i = 0; i < QSIZE; i++) rx.publish(rx.addChain([{ addr: BUF + 0x100 * i, len: 64, write: true }]));
  assert.equal(dev.deliverRx(rxq, frame(QSIZE * 64)).kind, "dropped");
  assert.equal(n.rxDropped, 1);
  assert.equal(rxq.pending(), QSIZE);
  assert.equal(dev.deliverRx(rxq, frame(100)).kind, "delivered");
});

test("RX hostile chains (readable buffer, under 12 bytes, loop, outside RAM) are used with 0 and the frame goes to the next good one", () => {
  for (const features of [ALL, NO_MRG]) {
    const { mem, rx, rxq, dev, n } = rig({ features });
    rx.publish(rx.addChain([{ addr: BUF, len: 12 }, { addr: BUF + 0x100, len: 1600, write: true }]));
    rx.publish(rx.addChain([{ addr: BUF + 0x1000, len: 11, write: true }]));
    const loop = rx.addChain([{ addr: BUF + 0x2000, len: 1600, write: true }]);
    rx.writeDesc(RX_RING + DESC_SIZE * loop, BUF + 0x2000, 1600, DESC_F_NEXT | 2, loop);
    rx.publish(loop);
    rx.publish(rx.addChain([{ addr: RAM - 100, len: 1600, write: true }]));
    rx.publish(rx.addChain([{ addr: BUF + 0x3000, len: 1600, write: true }]));
    mem.fill(BUF, 0x3000, 0xcc);
    const f = frame(1000, 7);
    assert.equal(dev.deliverRx(rxq, f).kind, "delivered");
    assert.deepEqual(rx.takeUsed(), [{ id: 0, len: 0 }, { id: 2, len: 0 }, { id: 3, len: 0 }, { id: 4, len: 0 }, { id: 5, len: f.byteLength }]);
    assert.equal(n.rxErrors, 4);
    assert.ok(mem.read(BUF, 0x3000).every((b) => b === 0xcc), "nothing written into the bad chains");
    assert.deepEqual(mem.read(BUF + 0x3000 + 12, 1000), f.subarray(12));
  }
});

test("RX with MRG_RXBUF: a bad chain behind good ones that are not enough — all answered with 0 in order, the frame goes behind them", () => {
  const { rx, rxq, dev, n } = rig();
  rx.publish(rx.addChain([{ addr: BUF, len: 100, write: true }]));
  rx.publish(rx.addChain([{ addr: BUF + 0x1000, len: 100 }])); // device-readable: bad
  rx.publish(rx.addChain([{ addr: BUF + 0x2000, len: 500, write: true }]));
  assert.equal(dev.deliverRx(rxq, frame(300)).kind, "delivered");
  assert.deepEqual(rx.takeUsed(), [{ id: 0, len: 0 }, { id: 1, len: 0 }, { id: 2, len: 312 }]);
  assert.equal(n.rxErrors, 1);
});

test("virtio 1.2 §5.1.6.4.1: RX headers carry only what the driver accepted", () => {
  // Without GUEST_CSUM: flags must be 0 — DATA_VALID is cleared, NEEDS_CSUM (incomplete checksum) is dropped; no GSO.
  const a = rig({ features: NO_GUEST_OFFLOAD });
  for (let i = 0; i < 4; i++) a.rx.publish(a.rx.addChain([{ addr: BUF + 0x1000 * i, len: 2000, write: true }]));
  assert.equal(a.dev.deliverRx(a.rxq, frame(100, 1, { flags: NET_HDR_F_DATA_VALID | 4 })).kind, "delivered");
  assert.equal(a.mem.readU8(BUF), 0, "flags cleared");
  assert.equal(a.dev.deliverRx(a.rxq, frame(100, 1, { flags: NET_HDR_F_NEEDS_CSUM })).kind, "dropped");
  assert.equal(a.dev.deliverRx(a.rxq, frame(1800, 1, { flags: 0, gso: NET_HDR_GSO_TCPV4 })).kind, "dropped");
  assert.equal(a.n.rxDropped, 2);
  // With GUEST_CSUM and GUEST_TSO4 but not GUEST_UFO: TSO4 passes, UFO, ECN and unknown types are dropped; RSC_INFO cleared.
  const b = rig({ features: ALL & ~bit(NET_F_GUEST_UFO) });
  for (let i = 0; i < 4; i++) b.rx.publish(b.rx.addChain([{ addr: BUF + 0x1000 * i, len: 4000, write: true }]));
  assert.equal(b.dev.deliverRx(b.rxq, frame(3000, 1, { flags: NET_HDR_F_NEEDS_CSUM | 4, gso: NET_HDR_GSO_TCPV4 })).kind, "delivered");
  assert.deepEqual([b.mem.readU8(BUF), b.mem.readU8(BUF + 1)], [NET_HDR_F_NEEDS_CSUM, NET_HDR_GSO_TCPV4]);
  for (const gso of [NET_HDR_GSO_UDP, NET_HDR_GSO_TCPV4 | 0x80, 5, 2, 0x7f]) {
    assert.equal(b.dev.deliverRx(b.rxq, frame(3000, 1, { flags: NET_HDR_F_NEEDS_CSUM, gso })).kind, "dropped", `gso_type ${gso}`);
  }
});

test("RX: frames shorter than the header or over 12 + 65550 bytes are dropped; 12 + 65550 itself is delivered", () => {
  const { rx, rxq, dev, n } = rig();
  for (let i = 0; i < QSIZE; i++) rx.publish(rx.addChain([{ addr: BUF + 0x1100 * i, len: 0x1100, write: true }]));
  assert.equal(dev.deliverRx(rxq, new Uint8Array(11)).kind, "dropped");
  assert.equal(dev.deliverRx(rxq, frame(NET_FRAME_MAX + 1)).kind, "dropped");
  assert.equal(n.rxDropped, 2);
  assert.equal(dev.deliverRx(rxq, frame(NET_FRAME_MAX)).kind, "delivered");
  assert.equal(rx.takeUsed().reduce((s, u) => s + u.len, 0), NET_HDR_SIZE + NET_FRAME_MAX);
});

test("virtio 1.2 §2.7.10: RX interrupts follow used_event with EVENT_IDX and NO_INTERRUPT without it", () => {
  const a = rig();
  for (let i = 0; i < 3; i++) a.rx.publish(a.rx.addChain([{ addr: BUF + 0x1000 * i, len: 2000, write: true }]));
  a.rx.setUsedEvent(1);
  assert.deepEqual(a.dev.deliverRx(a.rxq, frame(100)), { kind: "delivered", interrupt: false });
  assert.deepEqual(a.dev.deliverRx(a.rxq, frame(100)), { kind: "delivered", interrupt: true });
  assert.deepEqual(a.dev.deliverRx(a.rxq, frame(100)), { kind: "delivered", interrupt: false });
  const b = rig({ features: ALL & ~bit(F_RING_EVENT_IDX) });
  b.rx.publish(b.rx.addChain([{ addr: BUF, len: 2000, write: true }]));
  b.rx.publish(b.rx.addChain([{ addr: BUF + 0x1000, len: 2000, write: true }]));
  b.mem.writeU16(b.rx.layout.avail, 1); // VIRTQ_AVAIL_F_NO_INTERRUPT
  assert.deepEqual(b.dev.deliverRx(b.rxq, frame(100)), { kind: "delivered", interrupt: false });
  b.mem.writeU16(b.rx.layout.avail, 0);
  assert.deepEqual(b.dev.deliverRx(b.rxq, frame(100)), { kind: "delivered", interrupt: true });
});

// ---------------------------------------------------------------------------------------------
// Properties: hostile rings.
// ---------------------------------------------------------------------------------------------

const addrArb = fc.oneof(
  fc.integer({ min: 0, max: RAM - 1 }),
  fc.integer({ min: BUF, max: BUF + 0x1000 }),
  fc.constantFrom(RAM - 8, RAM, 0xffff_ffff, 2 ** 53 - 1, 2 ** 60),
);
const lenArb = fc.oneof(
  fc.integer({ min: 0, max: 80 }),
  fc.constantFrom(11, 12, 13, 0x1000, NET_HDR_SIZE + NET_FRAME_MAX, NET_HDR_SIZE + NET_FRAME_MAX + 1, 0xffffffff),
  fc.integer({ min: 0, max: 0x20000 }),
);
const descArb = fc.record({ addr: addrArb, len: lenArb, flags: fc.integer({ min: 0, max: 7 }), next: fc.integer({ min: 0, max: QSIZE + 2 }) });
const ringArb = fc.record({
  descs: fc.array(descArb, { minLength: QSIZE, maxLength: QSIZE }),
  ring: fc.array(fc.integer({ min: 0, max: QSIZE + 2 }), { minLength: QSIZE, maxLength: QSIZE }),
  availIdx: fc.oneof(fc.integer({ min: 0, max: QSIZE }), fc.integer({ min: 0, max: 0xffff })),
  headers: fc.array(fc.record({ flags: fc.integer({ min: 0, max: 255 }), gso: fc.constantFrom(0, 1, 3, 4, 5, 0x81, 0xff) }), { minLength: 4, maxLength: 4 }),
  features: fc.constantFrom(ALL, NO_MRG, NO_GUEST_OFFLOAD, ALL & ~bit(NET_F_CSUM)),
});

type RingValue = typeof ringArb extends fc.Arbitrary<infer T> ? T : never;
type Rig = ReturnType<typeof rig>;

/** A rig whose RX and TX rings both hold the random contents `v`. */
function hostileRig(v: RingValue, sinkCheck?: (segs: readonly Uint8Array[], r: Rig) => void): Rig {
  const r: Rig = rig({ features: v.features, sink: (segs) => (sinkCheck?.(segs, r), "sent") });
  for (const layout of [r.rx.layout, r.tx.layout]) {
    v.descs.forEach((d, i) => r.tx.writeDesc(layout.desc + DESC_SIZE * i, BigInt(d.addr), d.len, d.flags, d.next));
    v.ring.forEach((h, i) => r.mem.writeU16(layout.avail + 4 + 2 * i, h));
    r.mem.writeU16(layout.avail + 2, v.availIdx);
  }
  // Plausible headers where descriptors are likely to point.
  v.headers.forEach((h, i) => r.mem.write(BUF + 0x400 * i, Uint8Array.of(h.flags, h.gso)));
  return r;
}

test("property: random TX rings — only a fatal VirtqueueError escapes, and the sink only ever gets exactly a chain's readable bytes", () => {
  fc.assert(
    fc.property(ringArb, (v) => {
      const expectations: Array<() => void> = [];
      const r = hostileRig(v, (segs, rr) => {
        // The chain the device is sending is the one at lastAvail (not yet consumed): parse it
        // independently and compare byte for byte, now, while the views are valid.
        const head = rr.mem.readU16(rr.tx.layout.avail + 4 + 2 * (rr.txq.pos.lastAvail % QSIZE));
        const ref = new SplitQueue(rr.mem, rr.tx.layout, { lastAvail: 0, nextUsed: 0 }).parseChain(head);
        assert.equal(ref.writable.length, 0, "only device-readable chains are sent");
        assert.ok(ref.readableBytes >= NET_HDR_SIZE && ref.readableBytes <= NET_HDR_SIZE + NET_FRAME_MAX);
        const want = concat(ref.readable.map((s) => rr.mem.read(s.addr, s.len)));
        const got = concat(segs);
        expectations.push(() => assert.deepEqual(got, want));
      });
      try {
        for (let i = 0; i < 3; i++) {
          const res = r.dev.processTx(r.txq);
          if (res.kind === "idle") break;
        }
      } catch (e) {
        assert.ok(e instanceof VirtqueueError && e.fatal, `unexpected ${String(e)}`);
      }
      for (const check of expectations) check();
      // Every used entry of a TX chain has length 0.
      assert.ok(r.tx.takeUsed().every((u) => u.len === 0));
    }),
    { numRuns: 400 },
  );
});

test("property: random RX rings — only a fatal VirtqueueError escapes and every outcome is one of the three", () => {
  fc.assert(
    fc.property(ringArb, fc.integer({ min: 0, max: 3000 }), (v, len) => {
      const r = hostileRig(v);
      // The used lengths the device publishes, as it publishes them: reading the used ring back
      // would not do, since a hostile driver's receive buffers may lie over its own rings (the
      // device writes the frame where the driver said; seed 1794467870 found one).
      const published: number[] = [];
      const pushUsed = r.rxq.pushUsed.bind(r.rxq);
      r.rxq.pushUsed = (head, usedLen) => {
        published.push(usedLen);
        pushUsed(head, usedLen);
      };
      try {
        for (let i = 0; i < 4; i++) {
          const res = r.dev.deliverRx(r.rxq, frame(len, i));
          assert.ok(["delivered", "no-buffers", "dropped"].includes(res.kind));
          if (res.kind === "no-buffers") break;
        }
      } catch (e) {
        assert.ok(e instanceof VirtqueueError && e.fatal, `unexpected ${String(e)}`);
      }
      // Used lengths never exceed the frame.
      assert.ok(published.every((l) => l <= NET_HDR_SIZE + len), `used lengths ${published.join(", ")} for a ${NET_HDR_SIZE + len}-byte frame`);
    }),
    { numRuns: 300 },
  );
});
