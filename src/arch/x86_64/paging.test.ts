import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../memory/guest-memory.js";
import { writeIdentityPageTables } from "./paging.js";
import { MiB, PD_START, PDPT_START, PML4_START, memoryLayout } from "./layout.js";

test("identity map (SDM Vol.3 §4.5): PML4 → PDPT → 4 PDs of 2 MiB pages covering 4 GiB", () => {
  const m = GuestMemory.anonymous(memoryLayout(2 * MiB));
  assert.equal(writeIdentityPageTables(m), BigInt(PML4_START));
  assert.equal(m.readU64(PML4_START), BigInt(PDPT_START) | 3n);
  assert.equal(m.readU64(PML4_START + 8), 0n);
  for (let g = 0; g < 4; g++) assert.equal(m.readU64(PDPT_START + g * 8), BigInt(PD_START + g * 0x1000) | 3n);
  assert.equal(m.readU64(PDPT_START + 32), 0n);
  assert.equal(m.readU64(PD_START), 0x83n);
  assert.equal(m.readU64(PD_START + 8), 0x200000n | 0x83n);
  assert.equal(m.readU64(PD_START + 0x1000), 0x4000_0000n | 0x83n);
  // LAPIC page 0xfee00000 → PD 3, entry 0x1f7.
  assert.equal(m.readU64(PD_START + 3 * 0x1000 + 0x1f7 * 8), 0xfee0_0000n | 0x83n);
  assert.equal(m.readU64(PD_START + 4 * 0x1000 - 8), 0xffe0_0000n | 0x83n);
});

test("identity map of 1 GiB (Firecracker's size) uses one PD; out-of-range sizes are refused", () => {
  const m = GuestMemory.anonymous(memoryLayout(2 * MiB));
  writeIdentityPageTables(m, 1);
  assert.equal(m.readU64(PDPT_START + 8), 0n);
  assert.throws(() => writeIdentityPageTables(m, 5), RangeError);
  assert.throws(() => writeIdentityPageTables(m, 0), RangeError);
});
