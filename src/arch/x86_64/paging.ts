// Identity-mapped page tables for the 64-bit entry: PML4 → PDPT → PDs of 2 MiB pages
// (Intel SDM Vol.3 §4.5 "4-Level Paging", Table 4-15/4-17). Firecracker maps the first 1 GiB;
// we map the first 4 GiB by default, so the kernel, initrd (up to 3 GiB) and the MMIO gap's
// LAPIC/IOAPIC/virtio pages are all reachable before the guest builds its own tables.

import type { GuestMemory } from "../../memory/guest-memory.js";
import { GiB, PD_MAX_COUNT, PD_START, PDPT_START, PML4_START, PAGE_SIZE } from "./layout.js";

/** SDM Vol.3 Table 4-14..4-18: P (present), R/W (writable), PS (page size: 2 MiB in a PDE). */
export const PTE_PRESENT = 1n << 0n;
export const PTE_WRITABLE = 1n << 1n;
export const PTE_PAGE_SIZE = 1n << 7n;
/** SDM Vol.3 §4.5: 512 8-byte entries per table; a PDE with PS maps 2 MiB. */
const ENTRIES = 512;
const PAGE_2M = 2n * 1024n * 1024n;

/**
 * Writes the identity map covering [0, gib GiB) and returns the CR3 value (the PML4 address).
 * `gib` is 1–4 (one PD per GiB, layout.ts reserves four).
 */
export function writeIdentityPageTables(mem: GuestMemory, gib = 4): bigint {
  if (!Number.isInteger(gib) || gib < 1 || gib > PD_MAX_COUNT) {
    throw new RangeError(`identity map of ${gib} GiB: between 1 and ${PD_MAX_COUNT} GiB is supported`);
  }
  mem.fill(PML4_START, PAGE_SIZE, 0);
  mem.fill(PDPT_START, PAGE_SIZE, 0);
  mem.writeU64(PML4_START, BigInt(PDPT_START) | PTE_PRESENT | PTE_WRITABLE);
  for (let g = 0; g < gib; g++) {
    const pd = PD_START + g * PAGE_SIZE;
    mem.writeU64(PDPT_START + g * 8, BigInt(pd) | PTE_PRESENT | PTE_WRITABLE);
    for (let i = 0; i < ENTRIES; i++) {
      const phys = BigInt(g * GiB) + BigInt(i) * PAGE_2M;
      mem.writeU64(pd + i * 8, phys | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE);
    }
  }
  return BigInt(PML4_START);
}
