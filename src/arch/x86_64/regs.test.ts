import { test } from "node:test";
import assert from "node:assert/strict";
import type { Segment, Sregs } from "../../kvm/types.js";
import { apBootState, applySregsPatch, linux64BootState, pvhBootState } from "./regs.js";

const seg = (selector = 0): Segment => ({ base: 0n, limit: 0xffff, selector, type: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0 });
/** KVM's reset state (SDM Vol.3 Table 10-1): CR0 = 0x60000010 (CD|NW|ET). */
const resetSregs = (): Sregs => ({
  cs: { ...seg(0xf000), base: 0xffff0000n, type: 0xb }, ds: seg(), es: seg(), fs: seg(), gs: seg(), ss: seg(), tr: seg(), ldt: seg(),
  gdt: { base: 0n, limit: 0xffff }, idt: { base: 0n, limit: 0xffff },
  cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n, interruptBitmap: [0n, 0n, 0n, 0n],
});
const gdt = { base: 0x500n, limit: 47 };
const idt = { base: 0x540n, limit: 7 };

test("linux64 (boot.rst 64-bit protocol): rip, rsi = zero page, stack, rflags, long-mode sregs", () => {
  const st = linux64BootState({ entry: 0x1000200, gdt, idt, pml4: 0x9000n });
  assert.equal(st.regs.rip, 0x1000200n);
  assert.equal(st.regs.rsi, 0x7000n);
  assert.equal(st.regs.rsp, 0x8ff0n);
  assert.equal(st.regs.rbp, 0x8ff0n);
  assert.equal(st.regs.rflags, 2n);
  const s = st.sregs(resetSregs());
  assert.equal(s.cr0, 0x80000011n, "PG | ET | PE, CD/NW cleared");
  assert.equal(s.cr3, 0x9000n);
  assert.equal(s.cr4, 0x20n);
  assert.equal(s.efer, 0x500n, "LME | LMA");
  assert.equal(s.cs.selector, 0x10);
  assert.equal(s.cs.l, 1);
  for (const r of [s.ds, s.es, s.fs, s.gs, s.ss]) assert.equal(r.selector, 0x18);
  assert.equal(s.tr.selector, 0x20);
  assert.equal(s.tr.type, 0xb);
  assert.deepEqual(s.gdt, gdt);
  assert.deepEqual(s.idt, idt);
  assert.equal(s.apicBase, 0xfee00900n, "untouched");
  assert.equal(st.fpu.fcw, 0x37f);
  assert.equal(st.fpu.mxcsr, 0x1f80);
});

test("pvh (start_info.h): 32-bit protected mode, paging off, ebx = start_info", () => {
  const st = pvhBootState({ entry: 0x200100, startInfo: 0x6000, gdt, idt });
  assert.equal(st.regs.rip, 0x200100n);
  assert.equal(st.regs.rbx, 0x6000n);
  assert.equal(st.regs.rflags, 2n);
  const s = st.sregs({ ...resetSregs(), cr4: 0x20n, efer: 0x500n });
  assert.equal(s.cr0, 0x11n, "PE | ET only");
  assert.equal(s.cr4, 0n);
  assert.equal(s.efer, 0n);
  assert.equal(s.cs.db, 1);
  assert.equal(s.cs.l, 0);
  assert.equal(s.cs.limit, 0xffffffff);
  assert.equal(s.tr.limit, 0x67);
});

test("ap state: the 64-bit state with rip = apEntry, rdi = vCPU id; plain data", () => {
  const bsp = linux64BootState({ entry: 0x1000000, gdt, idt, pml4: 0x9000n });
  const ap = apBootState(bsp, 3, 0x1000080);
  assert.equal(ap.regs.rip, 0x1000080n);
  assert.equal(ap.regs.rdi, 3n);
  assert.equal(ap.regs.rsi, bsp.regs.rsi);
  assert.equal(bsp.regs.rdi, 0n, "BSP state not mutated");
  assert.deepEqual(ap.sregs(resetSregs()), bsp.sregs(resetSregs()));
  const { sregs: _, ...plain } = ap;
  assert.deepEqual(structuredClone(plain), plain, "structured-cloneable for vCPU workers");
  assert.throws(() => apBootState(pvhBootState({ entry: 1, startInfo: 2, gdt, idt }), 1, 5), /64-bit/);
});

test("applySregsPatch keeps fields it does not own", () => {
  const cur = resetSregs();
  const st = linux64BootState({ entry: 1, gdt, idt, pml4: 0x9000n });
  const s = applySregsPatch(cur, st.sregsPatch);
  assert.deepEqual(s.ldt, cur.ldt);
  assert.equal(s.cr2, 0n);
  assert.notEqual(s.interruptBitmap, cur.interruptBitmap);
});
