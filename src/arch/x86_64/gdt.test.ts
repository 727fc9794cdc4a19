import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../memory/guest-memory.js";
import { BOOT_CS, BOOT_DS, bootGdt, bootSegments, gdtEntry, segmentFromGdtEntry, writeGdt, writeIdt } from "./gdt.js";
import { BOOT_GDT_START, BOOT_IDT_START, MiB, memoryLayout } from "./layout.js";

test("gdtEntry: the descriptors Firecracker writes (SDM Vol.3 Fig. 3-8)", () => {
  assert.equal(gdtEntry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffn);
  assert.equal(gdtEntry(0xc093, 0, 0xfffff), 0x00cf93000000ffffn);
  assert.equal(gdtEntry(0x808b, 0, 0xfffff), 0x008f8b000000ffffn);
  assert.equal(gdtEntry(0xc09b, 0, 0xfffff), 0x00cf9b000000ffffn);
});

test("gdtEntry/segmentFromGdtEntry round-trip base and limit", () => {
  const e = gdtEntry(0x4093, 0x12345678, 0xabcde);
  const s = segmentFromGdtEntry(e, 7);
  assert.equal(s.base, 0x12345678n);
  assert.equal(s.limit, 0xabcde);
  assert.equal(s.selector, 56);
  assert.equal(s.db, 1);
  assert.equal(s.g, 0);
});

test("boot segments: boot.rst __BOOT_CS 0x10 (64-bit code), __BOOT_DS 0x18, TSS limit 0x67", () => {
  assert.equal(BOOT_CS, 0x10);
  assert.equal(BOOT_DS, 0x18);
  const s = bootSegments();
  assert.deepEqual(s.code64, { base: 0n, limit: 0xffffffff, selector: 0x10, type: 0xb, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 });
  assert.deepEqual(s.data, { base: 0n, limit: 0xffffffff, selector: 0x18, type: 0x3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  assert.deepEqual(s.code32, { base: 0n, limit: 0xffffffff, selector: 0x08, type: 0xb, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  assert.deepEqual(s.tss, { base: 0n, limit: 0x67, selector: 0x20, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 });
  assert.equal(segmentFromGdtEntry(0n, 0).unusable, 1);
});

test("writeGdt/writeIdt: tables land at their layout addresses", () => {
  const m = GuestMemory.anonymous(memoryLayout(2 * MiB));
  const gdtr = writeGdt(m);
  assert.deepEqual(gdtr, { base: BigInt(BOOT_GDT_START), limit: 6 * 8 - 1 });
  bootGdt().forEach((e, i) => assert.equal(m.readU64(BOOT_GDT_START + i * 8), e));
  assert.equal(m.readU64(BOOT_GDT_START), 0n, "null descriptor");
  assert.deepEqual(writeIdt(m), { base: BigInt(BOOT_IDT_START), limit: 7 });
});
