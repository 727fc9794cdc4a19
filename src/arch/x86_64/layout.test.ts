import { test } from "node:test";
import assert from "node:assert/strict";
import * as L from "./layout.js";

test("memoryLayout: one region up to 3 GiB, split around the MMIO gap above", () => {
  assert.deepEqual(L.memoryLayout(512 * L.MiB), [[0, 512 * L.MiB]]);
  assert.deepEqual(L.memoryLayout(3 * L.GiB), [[0, 3 * L.GiB]]);
  assert.deepEqual(L.memoryLayout(3 * L.GiB + 4096), [
    [0, L.MMIO_GAP_START],
    [L.MMIO_GAP_END, 4096],
  ]);
  assert.deepEqual(L.memoryLayout(8 * L.GiB), [
    [0, 3 * L.GiB],
    [4 * L.GiB, 5 * L.GiB],
  ]);
});

test("memoryLayout rejects sizes that are not positive whole pages", () => {
  for (const bad of [0, -4096, 4097, 1.5, Number.NaN]) assert.throws(() => L.memoryLayout(bad), RangeError);
});

test("layout: the MMIO gap is [3 GiB, 4 GiB) and its named ranges lie inside it", () => {
  assert.equal(L.MMIO_GAP_START, 3 * L.GiB);
  assert.equal(L.MMIO_GAP_END, 4 * L.GiB);
  const inGap = (a: number, size = 1): boolean => a >= L.MMIO_GAP_START && a + size <= L.MMIO_GAP_END;
  assert.ok(inGap(L.IOAPIC_START, 0x1000));
  assert.ok(inGap(L.LAPIC_START, 0x1000));
  assert.ok(inGap(L.VIRTIO_MMIO_START, L.VIRTIO_MMIO_END - L.VIRTIO_MMIO_START));
  assert.ok(inGap(L.KVM_IDENTITY_MAP_START, L.PAGE_SIZE));
  assert.ok(inGap(L.KVM_TSS_START, L.KVM_TSS_SIZE));
  assert.equal(L.KVM_IDENTITY_MAP_START + L.PAGE_SIZE, L.KVM_TSS_START);
  // The probe's unassigned MMIO address stays outside every device window.
  assert.ok(L.MMIO_UNASSIGNED_PROBE_ADDR < L.VIRTIO_MMIO_START);
  assert.ok(L.VIRTIO_MMIO_END <= L.IOAPIC_START);
  assert.equal(L.VIRTIO_MMIO_START % L.VIRTIO_MMIO_SLOT_SIZE, 0);
});

test("layout: low-memory structures do not overlap and stay below the EBDA", () => {
  const areas: Array<[string, number, number]> = [
    ["gdt", L.BOOT_GDT_START, L.BOOT_GDT_MAX_SIZE],
    ["idt", L.BOOT_IDT_START, 8],
    ["pvh start_info+modlist+memmap", L.PVH_INFO_START, L.ZERO_PAGE_START - L.PVH_INFO_START],
    ["zero page", L.ZERO_PAGE_START, L.ZERO_PAGE_SIZE],
    ["stack", 0x8000, L.BOOT_STACK_POINTER - 0x8000 + 16],
    ["pml4", L.PML4_START, L.PAGE_SIZE],
    ["pdpt", L.PDPT_START, L.PAGE_SIZE],
    ["pds", L.PD_START, L.PD_MAX_COUNT * L.PAGE_SIZE],
    ["cmdline", L.CMDLINE_START, L.CMDLINE_MAX_SIZE],
  ].sort((a, b) => (a[1] as number) - (b[1] as number)) as Array<[string, number, number]>;
  for (let i = 1; i < areas.length; i++) {
    const [pn, ps, pz] = areas[i - 1]!;
    const [n, s] = areas[i]!;
    assert.ok(ps + pz <= s, `${pn} overlaps ${n}`);
  }
  const last = areas[areas.length - 1]!;
  assert.ok(last[1] + last[2] <= L.EBDA_START);
  assert.equal(L.BOOT_STACK_POINTER % 16, 0);
  assert.ok(L.PVH_MEMMAP_MAX_ENTRIES >= 128);
});
