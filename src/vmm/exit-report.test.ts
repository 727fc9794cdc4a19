import { test } from "node:test";
import assert from "node:assert/strict";
import { formatCrash } from "./exit-report.js";

test("a crash report names the vCPU, the reason, and shows the registers in hex", () => {
  const text = formatCrash({
    kind: "crash",
    vcpu: 1,
    reason: "triple fault",
    detail: "KVM_EXIT_SHUTDOWN: the guest triple-faulted",
    state: {
      regs: { rip: 0x100123n, rsp: 0x8ff0n, rflags: 0x2n, rax: 0n },
      sregs: { cr0: 0x80000011n, cr3: 0x9000n, cr4: 0x20n, efer: 0x500n, cr2: 0n, cs: { selector: 0x10, dpl: 0, l: 1 } },
    },
  });
  assert.match(text, /^typervisor: guest crashed on vCPU 1: triple fault \(KVM_EXIT_SHUTDOWN/);
  assert.match(text, /rip\s+=\s+0x100123/);
  assert.match(text, /cr0=0x80000011 .*cr3=0x9000/);
  assert.match(text, /cs\.selector=0x10 cs\.dpl=0 cs\.l=1/);
});

test("a crash whose registers could not be read says so", () => {
  const text = formatCrash({ kind: "crash", vcpu: 0, reason: "internal error", detail: "x", state: { error: "KVM_GET_REGS failed: EBADF" } });
  assert.match(text, /registers unavailable: KVM_GET_REGS failed: EBADF/);
});
