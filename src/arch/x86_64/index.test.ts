import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../memory/guest-memory.js";
import {
  prepareBoot, applySregsPatch, MiB, memoryLayout, ZERO_PAGE_START, PVH_INFO_START, XEN_HVM_START_MAGIC, BootSetupError, ACPI_RSDP_START,
  E820_RESERVED, buildDsdt, byteSum,
} from "./index.js";
import { buildBzImage, buildElf, u32le, u64le } from "./test-images.js";

const probeLike = (opts: { entry?: number; pvh?: number; ap?: number } = {}): Uint8Array => {
  const notes = [];
  if (opts.pvh !== undefined) notes.push({ name: "Xen", type: 18, desc: u32le(opts.pvh) });
  if (opts.ap !== undefined) notes.push({ name: "Typervisor", type: 1, desc: u64le(opts.ap) });
  return buildElf({ entry: opts.entry ?? 0x100000, segments: [{ paddr: 0x100000, data: new Uint8Array(0x400).fill(0xf4), memsz: 0x10000 }], notes });
};

test("prepareBoot(ELF with AP note): linux64 BSP, direct64 APs with rdi = id, zero page and tables written", () => {
  const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const plan = prepareBoot(mem, { kernel: probeLike({ pvh: 0x100040, ap: 0x100080 }), cmdline: "probe.run=boot", vcpus: 4, initrd: new Uint8Array(5000).fill(7) });
  assert.equal(plan.protocol, "linux64");
  assert.equal(plan.apStartup, "direct64");
  assert.equal(plan.vcpus.length, 4);
  assert.equal(plan.vcpus[0]!.regs.rip, 0x100000n);
  assert.equal(plan.vcpus[0]!.regs.rsi, BigInt(ZERO_PAGE_START));
  for (let i = 1; i < 4; i++) {
    assert.equal(plan.vcpus[i]!.regs.rip, 0x100080n);
    assert.equal(plan.vcpus[i]!.regs.rdi, BigInt(i));
  }
  assert.equal(plan.bootInfoAddr, ZERO_PAGE_START);
  assert.equal(mem.readU32(ZERO_PAGE_START + 0x202), 0x53726448);
  assert.equal(mem.readCString(plan.cmdline.addr, 100), "probe.run=boot");
  assert.equal(mem.readU32(ZERO_PAGE_START + 0x228), plan.cmdline.addr);
  assert.ok(plan.initrd);
  assert.equal(mem.readU32(ZERO_PAGE_START + 0x218), plan.initrd.addr);
  assert.deepEqual(mem.read(plan.initrd.addr, 5000), new Uint8Array(5000).fill(7));
  assert.equal(String.fromCharCode(...mem.read(0x9fc00, 4)), "_MP_");
  assert.equal(plan.acpi.rsdpAddr, ACPI_RSDP_START);
  assert.equal(String.fromCharCode(...mem.read(ACPI_RSDP_START, 8)), "RSD PTR ");
  assert.equal(mem.readU64(ZERO_PAGE_START + 0x070), BigInt(ACPI_RSDP_START), "boot_params.acpi_rsdp_addr");
  assert.equal(mem.readU32(plan.acpi.tables.APIC.addr + 4), 44 + 4 * 8 + 12, "MADT: 4 local APICs and the IOAPIC");
  assert.ok(plan.e820.some((e) => e.type === E820_RESERVED && e.addr <= plan.acpi.range.addr && plan.acpi.range.addr + plan.acpi.range.size <= e.addr + e.size));
  assert.equal(mem.readU64(0x9000), 0xa003n, "PML4[0]");
  assert.equal(plan.msrs.length, 11);
  assert.deepEqual(structuredClone(plan.vcpus), plan.vcpus, "plain data for vCPU workers");
});

test("prepareBoot(ELF without AP note, 2 vCPUs): APs wait for INIT/SIPI", () => {
  const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const plan = prepareBoot(mem, { kernel: probeLike(), cmdline: "", vcpus: 2 });
  assert.equal(plan.apStartup, "sipi");
  assert.deepEqual(plan.vcpus.slice(1), [null]);
  assert.equal(plan.initrd, undefined);
});

