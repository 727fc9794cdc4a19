// A real kernel: Debian's linux-image-cloud-amd64 (a bzImage), fetched with apt and cached under
// <repo>/.cache/debian-kernel/ (src/testing/debian.ts). Without network or apt the test is skipped
// with the reason.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { GuestMemory } from "../../memory/guest-memory.js";
import { DEBIAN_KERNEL_META_PACKAGE, debianKernelRelease, failureReason, fetchDebianKernel } from "../../testing/debian.js";
import {
  EM_X86_64,
  XEN_ELFNOTE_PHYS32_ENTRY,
  XEN_NOTE_NAME,
  MiB,
  XLF_KERNEL_64,
  ZERO_PAGE_START,
  bzImagePayload,
  e820Map,
  loadKernel,
  memoryLayout,
  parseBzImage,
  parseElf,
  parseKernelImage,
  payloadCompression,
  prepareBoot,
  writeBootParams,
  writeCmdline,
} from "./index.js";
import { lz4DecompressLegacy } from "./lz4.js";

test("Debian linux-image-cloud-amd64: a real bzImage through the loader", { timeout: 600_000 }, async (t: TestContext) => {
  let path: string;
  try {
    path = fetchDebianKernel();
  } catch (e) {
    t.skip(`could not fetch ${DEBIAN_KERNEL_META_PACKAGE}: ${failureReason(e)}`);
    return;
  }
  const image = new Uint8Array(readFileSync(path));
  const hdr = parseBzImage(image);

  await t.test("setup header (boot.rst): HdrS, protocol ≥ 2.15, 64-bit, relocatable, sane sizes", () => {
    assert.equal(String.fromCharCode(...image.subarray(0x202, 0x206)), "HdrS");
    assert.ok(hdr.protocolVersion >= 0x20f, `protocol ${hdr.protocolVersion.toString(16)}`);
    assert.ok((hdr.xloadflags & XLF_KERNEL_64) !== 0, "XLF_KERNEL_64");
    assert.equal(hdr.relocatable, true);
    assert.ok(hdr.setupSects >= 4 && hdr.setupSects <= 64, `setup_sects ${hdr.setupSects}`);
    assert.ok(hdr.kernelAlignment >= 2 * MiB && (hdr.kernelAlignment & (hdr.kernelAlignment - 1)) === 0);
    assert.ok(hdr.prefAddress >= MiB && hdr.prefAddress % hdr.kernelAlignment === 0, `pref_address ${hdr.prefAddress.toString(16)}`);
    assert.ok(hdr.initSize > hdr.pmSize && hdr.initSize < 256 * MiB, `init_size ${hdr.initSize.toString(16)}`);
    assert.ok(hdr.cmdlineSize >= 255);
    assert.ok(hdr.initrdAddrMax >= 0x37ffffff);
  });

  await t.test("loadKernel into 512 MiB: at pref_address, entry64 = load + 0x200", () => {
    const mem = GuestMemory.anonymous(memoryLayout(512 * MiB));
    const k = loadKernel(image, mem);
    assert.equal(k.format, "bzimage");
    assert.equal(k.loadAddr, hdr.prefAddress);
    assert.equal(k.entry64, k.loadAddr + 0x200);
    assert.equal(k.loadEnd, k.loadAddr + hdr.initSize);
    assert.deepEqual(mem.read(k.loadAddr, 4096), image.subarray(hdr.pmOffset, hdr.pmOffset + 4096));
    const cmd = writeCmdline(mem, "console=ttyS0 reboot=k panic=1", k.cmdlineMax);
    const zp = writeBootParams(mem, { kernel: k, cmdlineAddr: cmd.addr, cmdlineSize: cmd.size, e820: e820Map(memoryLayout(512 * MiB)) });
    assert.equal(mem.readU32(zp + 0x202), 0x53726448);
    assert.equal(mem.readU16(zp + 0x206), hdr.protocolVersion);
    assert.equal(mem.readU32(zp + 0x260), hdr.initSize);
    assert.equal(mem.readU8(zp + 0x210), 0xff);
    assert.equal(mem.readU32(zp + 0x228), cmd.addr);
  });

  await t.test("prepareBoot with an initrd and 2 vCPUs", () => {
    const mem = GuestMemory.anonymous(memoryLayout(512 * MiB));
    const plan = prepareBoot(mem, { kernel: image, initrd: new Uint8Array(3 * MiB).fill(0x5a), cmdline: "console=ttyS0", vcpus: 2 });
    assert.equal(plan.protocol, "linux64");
    assert.equal(plan.apStartup, "sipi");
    assert.equal(plan.vcpus[0]!.regs.rip, BigInt(plan.kernel.entry64));
    assert.ok(plan.initrd!.addr >= plan.kernel.loadEnd);
    assert.equal(plan.initrd!.addr + plan.initrd!.size <= 512 * MiB, true);
    assert.equal(mem.readU32(ZERO_PAGE_START + 0x218), plan.initrd!.addr);
    assert.equal(mem.readU32(ZERO_PAGE_START + 0x21c), 3 * MiB);
  });

  await t.test("compressed payload: the inner vmlinux is an ELF64 x86-64 the loader accepts", (st) => {
    const payload = bzImagePayload(image, hdr);
    const kind = payloadCompression(payload);
    let vmlinux: Uint8Array;
    if (kind === "gzip") {
      vmlinux = new Uint8Array(gunzipSync(payload, { maxOutputLength: hdr.initSize }));
    } else if (kind === "lz4") {
      // init_size (boot.rst) covers the decompressed kernel and more, so it bounds the output.
      vmlinux = lz4DecompressLegacy(payload, hdr.initSize);
    } else {
      st.skip(`payload is ${kind}-compressed; only gzip (Node's zlib) and lz4 (./lz4.ts) are decoded here, so the inner vmlinux is not checked`);
      return;
    }
    // scripts/Makefile.lib size_append: the payload ends with the decompressed size, u32 LE.
    assert.equal(new DataView(payload.buffer, payload.byteOffset).getUint32(payload.length - 4, true), vmlinux.length);
    assert.ok(vmlinux.length < hdr.initSize, `vmlinux ${vmlinux.length} bytes, init_size ${hdr.initSize}`);
    // gABI e_ident: ELFCLASS64 = 2 at EI_CLASS (4); e_machine at 0x12.
    assert.equal(vmlinux[4], 2, "ELFCLASS64");
    assert.equal(new DataView(vmlinux.buffer, vmlinux.byteOffset).getUint16(0x12, true), EM_X86_64);

    // The release in the banner (init/version.c linux_banner) is the one in the file name.
    const release = debianKernelRelease(path);
    assert.ok(Buffer.from(vmlinux.buffer, vmlinux.byteOffset, vmlinux.length).includes(`Linux version ${release} `), `banner names ${release}`);

    const parsed = parseKernelImage(vmlinux);
    assert.equal(parsed.format, "elf");
    const elf = parseElf(vmlinux);
    assert.ok(elf.segments.length >= 3, `${elf.segments.length} PT_LOAD segments`);
    const sorted = [...elf.segments].sort((a, b) => a.paddr - b.paddr);
    // arch/x86/Kconfig PHYSICAL_START default 0x1000000: the kernel is linked to run at 16 MiB,
    // which is also pref_address. Segments: text, rodata, percpu (vaddr 0), init+data+bss.
    assert.equal(sorted[0]!.paddr, hdr.prefAddress);
    for (const s of sorted) {
      assert.ok(s.paddr >= 16 * MiB, `PT_LOAD at ${s.paddr.toString(16)} is below 16 MiB`);
      assert.ok(s.memsz > 0 && s.memsz < 256 * MiB && s.filesz <= s.memsz, `PT_LOAD ${s.paddr.toString(16)} memsz ${s.memsz.toString(16)}`);
    }
    for (let i = 1; i < sorted.length; i++) {
      assert.ok(sorted[i]!.paddr >= sorted[i - 1]!.paddr + sorted[i - 1]!.memsz, `PT_LOAD ${sorted[i]!.paddr.toString(16)} overlaps the one before`);
    }
    const end = sorted[sorted.length - 1]!.paddr + sorted[sorted.length - 1]!.memsz;
    // boot.rst init_size: what the kernel needs from its load address; the raw image fits in it.
    assert.ok(end - hdr.prefAddress <= hdr.initSize, `image ends at ${end.toString(16)}, init_size ${hdr.initSize.toString(16)}`);
    // The 64-bit entry is startup_64 at the start of text (head_64.S), 16 MiB physical.
    assert.equal(elf.entry64, hdr.prefAddress);
    // Debian's cloud config has CONFIG_PVH=y: the Xen PHYS32_ENTRY note (pvh_start_xen, head.S) is there.
    assert.notEqual(elf.pvhEntry, undefined, "XEN_ELFNOTE_PHYS32_ENTRY note");
    assert.ok(elf.notes.some((n) => n.name === XEN_NOTE_NAME && n.type === XEN_ELFNOTE_PHYS32_ENTRY));
    assert.ok(elf.pvhEntry! > sorted[0]!.paddr && elf.pvhEntry! < sorted[0]!.paddr + sorted[0]!.memsz, "PVH entry inside text");

    const mem = GuestMemory.anonymous(memoryLayout(512 * MiB));
    const k = loadKernel(vmlinux, mem);
    assert.equal(k.format, "elf");
    assert.equal(k.entry64Usable, true);
    assert.equal(k.entry64, hdr.prefAddress);
    assert.equal(k.pvhEntry, elf.pvhEntry);
    assert.equal(k.loadAddr, sorted[0]!.paddr);
    assert.equal(k.loadEnd, end);
    for (const s of sorted) {
      const n = Math.min(s.filesz, 4096);
      assert.deepEqual(mem.read(s.paddr, n), vmlinux.subarray(s.offset, s.offset + n), `segment at ${s.paddr.toString(16)} copied`);
    }
    st.diagnostic(
      `vmlinux ${vmlinux.length} bytes; PT_LOAD ${sorted.map((s) => `${s.paddr.toString(16)}+${s.memsz.toString(16)}`).join(", ")}; ` +
        `entry64 ${k.entry64.toString(16)}; PVH entry ${k.pvhEntry?.toString(16)}`,
    );
  });
});
