import { test } from "node:test";
import assert from "node:assert/strict";
import { parseElf, XEN_ELFNOTE_PHYS32_ENTRY } from "./elf.js";
import { KernelFormatError } from "./errors.js";
import { buildElf, u32le, u64le } from "./test-images.js";

const seg = (paddr: number, n = 64): { paddr: number; data: Uint8Array } => ({ paddr, data: new Uint8Array(n).fill(0x90) });

test("ELF: PT_LOAD segments and a physical e_entry", () => {
  const elf = parseElf(buildElf({ entry: 0x200010, segments: [seg(0x200000), { ...seg(0x300000), memsz: 0x1000 }] }));
  assert.equal(elf.entry64, 0x200010);
  assert.deepEqual(elf.segments.map((s) => [s.paddr, s.filesz, s.memsz]), [[0x200000, 64, 64], [0x300000, 64, 0x1000]]);
  assert.equal(elf.pvhEntry, undefined);
  assert.equal(elf.apEntry, undefined);
});

test("ELF: a virtual e_entry is translated through its segment (vmlinux-style vaddr != paddr)", () => {
  const elf = parseElf(buildElf({ entry: 0xffffffff81000020n, segments: [{ ...seg(0x1000000), vaddr: 0xffffffff81000000n }] }));
  assert.equal(elf.entry64, 0x1000020);
});

test("ELF notes: Xen PHYS32_ENTRY (4- and 8-byte desc) and the Typervisor AP entry", () => {
  for (const [desc, align] of [[u32le(0x200100), 4], [u64le(0x200100), 8]] as const) {
    const elf = parseElf(
      buildElf({
        entry: 0x200000,
        segments: [seg(0x200000, 0x200)],
        noteAlign: align,
        notes: [
          { name: "GNU", type: 3, desc: new Uint8Array(20) },
          { name: "Xen", type: XEN_ELFNOTE_PHYS32_ENTRY, desc },
          { name: "Typervisor", type: 1, desc: u64le(0x200180) },
        ],
      }),
    );
    assert.equal(elf.pvhEntry, 0x200100);
    assert.equal(elf.apEntry, 0x200180);
  }
});

test("ELF: an entry outside every segment is reported as unusable, not guessed", () => {
  const elf = parseElf(buildElf({ entry: 0, segments: [seg(0x200000)], notes: [{ name: "Xen", type: 18, desc: u32le(0x200000) }] }));
  assert.equal(elf.entry64, undefined);
  assert.equal(elf.pvhEntry, 0x200000);
});

test("ELF: each malformed image gets its own error", () => {
  const good = buildElf({ entry: 0x200000, segments: [seg(0x200000)] });
  const patch = (f: (b: Uint8Array, dv: DataView) => void): Uint8Array => {
    const b = good.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["truncated header", good.subarray(0, 40), /truncated ELF: the ELF64 header needs 64 bytes/],
    ["ELF32", buildElf({ entry: 0x200000, segments: [seg(0x200000)], elfClass: 1 }), /ELF32 image/],
    ["big-endian", buildElf({ entry: 0x200000, segments: [seg(0x200000)], dataEncoding: 2 }), /not little-endian/],
    ["aarch64", buildElf({ entry: 0x200000, segments: [seg(0x200000)], machine: 183 }), /machine 183 is not x86-64/],
    ["ET_DYN", buildElf({ entry: 0x200000, segments: [seg(0x200000)], type: 3 }), /ET_DYN is not supported/],
    ["ET_REL", buildElf({ entry: 0x200000, segments: [seg(0x200000)], type: 1 }), /type 1 is not an executable/],
    ["no phdrs", patch((_, dv) => dv.setUint16(0x38, 0, true)), /no program headers/],
    ["phentsize", patch((_, dv) => dv.setUint16(0x36, 32, true)), /e_phentsize 32/],
    ["phdrs past end", patch((_, dv) => dv.setBigUint64(0x20, BigInt(good.length - 10), true)), /program headers at .* past the end/],
    ["segment data past end", patch((_, dv) => dv.setBigUint64(64 + 0x20, 0x100000n, true)), /truncated ELF: program header 0 needs file bytes/],
    ["filesz > memsz", patch((_, dv) => dv.setBigUint64(64 + 0x28, 8n, true)), /p_filesz 0x40 larger than p_memsz 0x8/],
    ["overlap", buildElf({ entry: 0x200000, segments: [seg(0x200000, 0x100), seg(0x200080)] }), /segments overlap/],
    ["no PT_LOAD", buildElf({ entry: 0x200000, segments: [], notes: [{ name: "X", type: 1, desc: new Uint8Array(4) }] }), /no PT_LOAD segment/],
    ["bad note", buildElf({ entry: 0x200000, segments: [seg(0x200000)], notes: [{ name: "Xen", type: 18, desc: new Uint8Array(2) }] }), /Xen PHYS32_ENTRY note has a 2-byte value/],
    ["bad AP note", buildElf({ entry: 0x200000, segments: [seg(0x200000)], notes: [{ name: "Typervisor", type: 1, desc: u32le(1) }] }), /AP-entry note has a 4-byte value/],
  ];
  const messages = new Set<string>();
  for (const [name, img, re] of cases) {
    assert.throws(() => parseElf(img), (e: unknown) => {
      assert.ok(e instanceof KernelFormatError, `${name}: ${String(e)}`);
      assert.match(e.message, re, name);
      messages.add(e.message);
      return true;
    });
  }
  assert.equal(messages.size, cases.length, "every case has a distinct message");
});

test("ELF: a note whose lengths run past its segment is refused", () => {
  const img = buildElf({ entry: 0x200000, segments: [seg(0x200000)], notes: [{ name: "Xen", type: 18, desc: u32le(1) }] });
  const dv = new DataView(img.buffer);
  const noteOff = Number(dv.getBigUint64(64 + 56 + 8, true));
  dv.setUint32(noteOff + 4, 4096, true); // descsz
  assert.throws(() => parseElf(img), /malformed ELF note in PT_NOTE 1/);
});
