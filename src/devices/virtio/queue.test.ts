// Split virtqueue tests: virtio 1.2 §2.7. Unit cases for each rule, then fast-check properties
// over random and hostile rings in GuestMemory.anonymous.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemory } from "../../memory/guest-memory.js";
import { SplitQueue, VirtqueueError, newChain, vringNeedEvent, type QueueLayout, type Segment } from "./queue.js";
import { TestDriver, layoutAt, type Buf } from "./testing.js";
import { AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE } from "./spec.js";

const RAM = 0x10000;
const mkMem = (): GuestMemory => GuestMemory.anonymous([[0, RAM], [0x100000, 0x1000]]);

function setup(size = 8, extra: Partial<QueueLayout> = {}) {
  const mem = mkMem();
  const layout = layoutAt(0x1000, size, extra);
  const drv = new TestDriver(mem, layout);
  const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 });
  return { mem, layout, drv, q };
}

function expectKind(fn: () => unknown, kind: string, fatal: boolean): void {
  assert.throws(fn, (e: unknown) => e instanceof VirtqueueError && e.kind === kind && e.fatal === fatal);
}

test("virtio 1.2 §2.7.5: a readable+writable chain parses in order", () => {
  const { drv, q } = setup();
  drv.publish(drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 512, write: true }, { addr: 0x9200, len: 1, write: true }]));
  assert.equal(q.pending(), 1);
  const r = q.pop();
  assert.deepEqual(r.chain?.readable, [{ addr: 0x8000, len: 16 }]);
  assert.deepEqual(r.chain?.writable, [{ addr: 0x9000, len: 512 }, { addr: 0x9200, len: 1 }]);
  assert.equal(r.chain?.writableBytes, 513);
  assert.equal(q.pending(), 0);
});

test("virtio 1.2 §2.7.8: pushUsed writes the element, then used.idx", () => {
  const { drv, q } = setup();
  drv.publish(drv.addChain([{ addr: 0x8000, len: 16 }]));
  const { head } = q.pop();
  q.pushUsed(head, 7);
  assert.deepEqual(drv.takeUsed(), [{ id: head, len: 7 }]);
});

test("a chain kept by the device (newChain) is refilled in place: a shorter chain after a longer one leaves nothing of it", () => {
  const { drv, q } = setup();
  const kept = newChain();
  drv.publish(drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x8100, len: 32 }, { addr: 0x9000, len: 512, write: true }, { addr: 0x9200, len: 1, write: true }]));
  drv.publish(drv.addChain([{ addr: 0xa000, len: 8, write: true }]));
  const first = q.peekChain(() => assert.fail("well formed"), kept);
  assert.equal(first, kept);
  assert.deepEqual([kept.readable, kept.writable, kept.readableBytes, kept.writableBytes], [[{ addr: 0x8000, len: 16 }, { addr: 0x8100, len: 32 }], [{ addr: 0x9000, len: 512 }, { addr: 0x9200, len: 1 }], 48, 513]);
  const segment = kept.writable[0];
  q.advance();
  q.peekChain(() => assert.fail("well formed"), kept);
  assert.deepEqual([kept.readable, kept.writable, kept.readableBytes, kept.writableBytes], [[], [{ addr: 0xa000, len: 8 }], 0, 8]);
  assert.equal(kept.writable[0], segment, "the segment object is reused");
});

test("pending() reads avail.idx once per batch: afresh only when the device has caught up, or when fewer than it wants show", () => {
  const { mem, layout, drv, q } = setup();
  let reads = 0;
  const read = mem.readU16Atomic.bind(mem);
  mem.readU16Atomic = (gpa) => {
    if (gpa === layout.avail + 2) reads++;
    return read(gpa);
  };
  drv.publish(drv.addChain([{ addr: 0x8000, len: 16 }]));
  drv.publish(drv.addChain([{ addr: 0x8100, len: 16 }]));
  assert.equal(q.pending(), 2);
  assert.equal(reads, 1);
  drv.publish(drv.addChain([{ addr: 0x8200, len: 16 }]));
  assert.equal(q.pending(), 2, "counted to the index read last while it shows some");
  assert.equal(reads, 1);
  assert.equal(q.pending(3), 3, "fewer than wanted: read afresh");
  assert.equal(reads, 2);
  q.pop();
  q.pop();
  assert.equal(q.pending(), 1);
  q.pop();
  assert.equal(q.pending(), 0, "caught up: read afresh, and nothing is there");
  assert.equal(reads, 3);
  drv.publish(drv.addChain([{ addr: 0x8300, len: 16 }]));
  assert.equal(q.pending(), 1, "a zero is never remembered");
});

