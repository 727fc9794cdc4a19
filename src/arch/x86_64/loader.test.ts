import { test } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { GuestMemory } from "../../memory/guest-memory.js";
import { BootSetupError, KernelFormatError } from "./errors.js";
import { loadKernel, parseKernelImage } from "./loader.js";
import { MiB, memoryLayout } from "./layout.js";
import { parseBzImage, XLF_CAN_BE_LOADED_ABOVE_4G } from "./bzimage.js";
import { buildBzImage, buildElf, u32le, u64le } from "./test-images.js";

const mem = (size = 64 * MiB): GuestMemory => GuestMemory.anonymous(memoryLayout(size));

test("loadKernel(ELF): copies each PT_LOAD at p_paddr and zeroes the bss up to p_memsz", () => {
  const m = mem();
  m.fill(0x300000, 0x2000, 0xaa);
  const data = new Uint8Array(0x100).map((_, i) => i);
  const img = buildElf({
    entry: 0x200000,
    segments: [{ paddr: 0x200000, data }, { paddr: 0x300000, data: data.subarray(0, 0x10), memsz: 0x2000 }],
    notes: [{ name: "Typervisor", type: 1, desc: u64le(0x200040) }],
  });
  const k = loadKernel(img, m);
  assert.equal(k.format, "elf");
  assert.equal(k.entry64, 0x200000);
  assert.equal(k.entry64Usable, true);
  assert.equal(k.apEntry, 0x200040);
  assert.equal(k.loadAddr, 0x200000);
  assert.equal(k.loadEnd, 0x302000);
  assert.deepEqual(m.read(0x200000, 0x100), data);
  assert.deepEqual(m.read(0x300000, 0x10), data.subarray(0, 0x10));
  assert.ok(m.read(0x300010, 0x2000 - 0x10).every((b) => b === 0), "bss is zeroed");
  assert.equal(k.cmdlineMax, 2048);
});

test("loadKernel(ELF): segments below 1 MiB, outside RAM, or in the MMIO gap are refused", () => {
  const s = (paddr: number, memsz = 0x100) => buildElf({ entry: paddr, segments: [{ paddr, data: new Uint8Array(0x10), memsz }] });
  assert.throws(() => loadKernel(s(0x80000), mem()), (e: unknown) => e instanceof BootSetupError && /below 1 MiB/.test(e.message));
  assert.throws(() => loadKernel(s(63 * MiB, 2 * MiB), mem()), /not inside guest RAM/);
  const big = GuestMemory.anonymous([[0, 0x100000], [0x1_0000_0000, 0x100000]]);
  assert.throws(() => loadKernel(s(0xd000_0000), big), /not inside guest RAM/);
});

test("loadKernel(ELF): an entry outside the segments with no PVH note is refused", () => {
  const img = buildElf({ entry: 0x900000, segments: [{ paddr: 0x200000, data: new Uint8Array(16) }] });
  assert.throws(() => loadKernel(img, mem()), /entry point 0x900000 is not inside any PT_LOAD segment and there is no PVH note/);
});

test("loadKernel(ELF, PVH only): pvhEntry set, entry64 unusable", () => {
  const img = buildElf({ entry: 0, segments: [{ paddr: 0x200000, data: new Uint8Array(16) }], notes: [{ name: "Xen", type: 18, desc: u32le(0x200004) }] });
  const k = loadKernel(img, mem());
  assert.equal(k.entry64Usable, false);
  assert.equal(k.pvhEntry, 0x200004);
});

test("bzImage header (boot.rst): fields of a synthetic image", () => {
  const h = parseBzImage(buildBzImage({ setupSects: 0, initSize: 0x123000, prefAddress: 0x1000000 }));
  assert.equal(h.protocolVersion, 0x20f);
  assert.equal(h.setupSects, 4, "setup_sects 0 means 4");
  assert.equal(h.pmOffset, 5 * 512);
  assert.equal(h.initSize, 0x123000);
  assert.equal(h.prefAddress, 0x1000000);
  assert.equal(h.kernelAlignment, 0x200000);
  assert.equal(h.relocatable, true);
  assert.equal(h.cmdlineSize, 0x7ff);
  assert.equal(h.initrdAddrMax, 0x7fffffff);
  assert.equal(h.setupHeader.length, 0x26c - 0x1f1);
  assert.equal(h.setupHeader[0x202 - 0x1f1], 0x48); // 'H'
});

