import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../memory/guest-memory.js";
import {
  E820_RAM,
  E820_RESERVED,
  XEN_HVM_START_MAGIC,
  e820Map,
  placeInitrd,
  writeBootParams,
  writeCmdline,
  writePvhStartInfo,
} from "./bootparams.js";
import { BootSetupError } from "./errors.js";
import { GiB, MiB, ZERO_PAGE_START, memoryLayout, CMDLINE_START, PVH_INFO_START, PVH_MODLIST_START, PVH_MEMMAP_START } from "./layout.js";
import { loadKernel, type KernelInfo } from "./loader.js";
import { buildBzImage } from "./test-images.js";

const elfKernel = (over: Partial<KernelInfo> = {}): KernelInfo => ({
  format: "elf", entry64: 0x1000000, entry64Usable: true, loadAddr: 0x1000000, loadEnd: 0x2000000, loadedBytes: 0x1000000,
  cmdlineMax: 2048, initrdAddrMax: 0x37ffffff, ...over,
});

test("e820 (zero-page.rst): below 640 KiB usable, EBDA..1 MiB reserved, rest RAM", () => {
  assert.deepEqual(e820Map(memoryLayout(512 * MiB)), [
    { addr: 0, size: 0x9fc00, type: E820_RAM },
    { addr: 0x9fc00, size: 0x100000 - 0x9fc00, type: E820_RESERVED },
    { addr: 0x100000, size: 511 * MiB, type: E820_RAM },
  ]);
});

test("e820: the MMIO gap is absent and RAM resumes at 4 GiB", () => {
  const map = e820Map(memoryLayout(6 * GiB));
  assert.deepEqual(map.slice(2), [
    { addr: 0x100000, size: 3 * GiB - MiB, type: E820_RAM },
    { addr: 4 * GiB, size: 3 * GiB, type: E820_RAM },
  ]);
  for (const e of map) assert.ok(e.addr + e.size <= 3 * GiB || e.addr >= 4 * GiB, "nothing in the gap");
});

test("e820: extra reserved ranges split RAM and are listed", () => {
  const map = e820Map(memoryLayout(64 * MiB), { addr: 32 * MiB, size: MiB });
  assert.deepEqual(map.slice(2), [
    { addr: MiB, size: 31 * MiB, type: E820_RAM },
    { addr: 32 * MiB, size: MiB, type: E820_RESERVED },
    { addr: 33 * MiB, size: 31 * MiB, type: E820_RAM },
  ]);
});

test("writeCmdline: NUL-terminated at 0x20000, length limit includes the NUL", () => {
  const m = GuestMemory.anonymous(memoryLayout(8 * MiB));
  assert.deepEqual(writeCmdline(m, "console=ttyS0 quiet"), { addr: CMDLINE_START, size: 20 });
  assert.equal(m.readCString(CMDLINE_START, 100), "console=ttyS0 quiet");
  assert.doesNotThrow(() => writeCmdline(m, "x".repeat(9), 10));
  assert.throws(() => writeCmdline(m, "x".repeat(10), 10), /10 bytes; this kernel accepts at most 9/);
  assert.throws(() => writeCmdline(m, "a\0b"), /NUL byte/);
});

test("placeInitrd: highest page-aligned address below initrd_addr_max", () => {
  const m = GuestMemory.anonymous(memoryLayout(2 * GiB));
  const addr = placeInitrd(m, 5000, elfKernel());
  assert.equal(addr % 4096, 0);
  assert.equal(addr, 0x38000000 - 8192);
  assert.ok(addr + 5000 <= 0x38000000);
});

test("placeInitrd: RAM smaller than initrd_addr_max → top of RAM", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  assert.equal(placeInitrd(m, 4096, elfKernel()), 64 * MiB - 4096);
  assert.equal(placeInitrd(m, 1, elfKernel()), 64 * MiB - 4096);
});

