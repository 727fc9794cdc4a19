// Plain-data mirrors of the KVM structures that cross the Kvm/VmFd/VcpuFd boundary.
// Layouts (offsets, sizes) live in src/sys/kvm-abi.ts; these are the decoded, typed forms
// the rest of the VMM works with. Field names follow linux/kvm.h and asm/kvm.h.

/** asm/kvm.h: struct kvm_regs. All 64-bit values are bigint. */
export interface Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** asm/kvm.h: struct kvm_segment. */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** asm/kvm.h: struct kvm_dtable. */
export interface DTable {
  base: bigint;
  limit: number;
}

/** asm/kvm.h: struct kvm_sregs. */
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment;
  tr: Segment; ldt: Segment;
  gdt: DTable; idt: DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** KVM_NR_INTERRUPTS / 64 = 4 words: pending external interrupt bitmap. */
  interruptBitmap: bigint[];
}

/** asm/kvm.h: struct kvm_fpu (the fields a VMM sets at boot; the rest is zero). */
export interface Fpu {
  fcw: number;
  fsw: number;
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  mxcsr: number;
  /** fpr[8][16]: x87/MMX registers (128 bytes). Absent when encoding means zero. */
  fpr?: Uint8Array;
  /** xmm[16][16]: SSE registers (256 bytes). Absent when encoding means zero. */
  xmm?: Uint8Array;
}

/** asm/kvm.h: struct kvm_cpuid_entry2. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** asm/kvm.h: struct kvm_msr_entry. */
export interface MsrEntry {
  index: number;
  data: bigint;
}

/** linux/kvm.h: struct kvm_userspace_memory_region. */
export interface UserMemoryRegion {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
}

/** linux/kvm.h: struct kvm_ioeventfd (flags spelled out). */
export interface IoEventFd {
  addr: bigint;
  /** 0 (any width), 1, 2, 4 or 8 bytes. */
  len: number;
  fd: number;
  /** When set, only writes of exactly this value signal the eventfd. */
  datamatch?: bigint;
  /** Port I/O instead of MMIO. */
  pio?: boolean;
  deassign?: boolean;
}

/** linux/kvm.h: struct kvm_irqfd. */
export interface IrqFd {
  fd: number;
  gsi: number;
  resampleFd?: number;
  deassign?: boolean;
}

/** linux/kvm.h: struct kvm_irq_routing_entry, the two kinds we use. */
export type GsiRoute =
  | { gsi: number; kind: "irqchip"; irqchip: number; pin: number }
  | { gsi: number; kind: "msi"; addressLo: number; addressHi: number; data: number };

/** linux/kvm.h: KVM_MP_STATE_* */
export const MpState = {
  RUNNABLE: 0,
  UNINITIALIZED: 1,
  INIT_RECEIVED: 2,
  HALTED: 3,
  SIPI_RECEIVED: 4,
} as const;

/**
 * A decoded VM exit (linux/kvm.h: struct kvm_run and KVM_EXIT_*).
 * `data` fields are zero-copy views into the vCPU's kvm_run page: for an `in` or an MMIO read
 * the handler writes the answer there before the next KVM_RUN.
 */
export type VcpuExit =
  | { kind: "io"; direction: "in" | "out"; port: number; size: number; count: number; data: Uint8Array }
  | { kind: "mmio"; /** guest-physical, below 2^52 */ address: number; isWrite: boolean; len: number; data: Uint8Array }
  | { kind: "hlt" }
  | { kind: "shutdown" }
  | { kind: "intr" }
  | { kind: "fail_entry"; hardwareEntryFailureReason: bigint; cpu: number }
  | { kind: "internal_error"; suberror: number; data: bigint[] }
  | { kind: "system_event"; type: number; flags: bigint[] }
  | { kind: "debug" }
  | { kind: "unknown"; reason: number };
