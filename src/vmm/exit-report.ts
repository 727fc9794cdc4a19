// Human-readable reports of how a VM ended.

import type { VmExit } from "./vm.js";

const hex = (v: unknown): string => (typeof v === "bigint" || typeof v === "number" ? `0x${v.toString(16)}` : String(v));

/** A crash as the user sees it: the reason, then the vCPU's registers when they could be read. */
export function formatCrash(exit: Extract<VmExit, { kind: "crash" }>): string {
  const lines = [`typervisor: guest crashed on vCPU ${exit.vcpu}: ${exit.reason} (${exit.detail})`];
  const state = exit.state as { regs?: Record<string, unknown>; sregs?: Record<string, unknown>; error?: string } | undefined;
  if (state?.error !== undefined) lines.push(`  registers unavailable: ${state.error}`);
  if (state?.regs !== undefined) {
    const r = state.regs;
    const names = ["rip", "rsp", "rbp", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    for (let i = 0; i < names.length; i += 4) {
      lines.push("  " + names.slice(i, i + 4).map((n) => `${n.padEnd(6)}=${hex(r[n]).padStart(18)}`).join("  "));
    }
  }
  if (state?.sregs !== undefined) {
    const s = state.sregs;
    lines.push("  " + ["cr0", "cr2", "cr3", "cr4", "efer"].map((n) => `${n}=${hex(s[n])}`).join("  "));
    const cs = s["cs"] as { selector?: number; dpl?: number; l?: number } | undefined;
    if (cs !== undefined) lines.push(`  cs.selector=${hex(cs.selector)} cs.dpl=${cs.dpl} cs.l=${cs.l}`);
  }
  return lines.join("\n") + "\n";
}

/**
 * Any exit in one line or block for logs and test messages: a crash with its registers, the rest as
 * JSON (register values are bigints, which JSON.stringify refuses).
 */
export function describeExit(exit: VmExit): string {
  if (exit.kind === "crash") return formatCrash(exit).trimEnd();
  return JSON.stringify(exit);
}