test("placeInitrd: never in or above the MMIO gap, even when initrd_addr_max allows it", () => {
  // Sparse stand-in for an 8 GiB guest: the top 64 MiB below the gap and 64 MiB above 4 GiB.
  const m = GuestMemory.anonymous([[0, 2 * MiB], [3 * GiB - 64 * MiB, 64 * MiB], [4 * GiB, 64 * MiB]]);
  assert.equal(placeInitrd(m, MiB, elfKernel({ initrdAddrMax: 0xffffffff })), 3 * GiB - MiB);
  assert.equal(placeInitrd(m, MiB, elfKernel({ initrdAddrMax: Number.MAX_SAFE_INTEGER })), 3 * GiB - MiB);
});

test("placeInitrd: exactly fits between kernel end and RAM end; one byte more does not", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const k = elfKernel({ loadEnd: 48 * MiB });
  assert.equal(placeInitrd(m, 16 * MiB, k), 48 * MiB);
  assert.throws(() => placeInitrd(m, 16 * MiB + 1, k), (e: unknown) => e instanceof BootSetupError && /does not fit/.test(e.message));
  assert.throws(() => placeInitrd(m, 0, k), /not a positive byte count/);
});

test("writeBootParams (ELF, no header): minimal setup header fields and e820 table", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  m.fill(ZERO_PAGE_START, 4096, 0xee);
  const e820 = e820Map(memoryLayout(64 * MiB));
  const zp = writeBootParams(m, { kernel: elfKernel(), cmdlineAddr: 0x20000, cmdlineSize: 20, initrd: { addr: 0x3000000, size: 0x1234 }, e820, rsdpAddr: 0xe0000 });
  assert.equal(zp, 0x7000);
  assert.equal(m.readU64(zp + 0x070), 0xe0000n); // acpi_rsdp_addr (zero-page.rst 070/008)
  assert.equal(m.readU16(zp + 0x1fe), 0xaa55); // boot_flag
  assert.equal(m.readU32(zp + 0x202), 0x53726448); // "HdrS"
  assert.equal(m.readU16(zp + 0x206), 0x20f); // version
  assert.equal(m.readU8(zp + 0x210), 0xff); // type_of_loader
  assert.equal(m.readU8(zp + 0x211), 0x81); // LOADED_HIGH | CAN_USE_HEAP
  assert.equal(m.readU16(zp + 0x224), 0xde00); // heap_end_ptr
  assert.equal(m.readU32(zp + 0x228), 0x20000); // cmd_line_ptr
  assert.equal(m.readU32(zp + 0x238), 2047); // cmdline_size
  assert.equal(m.readU32(zp + 0x218), 0x3000000); // ramdisk_image
  assert.equal(m.readU32(zp + 0x21c), 0x1234); // ramdisk_size
  assert.equal(m.readU32(zp + 0xc0), 0); // ext_ramdisk_image
  assert.equal(m.readU8(zp + 0x1e8), 3); // e820_entries
  for (let i = 0; i < 3; i++) {
    const at: number = zp + 0x2d0 + i * 20;
    assert.equal(Number(m.readU64(at)), e820[i]!.addr);
    assert.equal(Number(m.readU64(at + 8)), e820[i]!.size);
    assert.equal(m.readU32(at + 16), e820[i]!.type);
  }
  assert.equal(m.readU8(zp + 0x10), 0, "the rest of the page is zeroed");
});

test("writeBootParams (bzImage): the kernel's setup header is copied to 0x1f1, loader fields set", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const img = buildBzImage();
  const k = loadKernel(img, m);
  const zp = writeBootParams(m, { kernel: k, cmdlineAddr: 0x20000, cmdlineSize: 10, e820: e820Map(memoryLayout(64 * MiB)) });
  const hdr = m.read(zp + 0x1f1, 0x26c - 0x1f1);
  for (const off of [0x1f1, 0x202, 0x206, 0x22c, 0x230, 0x234, 0x236, 0x238, 0x258, 0x260]) {
    assert.equal(hdr[off - 0x1f1], img[off], `header byte ${off.toString(16)}`);
  }
  assert.equal(m.readU8(zp + 0x210), 0xff);
  assert.equal(m.readU8(zp + 0x211), 0x81);
  assert.equal(m.readU32(zp + 0x214), k.loadAddr); // code32_start
  assert.equal(m.readU32(zp + 0x238), 0x7ff, "cmdline_size stays the kernel's");
  assert.equal(m.readU32(zp + 0x218), 0, "no initrd");
  assert.equal(m.readU64(zp + 0x070), 0n, "acpi_rsdp_addr: none given");
});

