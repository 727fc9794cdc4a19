// virtio-blk request machine: virtio 1.2 §5.2.6 over an in-memory drive.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { SplitQueue } from "../queue.js";
import { TestDriver, layoutAt, type Buf } from "../testing.js";
import { BlkDevice, MemoryBackend, blkConfigSpace, blkFeatures, type Throttle } from "./device.js";
import {
  BLK_F_DISCARD,
  BLK_F_RO,
  BLK_S_IOERR,
  BLK_S_OK,
  BLK_S_UNSUPP,
  BLK_T_DISCARD,
  BLK_T_FLUSH,
  BLK_T_GET_ID,
  BLK_T_IN,
  BLK_T_OUT,
  BLK_T_WRITE_ZEROES,
  DESC_F_WRITE,
  bit,
} from "../spec.js";

const HDR = 0x8000;
const DATA = 0x10000;
const STATUS = 0x9000;

function rig(opts: { readOnly?: boolean; size?: number; throttle?: Throttle } = {}) {
  const mem = GuestMemory.anonymous([[0, 0x40000]]);
  const layout = layoutAt(0x1000, 64);
  const drv = new TestDriver(mem, layout);
  const disk = new MemoryBackend(new Uint8Array(opts.size ?? 64 * 512));
  const counts = { requests: 0, bytes: 0, errors: 0, throttled: 0 };
  const stats = {
    request: (b: number) => {
      counts.requests++;
      counts.bytes += b;
    },
    error: () => counts.errors++,
    throttled: () => counts.throttled++,
  };
  const dev = new BlkDevice(mem, disk, { readOnly: opts.readOnly ?? false, id: "disk-0" }, stats, opts.throttle);
  const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 });
  let slot = 0;
  /** Queues one request; returns the address of its status byte. */
  const submit = (type: number, sector: number, data: Buf[] = [], hdrLen = 16): number => {
    const hdr = HDR + 32 * slot;
    const status = STATUS + slot++;
    mem.writeU32(hdr, type);
    mem.writeU64(hdr + 8, BigInt(sector));
    mem.writeU8(status, 0xff);
    drv.publish(drv.addChain([{ addr: hdr, len: hdrLen }, ...data, { addr: status, len: 1, write: true }]));
    return status;
  };
  return { mem, drv, disk, dev, q, submit, counts };
}

test("virtio 1.2 §5.2.4: features and config (capacity, seg_max, blk_size; RO drops DISCARD/WRITE_ZEROES)", () => {
  assert.notEqual(blkFeatures({ readOnly: false }) & bit(BLK_F_DISCARD), 0n);
  const ro = blkFeatures({ readOnly: true });
  assert.notEqual(ro & bit(BLK_F_RO), 0n);
  assert.equal(ro & bit(BLK_F_DISCARD), 0n);
  const cfg = new DataView(blkConfigSpace(1000 * 512 + 100, { readOnly: false }).buffer);
  assert.equal(cfg.getBigUint64(0, true), 1000n);
  assert.equal(cfg.getUint32(20, true), 512);
});

test("virtio 1.2 §5.2.6: OUT then IN round-trip; several requests in flight answered in one pass", () => {
  const { mem, drv, disk, dev, q, submit, counts } = rig();
  mem.fill(DATA, 1024, 0x5a);
  const s1 = submit(BLK_T_OUT, 3, [{ addr: DATA, len: 1024 }]);
  const s2 = submit(BLK_T_IN, 3, [{ addr: DATA + 0x2000, len: 512, write: true }, { addr: DATA + 0x3000, len: 512, write: true }]);
  const s3 = submit(BLK_T_FLUSH, 0);
  const r = dev.process(q);
  assert.deepEqual(r, { kind: "idle", interrupt: true });
  assert.deepEqual([mem.readU8(s1), mem.readU8(s2), mem.readU8(s3)], [BLK_S_OK, BLK_S_OK, BLK_S_OK]);
  assert.ok(disk.bytes.subarray(3 * 512, 5 * 512).every((b) => b === 0x5a));
  assert.ok(mem.read(DATA + 0x2000, 512).every((b) => b === 0x5a) && mem.read(DATA + 0x3000, 512).every((b) => b === 0x5a));
  assert.equal(disk.flushes, 1);
  assert.deepEqual(drv.takeUsed().map((u) => u.len), [1, 1025, 1], "used len = bytes written incl. status");
  assert.deepEqual([counts.requests, counts.bytes, counts.errors], [3, 2048, 0]);
});

