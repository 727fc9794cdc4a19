import { test } from "node:test";
import assert from "node:assert/strict";
import { bootMsrs } from "./msrs.js";

test("boot MSRs (Firecracker's list, SDM Vol.4 Table 2-2)", () => {
  const m = new Map(bootMsrs().map((e) => [e.index, e.data]));
  for (const idx of [0x174, 0x175, 0x176, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x10]) {
    assert.equal(m.get(idx), 0n, `MSR ${idx.toString(16)} = 0`);
  }
  assert.equal(m.get(0x1a0), 1n, "IA32_MISC_ENABLE.FAST_STRING");
  assert.equal(m.get(0x2ff), 0x806n, "MTRRdefType: E | WB");
  assert.equal(m.size, 11);
});
