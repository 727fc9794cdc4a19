// MSRs set on every vCPU before the first KVM_RUN (Firecracker's boot MSR list). Indices: Intel
// SDM Vol.4, "Model-Specific Registers", Table 2-2 (architectural MSRs).

import type { MsrEntry } from "../../kvm/types.js";

/** SDM Vol.4 Table 2-2. */
export const MSR_IA32_TSC = 0x10;
export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_MTRR_DEF_TYPE = 0x2ff;
export const MSR_STAR = 0xc000_0081;
export const MSR_LSTAR = 0xc000_0082;
export const MSR_CSTAR = 0xc000_0083;
export const MSR_SYSCALL_MASK = 0xc000_0084;
export const MSR_KERNEL_GS_BASE = 0xc000_0102;

/** SDM Vol.4 Table 2-2, IA32_MISC_ENABLE bit 0: fast-strings enable. */
export const MISC_ENABLE_FAST_STRING = 1n << 0n;
/** SDM Vol.3 §12.11.2.1 IA32_MTRR_DEF_TYPE: bit 11 E (MTRRs enabled), bits 7:0 default type. */
export const MTRR_ENABLE = 1n << 11n;
/** SDM Vol.3 Table 12-8: memory type 6 = write-back. */
export const MTRR_MEM_TYPE_WB = 6n;

/** The boot MSRs: syscall/sysenter state cleared, TSC = 0, fast strings on, MTRRs default to WB. */
export function bootMsrs(): MsrEntry[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, data: 0n },
    { index: MSR_IA32_SYSENTER_ESP, data: 0n },
    { index: MSR_IA32_SYSENTER_EIP, data: 0n },
    { index: MSR_STAR, data: 0n },
    { index: MSR_CSTAR, data: 0n },
    { index: MSR_KERNEL_GS_BASE, data: 0n },
    { index: MSR_SYSCALL_MASK, data: 0n },
    { index: MSR_LSTAR, data: 0n },
    { index: MSR_IA32_TSC, data: 0n },
    { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING },
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE | MTRR_MEM_TYPE_WB },
  ];
}
