// Initial vCPU register state for each way we enter a guest:
//  - linux64: boot.rst "64-bit Boot Protocol" (long mode, paging on, rsi = zero page);
//  - pvh: Xen arch-x86/hvm/start_info.h (32-bit protected mode, paging off, ebx = start_info);
//  - ap: secondary vCPUs of a guest with a Typervisor AP-entry note (long mode, rdi = vCPU id).
//
// The sregs part is plain data (`SregsPatch`), applied on top of what KVM_GET_SREGS returns, so a
// boot state can be posted to a vCPU worker thread (structured clone carries no functions).

import type { DTable, Fpu, Regs, Segment, Sregs } from "../../kvm/types.js";
import { bootSegments } from "./gdt.js";
import { BOOT_STACK_POINTER, ZERO_PAGE_START } from "./layout.js";

/** SDM Vol.3 §2.5 "Control Registers". */
export const CR0_PE = 1n << 0n;
export const CR0_ET = 1n << 4n;
export const CR0_NW = 1n << 29n;
export const CR0_CD = 1n << 30n;
export const CR0_PG = 1n << 31n;
export const CR4_PAE = 1n << 5n;
/** SDM Vol.3 §2.2.1 "Extended Feature Enable Register": LME (bit 8), LMA (bit 10). */
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
/** SDM Vol.1 §3.4.3: RFLAGS bit 1 is reserved and always 1; IF = 0 (boot.rst: interrupts disabled). */
export const RFLAGS_RESERVED = 0x2n;
/** SDM Vol.1 §8.1.5: FNINIT value of the x87 control word. */
export const FPU_FCW_DEFAULT = 0x37f;
/** SDM Vol.1 §10.2.3.1: MXCSR power-up value (all exceptions masked). */
export const MXCSR_DEFAULT = 0x1f80;
const ALL_BITS = (1n << 64n) - 1n;

export interface SregsPatch {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment;
  gdt: DTable; idt: DTable;
  /** new = (current & ~clear) | set, for CR0, CR4 and EFER. */
  cr0Set: bigint; cr0Clear: bigint;
  cr3: bigint;
  cr4Set: bigint; cr4Clear: bigint;
  eferSet: bigint; eferClear: bigint;
}

/** A vCPU's boot state as plain data. */
export interface VcpuBootState {
  regs: Regs;
  sregsPatch: SregsPatch;
  fpu: Fpu;
}

/** A boot state plus `sregs(current)`: KVM_GET_SREGS in, KVM_SET_SREGS out. */
export interface BootState extends VcpuBootState {
  sregs: (current: Sregs) => Sregs;
}

export function applySregsPatch(current: Sregs, p: SregsPatch): Sregs {
  const upd = (v: bigint, set: bigint, clear: bigint): bigint => (v & ~clear & ALL_BITS) | set;
  return {
    ...current,
    cs: { ...p.cs }, ds: { ...p.ds }, es: { ...p.es }, fs: { ...p.fs }, gs: { ...p.gs }, ss: { ...p.ss }, tr: { ...p.tr },
    gdt: { ...p.gdt }, idt: { ...p.idt },
    cr0: upd(current.cr0, p.cr0Set, p.cr0Clear),
    cr3: p.cr3,
    cr4: upd(current.cr4, p.cr4Set, p.cr4Clear),
    efer: upd(current.efer, p.eferSet, p.eferClear),
    interruptBitmap: [...current.interruptBitmap],
  };
}

function withSregs(s: VcpuBootState): BootState {
  return { ...s, sregs: (current: Sregs) => applySregsPatch(current, s.sregsPatch) };
}

export function zeroRegs(): Regs {
  return {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
    rip: 0n, rflags: RFLAGS_RESERVED,
  };
}

export function bootFpu(): Fpu {
  return { fcw: FPU_FCW_DEFAULT, fsw: 0, ftwx: 0, lastOpcode: 0, lastIp: 0n, lastDp: 0n, mxcsr: MXCSR_DEFAULT };
}