test("loadKernel(bzImage): protected-mode code at pref_address, entry64 = load + 0x200", () => {
  const pm = new Uint8Array(0x4000).map((_, i) => (i * 13) & 0xff);
  const img = buildBzImage({ setupSects: 7, pmCode: pm, initSize: 0x800000 });
  const m = mem();
  const k = loadKernel(img, m);
  assert.equal(k.format, "bzimage");
  assert.equal(k.loadAddr, 0x1000000);
  assert.equal(k.entry64, 0x1000200);
  assert.equal(k.loadEnd, 0x1800000);
  assert.equal(k.protocolVersion, 0x20f);
  assert.equal(k.cmdlineMax, 0x800);
  assert.deepEqual(m.read(0x1000000, pm.length), pm);
  assert.deepEqual(k.setupHeader, img.subarray(0x1f1, 0x26c));
});

test("loadKernel(bzImage): a misaligned pref_address falls back to 16 MiB aligned to kernel_alignment", () => {
  const k = loadKernel(buildBzImage({ prefAddress: 0x1234000, kernelAlignment: 0x400000 }), mem());
  assert.equal(k.loadAddr, 0x1000000);
});

test("loadKernel(bzImage): non-relocatable kernels load only at pref_address", () => {
  const k = loadKernel(buildBzImage({ relocatable: false, prefAddress: 0x200000 }), mem());
  assert.equal(k.loadAddr, 0x200000);
  assert.throws(() => loadKernel(buildBzImage({ relocatable: false, prefAddress: 0x3f00000, initSize: 0x200000 }), mem()), /non-relocatable bzImage must load at 0x3f00000/);
});

test("loadKernel(bzImage): init_size must fit in RAM", () => {
  assert.throws(
    () => loadKernel(buildBzImage({ initSize: 60 * MiB }), mem(64 * MiB)),
    (e: unknown) => e instanceof BootSetupError && /needs 0x3c00000 bytes \(init_size\)/.test(e.message),
  );
});

test("bzImage: each malformed header gets its own error", () => {
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["old protocol", buildBzImage({ version: 0x205 }), /boot protocol 2.05 is too old: 2.06 or newer is required/],
    ["no XLF_KERNEL_64", buildBzImage({ xloadflags: XLF_CAN_BE_LOADED_ABOVE_4G }), /lacks XLF_KERNEL_64/],
    ["boot flag", buildBzImage({ bootFlag: 0x1234 }), /boot_flag at 0x1fe is 0x1234/],
    ["truncated pm", buildBzImage().subarray(0, 5 * 512 + 0x100), /syssize says/],
    ["truncated setup", buildBzImage({ setupSects: 30 }).subarray(0, 0x1000), /30 setup sectors put the protected-mode kernel at 0x3e00/],
    ["header end", buildBzImage({ jumpOffset: 0xa0 }), /setup header ends at 0x2a2/],
    ["alignment", buildBzImage({ kernelAlignment: 0x300000 }), /kernel_alignment 0x300000 is not a power of two/],
    ["init_size", buildBzImage({ initSize: 0x10 }), /init_size 0x10 is smaller than its own code/],
  ];
  const seen = new Set<string>();
  for (const [name, img, re] of cases) {
    assert.throws(() => loadKernel(img, mem()), (e: unknown) => {
      assert.ok(e instanceof KernelFormatError, `${name}: ${String(e)}`);
      assert.match(e.message, re, name);
      seen.add(e.message);
      return true;
    });
  }
  assert.equal(seen.size, cases.length);
});

test("non-kernel input: random bytes, empty, truncated, gzip — one clear sentence each", () => {
  let x = 12345;
  const random = new Uint8Array(4096).map(() => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x & 0xff));
  random[0] = 0x00; // not ELF, not gzip
  const cases: Array<[Uint8Array, RegExp]> = [
    [random, /^not a kernel image: no ELF magic and no bzImage "HdrS" signature$/],
    [new Uint8Array(0), /only 0 bytes/],
    [gzipSync(buildElf({ entry: 0x200000, segments: [{ paddr: 0x200000, data: new Uint8Array(16) }] })), /it is a gzip file/],
    [new Uint8Array([0x4d, 0x5a, 0, 0, 0, 0]), /PE\/EFI file/],
  ];
  for (const [img, re] of cases) {
    assert.throws(() => loadKernel(img, mem()), (e: unknown) => e instanceof KernelFormatError && re.test(e.message));
    assert.throws(() => parseKernelImage(img), KernelFormatError);
  }
});

test("parseKernelImage parses without touching guest memory", () => {
  const p = parseKernelImage(buildBzImage());
  assert.equal(p.format, "bzimage");
  const e = parseKernelImage(buildElf({ entry: 0x200000, segments: [{ paddr: 0x200000, data: new Uint8Array(16) }] }));
  assert.equal(e.format, "elf");
});
