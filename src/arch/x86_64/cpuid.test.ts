import { test } from "node:test";
import assert from "node:assert/strict";
import type { CpuidEntry } from "../../kvm/types.js";
import { vcpuCpuid } from "./cpuid.js";

const e = (fn: number, index: number, eax = 0, ebx = 0, ecx = 0, edx = 0, flags = 0): CpuidEntry => ({ function: fn, index, flags, eax, ebx, ecx, edx });
const ascii = (s: string, off: number): number => s.charCodeAt(off) | (s.charCodeAt(off + 1) << 8) | (s.charCodeAt(off + 2) << 16) | (s.charCodeAt(off + 3) << 24);

// A KVM_GET_SUPPORTED_CPUID-shaped list of a 16-thread host.
const supported: CpuidEntry[] = [
  e(0x0, 0, 0x1f, ascii("GenuineIntel", 0), ascii("GenuineIntel", 8), ascii("GenuineIntel", 4)),
  e(0x1, 0, 0x000906ea, 0x0a100800 | (7 << 24), 0x7ffafbff, 0x0fabfbff),
  e(0x4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0, 1), // L1d
  e(0x4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0, 1), // L1i
  e(0x4, 2, 0x1c004143, 0x00c0003f, 0x3ff, 0, 1), // L2
  e(0x4, 3, 0x1c03c163, 0x03c0003f, 0x2fff, 6, 1), // L3
  e(0x4, 4, 0, 0, 0, 0, 1), // end
  e(0x6, 0, 0x77, 0x2, 0x9, 0),
  e(0xb, 0, 1, 2, 0x100, 7, 1),
  e(0xb, 1, 4, 16, 0x201, 7, 1),
  e(0x1f, 0, 1, 2, 0x100, 7, 1),
  e(0x40000000, 0, 0x40000001, ascii("KVMKVMKVM\0\0\0", 0), ascii("KVMKVMKVM\0\0\0", 4), ascii("KVMKVMKVM\0\0\0", 8)),
  e(0x40000001, 0, 0x01007afb),
];

test("CPUID leaf 1 (SDM Vol.2A): initial APIC id, logical count, HTT, hypervisor bit", () => {
  const c = vcpuCpuid(supported, { vcpuId: 3, vcpuCount: 4 });
  const l1 = c.find((x) => x.function === 1)!;
  assert.equal(l1.ebx >>> 24, 3);
  assert.equal((l1.ebx >>> 16) & 0xff, 4);
  assert.equal(l1.ebx & 0xffff, 0x0800, "CLFLUSH line size kept");
  assert.equal(l1.ecx >>> 31, 1);
  assert.equal((l1.edx >>> 28) & 1, 1);
  const one = vcpuCpuid(supported, { vcpuId: 0, vcpuCount: 1 }).find((x) => x.function === 1)!;
  assert.equal((one.edx >>> 28) & 1, 0, "no HTT with one vCPU");
  assert.equal(one.ebx >>> 24, 0);
});

test("CPUID leaf 4: cores per package and cache sharing", () => {
  const c = vcpuCpuid(supported, { vcpuId: 0, vcpuCount: 4 }).filter((x) => x.function === 4);
  for (const x of c.slice(0, 4)) assert.equal(x.eax >>> 26, 3, "cores per package - 1");
  assert.equal((c[0]!.eax >>> 14) & 0xfff, 0, "L1 private");
  assert.equal((c[2]!.eax >>> 14) & 0xfff, 0, "L2 private");
  assert.equal((c[3]!.eax >>> 14) & 0xfff, 3, "L3 shared by all");
  assert.equal(c[3]!.eax & 0x3fff, 0x0163 & 0x3fff, "type/level bits kept");
  assert.deepEqual(c[4], supported[6], "terminator untouched");
});

test("CPUID leaf 6 is cleared; KVM's 0x40000000 signature is kept", () => {
  const c = vcpuCpuid(supported, { vcpuId: 0, vcpuCount: 2 });
  assert.deepEqual(c.find((x) => x.function === 6), e(6, 0));
  assert.deepEqual(c.find((x) => x.function === 0x40000000), supported[11]);
  assert.deepEqual(c.find((x) => x.function === 0x40000001), supported[12]);
});

test("CPUID leaves 0BH and 1FH: SMT level, core level, terminator; x2APIC id = vcpuId", () => {
  const c = vcpuCpuid(supported, { vcpuId: 5, vcpuCount: 6 });
  for (const fn of [0xb, 0x1f]) {
    const t = c.filter((x) => x.function === fn);
    assert.equal(t.length, 3);
    assert.deepEqual(t.map((x) => [x.index, x.eax, x.ebx, x.ecx, x.edx]), [
      [0, 0, 1, 0x100, 5],
      [1, 3, 6, 0x201, 5],
      [2, 0, 0, 2, 5],
    ]);
    for (const x of t) assert.equal(x.flags & 1, 1, "KVM_CPUID_FLAG_SIGNIFCANT_INDEX");
  }
});

test("CPUID: leaf 1FH is not invented when KVM does not report it; input is not mutated", () => {
  const before = JSON.stringify(supported);
  const c = vcpuCpuid(supported.filter((x) => x.function !== 0x1f), { vcpuId: 0, vcpuCount: 1 });
  assert.equal(c.some((x) => x.function === 0x1f), false);
  assert.equal(JSON.stringify(supported), before);
  assert.throws(() => vcpuCpuid(supported, { vcpuId: 2, vcpuCount: 2 }), RangeError);
  assert.throws(() => vcpuCpuid(supported, { vcpuId: 0, vcpuCount: 0 }), RangeError);
});