export interface Linux64BootConfig {
  entry: number;
  gdt: DTable;
  idt: DTable;
  /** CR3: the identity map's PML4. */
  pml4: bigint;
  zeroPage?: number;
  stack?: number;
}

/**
 * boot.rst 64-bit protocol: long mode with the identity map; CS = __BOOT_CS (64-bit code),
 * DS/ES/SS = __BOOT_DS; interrupts off; rsi = zero page. CR0 = PE|PG|ET with CD/NW cleared
 * (Firecracker ORs PE|PG into KVM's reset CR0 and so leaves caching disabled; we clear them as a
 * BIOS would), CR4 |= PAE, EFER |= LME|LMA.
 */
export function linux64BootState(cfg: Linux64BootConfig): BootState {
  const seg = bootSegments();
  const regs = zeroRegs();
  regs.rip = BigInt(cfg.entry);
  regs.rsi = BigInt(cfg.zeroPage ?? ZERO_PAGE_START);
  regs.rsp = regs.rbp = BigInt(cfg.stack ?? BOOT_STACK_POINTER);
  return withSregs({
    regs,
    sregsPatch: {
      cs: seg.code64, ds: seg.data, es: seg.data, fs: seg.data, gs: seg.data, ss: seg.data, tr: seg.tss,
      gdt: { ...cfg.gdt }, idt: { ...cfg.idt },
      cr0Set: CR0_PE | CR0_PG | CR0_ET, cr0Clear: CR0_CD | CR0_NW,
      cr3: cfg.pml4,
      cr4Set: CR4_PAE, cr4Clear: 0n,
      eferSet: EFER_LME | EFER_LMA, eferClear: 0n,
    },
    fpu: bootFpu(),
  });
}

export interface PvhBootConfig {
  entry: number;
  /** hvm_start_info address, passed in ebx. */
  startInfo: number;
  gdt: DTable;
  idt: DTable;
}

/**
 * start_info.h PVH entry: 32-bit protected mode, paging off; CR0 = PE (+ET), CR4 = 0, EFER = 0;
 * CS = 32-bit flat code, DS/ES/SS = flat data, TR = 32-bit busy TSS with limit 0x67;
 * EFLAGS with IF = 0; ebx = start_info.
 */
export function pvhBootState(cfg: PvhBootConfig): BootState {
  const seg = bootSegments();
  const regs = zeroRegs();
  regs.rip = BigInt(cfg.entry);
  regs.rbx = BigInt(cfg.startInfo);
  return withSregs({
    regs,
    sregsPatch: {
      cs: seg.code32, ds: seg.data, es: seg.data, fs: seg.data, gs: seg.data, ss: seg.data, tr: seg.tss,
      gdt: { ...cfg.gdt }, idt: { ...cfg.idt },
      cr0Set: CR0_PE | CR0_ET, cr0Clear: ALL_BITS,
      cr3: 0n,
      cr4Set: 0n, cr4Clear: ALL_BITS,
      eferSet: 0n, eferClear: ALL_BITS,
    },
    fpu: bootFpu(),
  });
}

/**
 * A secondary vCPU entering the guest's AP entry directly in long mode: the BSP's 64-bit state with
 * rip = apEntry and rdi = vcpuId. rsp is the BSP's boot stack value: the AP entry must switch to a
 * stack of its own before it pushes anything.
 */
export function apBootState(bsp: VcpuBootState, vcpuId: number, apEntry: number): BootState {
  if (bsp.sregsPatch.cs.l !== 1) {
    throw new RangeError("apBootState needs a 64-bit (linux64) template state; this one has a 32-bit code segment");
  }
  const regs: Regs = { ...bsp.regs, rip: BigInt(apEntry), rdi: BigInt(vcpuId) };
  return withSregs({ regs, sregsPatch: structuredClone(bsp.sregsPatch), fpu: { ...bsp.fpu } });
}