test("prepareBoot: PVH when asked, or when the ELF has only a PVH entry", () => {
  for (const [kernel, protocol] of [
    [probeLike({ pvh: 0x100040 }), "pvh"],
    [probeLike({ entry: 0, pvh: 0x100040, ap: 0x100080 }), undefined],
  ] as const) {
    const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
    const plan = prepareBoot(mem, { kernel, cmdline: "x", vcpus: 2, ...(protocol ? { protocol } : {}) });
    assert.equal(plan.protocol, "pvh");
    assert.equal(plan.bootInfoAddr, PVH_INFO_START);
    assert.equal(mem.readU32(PVH_INFO_START), XEN_HVM_START_MAGIC);
    assert.equal(mem.readU64(PVH_INFO_START + 32), BigInt(ACPI_RSDP_START), "hvm_start_info.rsdp_paddr");
    const bsp = plan.vcpus[0]!;
    assert.equal(bsp.regs.rip, 0x100040n);
    assert.equal(bsp.regs.rbx, BigInt(PVH_INFO_START));
    assert.equal(bsp.sregsPatch.cs.db, 1);
    if (protocol === undefined) {
      // APs still enter in long mode at the AP entry.
      assert.equal(plan.apStartup, "direct64");
      assert.equal(plan.vcpus[1]!.sregsPatch.cs.l, 1);
      assert.equal(plan.vcpus[1]!.regs.rip, 0x100080n);
      assert.equal(plan.vcpus[1]!.regs.rsi, BigInt(PVH_INFO_START), "APs get the BSP's boot information (hvm_start_info)");
    }
  }
});

test("prepareBoot: protocol mismatches and bad sizes are refused", () => {
  const mem = (): GuestMemory => GuestMemory.anonymous(memoryLayout(64 * MiB));
  assert.throws(() => prepareBoot(mem(), { kernel: probeLike(), cmdline: "", vcpus: 1, protocol: "pvh" }), /no XEN_ELFNOTE_PHYS32_ENTRY/);
  assert.throws(() => prepareBoot(mem(), { kernel: buildBzImage(), cmdline: "", vcpus: 1, protocol: "pvh" }), /bzimage image has no XEN_ELFNOTE/);
  assert.throws(() => prepareBoot(mem(), { kernel: probeLike({ entry: 0, pvh: 0x100040 }), cmdline: "", vcpus: 1, protocol: "linux64" }), /linux64 boot requested/);
  assert.throws(() => prepareBoot(mem(), { kernel: probeLike(), cmdline: "", vcpus: 0 }), BootSetupError);
  assert.throws(() => prepareBoot(GuestMemory.anonymous([[0x100000, 64 * MiB]]), { kernel: probeLike(), cmdline: "", vcpus: 1 }), /first 1 MiB/);
});

test("prepareBoot(bzImage): header copied, entry64 = load + 0x200, sregs apply", () => {
  const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const plan = prepareBoot(mem, { kernel: buildBzImage(), cmdline: "console=ttyS0", vcpus: 1, initrd: new Uint8Array(4096) });
  assert.equal(plan.kernel.format, "bzimage");
  assert.equal(plan.vcpus[0]!.regs.rip, BigInt(plan.kernel.loadAddr + 0x200));
  assert.equal(mem.readU16(ZERO_PAGE_START + 0x206), 0x20f);
  assert.ok(plan.initrd!.addr >= plan.kernel.loadEnd);
  assert.equal(plan.initrd!.addr + 4096, 64 * MiB);
  const s = applySregsPatch(
    { cs: plan.vcpus[0]!.sregsPatch.cs, ds: plan.vcpus[0]!.sregsPatch.ds, es: plan.vcpus[0]!.sregsPatch.ds, fs: plan.vcpus[0]!.sregsPatch.ds, gs: plan.vcpus[0]!.sregsPatch.ds, ss: plan.vcpus[0]!.sregsPatch.ds, tr: plan.vcpus[0]!.sregsPatch.tr, ldt: plan.vcpus[0]!.sregsPatch.ds, gdt: { base: 0n, limit: 0 }, idt: { base: 0n, limit: 0 }, cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0n, interruptBitmap: [0n, 0n, 0n, 0n] },
    plan.vcpus[0]!.sregsPatch,
  );
  assert.equal(s.cr0, 0x80000011n);
});

test("prepareBoot: the virtio-mmio slots given reach the DSDT; none given, COM1 and the i8042 alone", () => {
  const slots = [
    { base: 0xd0001000, size: 0x1000, gsi: 5 },
    { base: 0xd0002000, size: 0x1000, gsi: 6 },
  ];
  const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const plan = prepareBoot(mem, { kernel: probeLike(), cmdline: "", vcpus: 1, virtioMmio: slots });
  const dsdt = mem.read(plan.acpi.tables.DSDT.addr, plan.acpi.tables.DSDT.size);
  assert.deepEqual(dsdt, buildDsdt(slots));
  assert.equal(byteSum(dsdt), 0);
  const bare = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const p2 = prepareBoot(bare, { kernel: probeLike(), cmdline: "", vcpus: 1 });
  assert.deepEqual(bare.read(p2.acpi.tables.DSDT.addr, p2.acpi.tables.DSDT.size), buildDsdt([]));
  assert.throws(() => prepareBoot(GuestMemory.anonymous(memoryLayout(64 * MiB)), { kernel: probeLike(), cmdline: "", vcpus: 1, virtioMmio: [{ base: 0xd0001000, size: 0x1000, gsi: 4 }] }), /GSI 4, which COM1 has/);
});