test("an abandoned queue (the driver reset the device mid-pass) has nothing pending and writes nothing into the rings", () => {
  const mem = mkMem();
  const layout = layoutAt(0x1000, 8, { eventIdx: true });
  const drv = new TestDriver(mem, layout);
  let reset = false;
  const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 }, () => reset);
  drv.publish(drv.addChain([{ addr: 0x8000, len: 16 }]));
  drv.publish(drv.addChain([{ addr: 0x8100, len: 16 }]));
  const { head } = q.pop();
  q.pushUsed(head, 7);
  assert.equal(drv.takeUsed().length, 1);
  reset = true;
  const ring = mem.read(layout.used, 6 + 8 * 8 + 2);
  assert.equal(q.pending(), 0);
  assert.equal(q.peekChain(() => assert.fail("nothing is parsed")), undefined);
  q.pushUsed(head, 9);
  q.publishAvailEvent();
  assert.equal(q.needsInterrupt(0), false);
  assert.deepEqual(mem.read(layout.used, 6 + 8 * 8 + 2), ring, "the device area is untouched");
});

test("virtio 1.2 §2.7.4.1: a looping chain is a chain-loop error, not a hang", () => {
  const { mem, layout, drv, q } = setup();
  drv.writeDesc(layout.desc, 0x8000, 16, DESC_F_NEXT, 1);
  drv.writeDesc(layout.desc + 16, 0x8000, 16, DESC_F_NEXT, 0);
  drv.publish(0);
  expectKind(() => q.parseChain(0), "chain-loop", false);
  void mem;
});

test("bad descriptors: next past the table, buffer outside RAM, in the hole, 2^64-1, over 2^32 bytes", () => {
  const { layout, drv, q } = setup();
  drv.writeDesc(layout.desc, 0x8000, 16, DESC_F_NEXT, 99);
  expectKind(() => q.parseChain(0), "desc-index", false);
  drv.writeDesc(layout.desc, RAM - 8, 16, 0, 0); // crosses the end of region 0
  expectKind(() => q.parseChain(0), "desc-address", false);
  drv.writeDesc(layout.desc, 0x20000, 1, 0, 0); // the hole
  expectKind(() => q.parseChain(0), "desc-address", false);
  drv.writeDesc(layout.desc, 0xffff_ffff_ffff_ffffn, 1, 0, 0);
  expectKind(() => q.parseChain(0), "desc-address", false);
  drv.writeDesc(layout.desc, 0, 0xffffffff, 0, 0); // huge length
  expectKind(() => q.parseChain(0), "desc-address", false);
});

test("virtio 1.2 §2.7.4.2: a readable descriptor after a writable one is refused", () => {
  const { drv, q } = setup();
  const head = drv.addChain([{ addr: 0x9000, len: 8, write: true }, { addr: 0x8000, len: 8 }]);
  expectKind(() => q.parseChain(head), "write-before-read", false);
});

test("virtio 1.2 §2.7.5.3: indirect tables (negotiated, no nesting, no NEXT, sized in 16s)", () => {
  const { layout, drv, q } = setup(8, { indirect: true });
  const table = 0x6000;
  drv.writeDesc(table, 0x8000, 16, DESC_F_NEXT, 1);
  drv.writeDesc(table + 16, 0x9000, 100, DESC_F_WRITE, 0);
  drv.writeDesc(layout.desc, table, 32, DESC_F_INDIRECT, 0);
  assert.deepEqual(q.parseChain(0).writable, [{ addr: 0x9000, len: 100 }]);
  // A direct descriptor before the indirect one is allowed (§2.7.5.3.2).
  drv.writeDesc(layout.desc + 16, 0x7000, 4, DESC_F_NEXT, 0);
  assert.deepEqual(q.parseChain(1).readable, [{ addr: 0x7000, len: 4 }, { addr: 0x8000, len: 16 }]);
  drv.writeDesc(layout.desc, table, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1);
  expectKind(() => q.parseChain(0), "indirect-with-next", false);
  for (const len of [0, 24, 16 * 32769]) {
    drv.writeDesc(layout.desc, table, len, DESC_F_INDIRECT, 0);
    expectKind(() => q.parseChain(0), "indirect-size", false);
  }
  drv.writeDesc(table + 16, table, 16, DESC_F_INDIRECT, 0);
  drv.writeDesc(layout.desc, table, 32, DESC_F_INDIRECT, 0);
  expectKind(() => q.parseChain(0), "indirect-nested", false);
  drv.writeDesc(table, 0x8000, 16, DESC_F_NEXT, 0); // loop inside the table
  expectKind(() => q.parseChain(0), "chain-loop", false);
  const plain = setup(8);
  plain.drv.writeDesc(plain.layout.desc, table, 32, DESC_F_INDIRECT, 0);
  expectKind(() => plain.q.parseChain(0), "indirect-not-negotiated", false);
});

