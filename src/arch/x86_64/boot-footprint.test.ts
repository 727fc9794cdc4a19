// What loading a kernel costs the host in guest memory: only the pages the loader writes (the
// kernel's segments and the boot tables). Guest RAM is a memfd whose pages are committed on first
// touch (memory/create.ts), so a loader that zeroed, hashed or copied all of RAM would show here
// as the guest's whole size.

import { test } from "node:test";
import assert from "node:assert/strict";
import { fstatSync } from "node:fs";
import { createMemfdGuestMemory } from "../../memory/create.js";
import { prepareBoot, MiB, memoryLayout } from "./index.js";
import { buildElf } from "./test-images.js";

const PAGE = 4096;
/**
 * Pages the boot tables may take besides the kernel: zero page, command line, GDT/IDT, the
 * identity page tables, MP table, ACPI tables (a few pages each, less than this).
 */
const BOOT_TABLE_PAGES = 32;

test("prepareBoot on a 128 MiB guest commits only the kernel's pages and the boot tables", (t) => {
  const memsz = 0x40000; // 256 KiB, of which 4 KiB from the file and the rest bss
  const kernel = buildElf({ entry: 0x100000, segments: [{ paddr: 0x100000, data: new Uint8Array(PAGE).fill(0xf4), memsz }] });
  const m = createMemfdGuestMemory(memoryLayout(128 * MiB));
  try {
    prepareBoot(m.memory, { kernel, cmdline: "probe.run=demo", vcpus: 4 });
    const committed = fstatSync(m.fd).blocks * 512;
    t.diagnostic(`${committed / PAGE} pages committed of ${(128 * MiB) / PAGE}`);
    assert.ok(committed <= memsz + BOOT_TABLE_PAGES * PAGE, `${committed} bytes committed: more than the kernel (${memsz}) and the boot tables`);
  } finally {
    m.close();
  }
});