test("virtio 1.2 §5.2.6: GET_ID, DISCARD and WRITE_ZEROES", () => {
  const { mem, disk, dev, q, submit } = rig();
  disk.bytes.fill(0x77);
  const id = submit(BLK_T_GET_ID, 0, [{ addr: DATA, len: 20, write: true }]);
  const seg = (sector: number, n: number, flags = 0): Buf => {
    const at = DATA + 0x100 + 16 * sector;
    mem.writeU64(at, BigInt(sector));
    mem.writeU32(at + 8, n);
    mem.writeU32(at + 12, flags);
    return { addr: at, len: 16 };
  };
  const wz = submit(BLK_T_WRITE_ZEROES, 0, [seg(2, 2)]);
  const dc = submit(BLK_T_DISCARD, 0, [seg(8, 1)]);
  const dcUnmap = submit(BLK_T_DISCARD, 0, [seg(9, 1, 1)]);
  const wzPast = submit(BLK_T_WRITE_ZEROES, 0, [seg(10, 1000)]);
  dev.process(q);
  assert.equal(mem.readU8(id), BLK_S_OK);
  assert.equal(new TextDecoder().decode(mem.read(DATA, 6)), "disk-0");
  assert.equal(mem.readU8(wz), BLK_S_OK);
  assert.ok(disk.bytes.subarray(1024, 2048).every((b) => b === 0) && disk.bytes[1023] === 0x77 && disk.bytes[2048] === 0x77);
  assert.equal(mem.readU8(dc), BLK_S_OK);
  assert.equal(mem.readU8(dcUnmap), BLK_S_UNSUPP, "unmap on DISCARD");
  assert.equal(mem.readU8(wzPast), BLK_S_IOERR);
});

test("virtio 1.2 §5.2.6.1: malformed requests get IOERR/UNSUPP, never touch storage", () => {
  const { mem, drv, disk, dev, q, submit, counts } = rig();
  const cases = [
    [submit(BLK_T_IN, 64, [{ addr: DATA, len: 512, write: true }]), BLK_S_IOERR, "past capacity"],
    [submit(BLK_T_IN, 63, [{ addr: DATA, len: 1024, write: true }]), BLK_S_IOERR, "straddles capacity"],
    [submit(BLK_T_IN, 0, [{ addr: DATA, len: 100, write: true }]), BLK_S_IOERR, "not a sector multiple"],
    [submit(BLK_T_IN, 0, [{ addr: DATA, len: 512 }]), BLK_S_IOERR, "IN with device-readable data"],
    [submit(BLK_T_OUT, 0, [{ addr: DATA, len: 512, write: true }]), BLK_S_IOERR, "OUT with device-writable data"],
    [submit(99, 0), BLK_S_UNSUPP, "unknown type"],
    [submit(BLK_T_IN, 0, [], 8), BLK_S_IOERR, "short header"],
    [submit(BLK_T_OUT, 2 ** 52, [{ addr: DATA, len: 512 }]), BLK_S_IOERR, "huge sector"],
  ] as const;
  // A chain with no writable byte at all cannot be answered: used len 0.
  drv.publish(drv.addChain([{ addr: HDR, len: 16 }]));
  disk.bytes.fill(0x11);
  dev.process(q);
  for (const [at, want, why] of cases) assert.equal(mem.readU8(at), want, why);
  assert.ok(disk.bytes.every((b) => b === 0x11));
  assert.equal(drv.takeUsed().at(-1)?.len, 0);
  assert.equal(counts.errors, cases.length + 1);
  void DESC_F_WRITE;
});

test("virtio 1.2 §5.2.6.2: a read-only drive answers writes IOERR and keeps its bytes", () => {
  const { mem, disk, dev, q, submit } = rig({ readOnly: true });
  disk.bytes.fill(0x33);
  const w = submit(BLK_T_OUT, 0, [{ addr: DATA, len: 512 }]);
  const r = submit(BLK_T_IN, 0, [{ addr: DATA, len: 512, write: true }]);
  const f = submit(BLK_T_FLUSH, 0);
  dev.process(q);
  assert.deepEqual([mem.readU8(w), mem.readU8(r), mem.readU8(f)], [BLK_S_IOERR, BLK_S_OK, BLK_S_OK]);
  assert.ok(disk.bytes.every((b) => b === 0x33));
});

test("a throttled request stays in the avail ring and is answered on the next pass", () => {
  let allow = false;
  const { mem, dev, q, submit, counts } = rig({ throttle: { consume: () => (allow ? 0 : 25) } });
  const s = submit(BLK_T_IN, 0, [{ addr: DATA, len: 512, write: true }]);
  assert.deepEqual(dev.process(q), { kind: "throttled", interrupt: false, waitMs: 25 });
  assert.equal(mem.readU8(s), 0xff);
  assert.equal(counts.throttled, 1);
  allow = true;
  assert.equal(dev.process(q).kind, "idle");
  assert.equal(mem.readU8(s), BLK_S_OK);
});