test("fatal ring errors: misplaced rings, bad size, avail idx jump, head past the table", () => {
  const mem = mkMem();
  expectKind(() => new SplitQueue(mem, { ...layoutAt(0x1000, 8), desc: 0x1008 }, { lastAvail: 0, nextUsed: 0 }), "ring-address", true);
  expectKind(() => new SplitQueue(mem, layoutAt(RAM - 0x40, 8), { lastAvail: 0, nextUsed: 0 }), "ring-address", true);
  expectKind(() => new SplitQueue(mem, layoutAt(0x1000, 6), { lastAvail: 0, nextUsed: 0 }), "queue-size", true);
  const { mem: m2, layout, q } = setup(8);
  m2.writeU16(layout.avail + 2, 9);
  expectKind(() => q.pending(), "avail-index", true);
  m2.writeU16(layout.avail + 2, 1);
  m2.writeU16(layout.avail + 4, 8);
  expectKind(() => q.pop(), "head-index", true);
});

test("virtio 1.2 §2.7.10 vring_need_event: notify when event idx is in (old, new]", () => {
  assert.equal(vringNeedEvent(0, 1, 0), true);
  assert.equal(vringNeedEvent(1, 1, 0), false);
  assert.equal(vringNeedEvent(5, 10, 3), true);
  assert.equal(vringNeedEvent(10, 10, 3), false);
  assert.equal(vringNeedEvent(0xffff, 0, 0xfffe), true); // wraps
  assert.equal(vringNeedEvent(3, 3, 3), false);
});

test("virtio 1.2 §2.7.7/§2.7.10: interrupt suppression with and without EVENT_IDX", () => {
  {
    const { mem, layout, drv, q } = setup(8);
    drv.publish(drv.addChain([{ addr: 0x8000, len: 1 }]));
    q.pushUsed(q.pop().head, 0);
    assert.equal(q.needsInterrupt(0), true);
    mem.writeU16(layout.avail, AVAIL_F_NO_INTERRUPT);
    assert.equal(q.needsInterrupt(0), false);
  }
  {
    const { drv, q } = setup(8, { eventIdx: true });
    for (let i = 0; i < 3; i++) drv.publish(drv.addChain([{ addr: 0x8000, len: 1 }]));
    drv.setUsedEvent(2); // interrupt me when used idx passes 2
    for (let i = 0; i < 2; i++) q.pushUsed(q.pop().head, 0);
    assert.equal(q.needsInterrupt(0), false, "used 0..1 < used_event 2");
    q.pushUsed(q.pop().head, 0);
    assert.equal(q.needsInterrupt(2), true);
    q.publishAvailEvent();
    assert.equal(drv.availEvent(), 3);
  }
});

// ---- properties -------------------------------------------------------------------------

/** Records every read so a property can check what the parser touched. */
class RecordingMemory extends GuestMemory {
  reads: Array<[number, number]> = [];
  override readU16(gpa: number | bigint): number {
    this.reads.push([Number(gpa), 2]);
    return super.readU16(gpa);
  }
  override readU32(gpa: number | bigint): number {
    this.reads.push([Number(gpa), 4]);
    return super.readU32(gpa);
  }
  override readU64(gpa: number | bigint): bigint {
    this.reads.push([Number(gpa), 8]);
    return super.readU64(gpa);
  }
}

const addrArb = fc.oneof(
  fc.integer({ min: 0, max: RAM - 1 }),
  fc.integer({ min: 0x100000, max: 0x100fff }),
  fc.integer({ min: RAM, max: 0xfffff }), // the hole
  fc.constantFrom(0xffff_ffff, 2 ** 53 - 1, 2 ** 60, 2 ** 64 - 1),
);
const lenArb = fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(16, 32, 48, 0x1000, 0xffff_fff0, 0xffffffff), fc.integer({ min: 0, max: 0xffffffff }));
const descArb = fc.record({ addr: addrArb, len: lenArb, flags: fc.integer({ min: 0, max: 7 }), next: fc.integer({ min: 0, max: 70 }) });

