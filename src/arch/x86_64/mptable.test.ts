import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../memory/guest-memory.js";
import { MPTABLE_MAX_VCPUS, byteSum, ioapicId, mptableSize, writeMptable } from "./mptable.js";
import { IOAPIC_START, LAPIC_START, MPTABLE_START, MiB, memoryLayout } from "./layout.js";

const str = (b: Uint8Array, off: number, n: number): string => String.fromCharCode(...b.subarray(off, off + n));

for (const n of [1, 2, 8, MPTABLE_MAX_VCPUS]) {
  test(`MP table (MP spec 1.4 §4) for ${n} vCPU(s): signatures, checksums, entries`, () => {
    const m = GuestMemory.anonymous(memoryLayout(2 * MiB));
    writeMptable(m, n);
    const mpf = m.read(MPTABLE_START, 16);
    assert.equal(str(mpf, 0, 4), "_MP_");
    assert.equal(byteSum(mpf), 0, "floating pointer sums to 0");
    assert.equal(mpf[8], 1);
    assert.equal(mpf[9], 4);
    const mpcAddr = new DataView(mpf.buffer).getUint32(4, true);
    assert.equal(mpcAddr, MPTABLE_START + 16);
    const hdr = m.read(mpcAddr, 44);
    const hv = new DataView(hdr.buffer);
    assert.equal(str(hdr, 0, 4), "PCMP");
    const len = hv.getUint16(4, true);
    assert.equal(len + 16, mptableSize(n));
    const table = m.read(mpcAddr, len);
    assert.equal(byteSum(table), 0, "configuration table sums to 0");
    assert.equal(hv.getUint32(36, true), LAPIC_START);
    const count = hv.getUint16(34, true);
    assert.equal(count, n + 1 + 1 + 24 + 2);
    // Walk the entries.
    const dv = new DataView(table.buffer);
    let off = 44;
    const procs: number[] = [];
    const ioInts: number[] = [];
    let ioapic: number | undefined;
    const lints: number[] = [];
    for (let i = 0; i < count; i++) {
      const type = table[off]!;
      if (type === 0) {
        procs.push(table[off + 1]!);
        assert.equal(table[off + 3], table[off + 1] === 0 ? 3 : 1, "EN, and BP on vCPU 0 only");
        off += 20;
        continue;
      }
      if (type === 1) assert.equal(str(table, off + 2, 6), "ISA   ");
      if (type === 2) {
        ioapic = table[off + 1];
        assert.equal(dv.getUint32(off + 4, true), IOAPIC_START);
      }
      if (type === 3) {
        assert.equal(table[off + 5], table[off + 7], "ISA IRQ n → IOAPIC pin n");
        assert.equal(table[off + 6], ioapicId(n));
        ioInts.push(table[off + 5]!);
      }
      if (type === 4) lints.push(table[off + 1]!);
      off += 8;
    }
    assert.equal(off, len);
    assert.deepEqual(procs, Array.from({ length: n }, (_, i) => i));
    assert.equal(ioapic, n + 1);
    assert.deepEqual(ioInts, Array.from({ length: 24 }, (_, i) => i));
    assert.deepEqual(lints, [3, 1], "ExtINT then NMI");
  });
}

test("MP table: vCPU count limits", () => {
  const m = GuestMemory.anonymous(memoryLayout(2 * MiB));
  assert.throws(() => writeMptable(m, 0), /0 vCPUs requested, between 1 and 253/);
  assert.throws(() => writeMptable(m, 254), /254 vCPUs/);
});