test("writeBootParams: addresses above 4 GiB go to ext_ramdisk_image / ext_cmd_line_ptr", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const k = elfKernel({ initrdAddrMax: Number.MAX_SAFE_INTEGER });
  const zp = writeBootParams(m, { kernel: k, cmdlineAddr: 0x1_2345_6000, cmdlineSize: 10, initrd: { addr: 0x2_0000_1000, size: 0x1_0000_0010 }, e820: [] });
  assert.equal(m.readU32(zp + 0x228), 0x2345_6000);
  assert.equal(m.readU32(zp + 0xc8), 1);
  assert.equal(m.readU32(zp + 0x218), 0x1000);
  assert.equal(m.readU32(zp + 0xc0), 2);
  assert.equal(m.readU32(zp + 0x21c), 0x10);
  assert.equal(m.readU32(zp + 0xc4), 1);
});

test("writeBootParams: limits — 128 e820 entries, cmdline size, initrd_addr_max", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const e820 = Array.from({ length: 129 }, (_, i) => ({ addr: i * 0x1000, size: 0x1000, type: 1 }));
  assert.throws(() => writeBootParams(m, { kernel: elfKernel(), cmdlineAddr: 0x20000, cmdlineSize: 1, e820 }), /129 entries; the zero page holds at most 128/);
  assert.throws(() => writeBootParams(m, { kernel: elfKernel(), cmdlineAddr: 0x20000, cmdlineSize: 4000, e820: [] }), /exceeds this kernel's limit of 2048/);
  assert.throws(
    () => writeBootParams(m, { kernel: elfKernel(), cmdlineAddr: 0x20000, cmdlineSize: 1, initrd: { addr: 0x37fff000, size: 0x2000 }, e820: [] }),
    /above initrd_addr_max/,
  );
});

test("writePvhStartInfo (start_info.h): magic, version 1, cmdline, modlist, memmap", () => {
  const m = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const e820 = e820Map(memoryLayout(64 * MiB));
  const si = writePvhStartInfo(m, { cmdline: { addr: 0x20000, size: 5 }, initrd: { addr: 0x3000000, size: 0x777 }, e820, rsdpAddr: 0xe0000 });
  assert.equal(si, PVH_INFO_START);
  assert.equal(m.readU32(si), XEN_HVM_START_MAGIC);
  assert.equal(m.readU32(si), 0x336ec578);
  assert.equal(m.readU32(si + 4), 1);
  assert.equal(m.readU32(si + 12), 1); // nr_modules
  assert.equal(m.readU64(si + 16), BigInt(PVH_MODLIST_START));
  assert.equal(m.readU64(si + 24), 0x20000n);
  assert.equal(m.readU64(si + 32), 0xe0000n); // rsdp_paddr (start_info.h)
  assert.equal(m.readU64(si + 40), BigInt(PVH_MEMMAP_START));
  assert.equal(m.readU32(si + 48), 3);
  assert.equal(m.readU64(PVH_MODLIST_START), 0x3000000n);
  assert.equal(m.readU64(PVH_MODLIST_START + 8), 0x777n);
  assert.equal(m.readU64(PVH_MEMMAP_START + 24 + 0), 0x9fc00n);
  assert.equal(m.readU32(PVH_MEMMAP_START + 24 + 16), E820_RESERVED);
});

test("writePvhStartInfo without an initrd has no modules", () => {
  const m = GuestMemory.anonymous(memoryLayout(8 * MiB));
  const si = writePvhStartInfo(m, { cmdline: { addr: 0x20000, size: 1 }, e820: [] });
  assert.equal(m.readU32(si + 12), 0);
  assert.equal(m.readU64(si + 16), 0n);
  assert.equal(m.readU64(si + 32), 0n, "rsdp_paddr: none given");
});