test("property: hostile rings — only VirtqueueError escapes, reads stay in the rings and named tables, segments are RAM", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(1, 2, 4, 8, 16, 64),
      fc.array(descArb, { minLength: 64, maxLength: 64 }),
      fc.array(fc.integer({ min: 0, max: 70 }), { minLength: 64, maxLength: 64 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(descArb, { minLength: 8, maxLength: 8 }),
      fc.boolean(),
      (size, descs, ring, availIdx, indirectEntries, indirect) => {
        const mem = new RecordingMemory([{ gpa: 0, bytes: new Uint8Array(RAM) }, { gpa: 0x100000, bytes: new Uint8Array(0x1000) }]);
        const layout = layoutAt(0x1000, size, { indirect });
        const drv = new TestDriver(mem, layout);
        for (let i = 0; i < size; i++) drv.writeDesc(layout.desc + DESC_SIZE * i, BigInt(descs[i]!.addr), descs[i]!.len, descs[i]!.flags, descs[i]!.next);
        // One plausible indirect table at 0x6000 that descriptors may point to.
        indirectEntries.forEach((d, i) => drv.writeDesc(0x6000 + 16 * i, BigInt(d.addr), d.len, d.flags, d.next));
        if (size > 1) drv.writeDesc(layout.desc + DESC_SIZE * (size - 1), 0x6000, 128, DESC_F_INDIRECT, 0);
        for (let i = 0; i < size; i++) mem.writeU16(layout.avail + 4 + 2 * i, ring[i]!);
        mem.writeU16(layout.avail + 2, availIdx);
        const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 });
        mem.reads = [];
        const allowed: Array<[number, number]> = [
          [layout.desc, DESC_SIZE * size],
          [layout.avail, 6 + 2 * size],
        ];
        for (let i = 0; i < size; i++) {
          const d = descs[i]!;
          if (i === size - 1 && size > 1) allowed.push([0x6000, 128]);
          // The table the descriptor really names: its address as written to the 64-bit field
          // (2 ** 64, which is what the double 2 ** 64 - 1 rounds to, is stored as 0).
          else if (d.flags & DESC_F_INDIRECT) allowed.push([Number(BigInt.asUintN(64, BigInt(d.addr))), d.len]);
        }
        const inside = (segs: Segment[]): boolean => segs.every((s) => mem.contains(s.addr, s.len));
        for (let n = 0; n < size + 1; n++) {
          try {
            if (q.pending() === 0) break;
            const r = q.pop();
            if (r.chain) assert.ok(inside(r.chain.readable) && inside(r.chain.writable));
            else assert.ok(r.error instanceof VirtqueueError);
          } catch (e) {
            if (!(e instanceof VirtqueueError)) throw e;
            break;
          }
        }
        for (const [a, l] of mem.reads) {
          assert.ok(
            allowed.some(([b, bl]) => a >= b && a + l <= b + bl),
            `read ${a.toString(16)}+${l} outside the rings and named tables`,
          );
        }
      },
    ),
    { numRuns: 400 },
  );
});

const segArb = fc.record({ addr: fc.integer({ min: 0x8000, max: RAM - 0x100 }), len: fc.integer({ min: 1, max: 0x100 }) });

test("property: valid chains (direct and indirect) round-trip through the parser", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ r: fc.array(segArb, { maxLength: 3 }), w: fc.array(segArb, { maxLength: 3 }), indirect: fc.boolean() }), { minLength: 1, maxLength: 6 }),
      (chains) => {
        const mem = mkMem();
        const layout = layoutAt(0x1000, 32, { indirect: true, eventIdx: true });
        const drv = new TestDriver(mem, layout);
        const expected: Array<{ readable: Segment[]; writable: Segment[] }> = [];
        let table = 0x6000;
        for (const c of chains) {
          const bufs: Buf[] = [...c.r.map((s) => ({ ...s })), ...c.w.map((s) => ({ ...s, write: true }))];
          if (bufs.length === 0) bufs.push({ addr: 0x8000, len: 1 });
          expected.push({
            readable: bufs.filter((b) => !b.write).map(({ addr, len }) => ({ addr, len })),
            writable: bufs.filter((b) => b.write).map(({ addr, len }) => ({ addr, len })),
          });
          if (c.indirect) {
            drv.publish(drv.addIndirect(table, bufs));
            table += 0x100;
          } else {
            drv.publish(drv.addChain(bufs));
          }
        }
        const q = new SplitQueue(mem, layout, { lastAvail: 0, nextUsed: 0 });
        assert.equal(q.pending(), chains.length);
        for (const e of expected) {
          const r = q.pop();
          assert.ok(r.chain, r.error?.message);
          assert.deepEqual({ readable: r.chain.readable, writable: r.chain.writable }, e);
          q.pushUsed(r.head, 0);
        }
        assert.equal(drv.takeUsed().length, chains.length);
      },
    ),
    { numRuns: 300 },
  );
});
