// The KVM ABI as this VMM uses it: ioctl numbers, constants, struct sizes and field offsets,
// transcribed from linux/kvm.h and asm/kvm.h (x86-64). Pure data, no FFI.
//
// Every value here is checked against the system headers by src/sys/abi-check.c, which
// src/sys/kvm-abi.test.ts compiles with gcc and compares name by name, both ways.
// Field keys are C member designators (`io.data_offset`), so the check can pass them to offsetof.

// ---------------------------------------------------------------------------------------------
// ioctl number encoding (asm-generic/ioctl.h). Built with unsigned arithmetic: numbers with the
// read bit set are above 2^31 (KVM_GET_REGS = 0x8090AE81) and must not turn negative.
// ---------------------------------------------------------------------------------------------

// asm-generic/ioctl.h: _IOC_NRSHIFT 0, _IOC_TYPESHIFT 8, _IOC_SIZESHIFT 16, _IOC_DIRSHIFT 30
const IOC_TYPESHIFT = 8;
const IOC_SIZESHIFT = 16;
const IOC_DIRSHIFT = 30;
// asm-generic/ioctl.h: _IOC_SIZEBITS 14
const IOC_SIZEMAX = (1 << 14) - 1;
// asm-generic/ioctl.h: _IOC_NONE 0U, _IOC_WRITE 1U, _IOC_READ 2U
export const IOC_NONE = 0;
export const IOC_WRITE = 1;
export const IOC_READ = 2;

/** asm-generic/ioctl.h: _IOC(dir, type, nr, size), as an unsigned 32-bit number. */
export function _IOC(dir: number, type: number, nr: number, size: number): number {
  if (size < 0 || size > IOC_SIZEMAX) throw new RangeError(`ioctl argument size ${size} does not fit in 14 bits`);
  if (type < 0 || type > 0xff || nr < 0 || nr > 0xff) throw new RangeError(`ioctl type/nr out of range: ${type}/${nr}`);
  return ((dir << IOC_DIRSHIFT) | (size << IOC_SIZESHIFT) | (type << IOC_TYPESHIFT) | nr) >>> 0;
}
/** asm-generic/ioctl.h: _IO(type, nr) */
export const _IO = (type: number, nr: number): number => _IOC(IOC_NONE, type, nr, 0);
/** asm-generic/ioctl.h: _IOR(type, nr, size) (the kernel writes the argument) */
export const _IOR = (type: number, nr: number, size: number): number => _IOC(IOC_READ, type, nr, size);
/** asm-generic/ioctl.h: _IOW(type, nr, size) (the kernel reads the argument) */
export const _IOW = (type: number, nr: number, size: number): number => _IOC(IOC_WRITE, type, nr, size);
/** asm-generic/ioctl.h: _IOWR(type, nr, size) */
export const _IOWR = (type: number, nr: number, size: number): number => _IOC(IOC_READ | IOC_WRITE, type, nr, size);

// ---------------------------------------------------------------------------------------------
// Struct layouts. `size` is sizeof(struct); `fields` maps a member designator to offsetof().
// ---------------------------------------------------------------------------------------------

export interface StructLayout {
  readonly size: number;
  readonly fields: Readonly<Record<string, number>>;
}

const layout = <F extends Record<string, number>>(size: number, fields: F): { readonly size: number; readonly fields: Readonly<F> } =>
  Object.freeze({ size, fields: Object.freeze(fields) });

// linux/kvm.h: struct kvm_run. The vCPU mmap is KVM_GET_VCPU_MMAP_SIZE bytes (several pages);
// sizeof(struct kvm_run) is only the fixed part at its start. The exit union starts at 32.
export const kvm_run = layout(2352, {
  request_interrupt_window: 0, // __u8
  immediate_exit: 1, // __u8
  exit_reason: 8, // __u32
  ready_for_interrupt_injection: 12, // __u8
  if_flag: 13, // __u8
  flags: 14, // __u16
  cr8: 16, // __u64
  apic_base: 24, // __u64
  "hw.hardware_exit_reason": 32, // __u64 (KVM_EXIT_UNKNOWN)
  "fail_entry.hardware_entry_failure_reason": 32, // __u64 (KVM_EXIT_FAIL_ENTRY)
  "fail_entry.cpu": 40, // __u32
  "ex.exception": 32, // __u32 (KVM_EXIT_EXCEPTION)
  "ex.error_code": 36, // __u32
  "io.direction": 32, // __u8 (KVM_EXIT_IO): KVM_EXIT_IO_IN / KVM_EXIT_IO_OUT
  "io.size": 33, // __u8, bytes per element
  "io.port": 34, // __u16
  "io.count": 36, // __u32, elements (> 1 for rep ins/outs)
  "io.data_offset": 40, // __u64, relative to the start of kvm_run
  "mmio.phys_addr": 32, // __u64 (KVM_EXIT_MMIO)
  "mmio.data": 40, // __u8[8]
  "mmio.len": 48, // __u32
  "mmio.is_write": 52, // __u8
  "internal.suberror": 32, // __u32 (KVM_EXIT_INTERNAL_ERROR)
  "internal.ndata": 36, // __u32
  "internal.data": 40, // __u64[16]
  "system_event.type": 32, // __u32 (KVM_EXIT_SYSTEM_EVENT)
  "system_event.ndata": 36, // __u32
  "system_event.flags": 40, // __u64, union with data[0]
  "system_event.data": 40, // __u64[16]
  kvm_valid_regs: 288, // __u64
  kvm_dirty_regs: 296, // __u64
  s: 304, // union { struct kvm_sync_regs; char padding[2048] }
});
/** linux/kvm.h: kvm_run.internal.data[16] */
export const KVM_RUN_INTERNAL_DATA_LEN = 16;
/** linux/kvm.h: kvm_run.system_event.data[16] */
export const KVM_RUN_SYSTEM_EVENT_DATA_LEN = 16;
/** linux/kvm.h: kvm_run.mmio.data[8] */
export const KVM_RUN_MMIO_DATA_LEN = 8;

// asm/kvm.h: struct kvm_regs { __u64 rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8..r15, rip, rflags; }
export const kvm_regs = layout(144, {
  rax: 0, rbx: 8, rcx: 16, rdx: 24, rsi: 32, rdi: 40, rsp: 48, rbp: 56,
  r8: 64, r9: 72, r10: 80, r11: 88, r12: 96, r13: 104, r14: 112, r15: 120,
  rip: 128, rflags: 136,
});

// asm/kvm.h: struct kvm_segment { __u64 base; __u32 limit; __u16 selector; __u8 type;
//   __u8 present, dpl, db, s, l, g, avl; __u8 unusable; __u8 padding; }
export const kvm_segment = layout(24, {
  base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20,
  avl: 21, unusable: 22, padding: 23,
});

// asm/kvm.h: struct kvm_dtable { __u64 base; __u16 limit; __u16 padding[3]; }
export const kvm_dtable = layout(16, { base: 0, limit: 8, padding: 10 });

// asm/kvm.h: struct kvm_sregs { struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
//   struct kvm_dtable gdt, idt; __u64 cr0, cr2, cr3, cr4, cr8, efer, apic_base;
//   __u64 interrupt_bitmap[(KVM_NR_INTERRUPTS + 63) / 64]; }
export const kvm_sregs = layout(312, {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
  gdt: 192, idt: 208,
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apic_base: 272,
  interrupt_bitmap: 280,
});
/** asm/kvm.h: KVM_NR_INTERRUPTS 256 */
export const KVM_NR_INTERRUPTS = 256;
/** asm/kvm.h: kvm_sregs.interrupt_bitmap has (KVM_NR_INTERRUPTS + 63) / 64 = 4 words */
export const KVM_SREGS_INTERRUPT_BITMAP_LEN = 4;

// asm/kvm.h: struct kvm_fpu { __u8 fpr[8][16]; __u16 fcw; __u16 fsw; __u8 ftwx; __u8 pad1;
//   __u16 last_opcode; __u64 last_ip; __u64 last_dp; __u8 xmm[16][16]; __u32 mxcsr; __u32 pad2; }
export const kvm_fpu = layout(416, {
  fpr: 0, fcw: 128, fsw: 130, ftwx: 132, pad1: 133, last_opcode: 134, last_ip: 136, last_dp: 144,
  xmm: 152, mxcsr: 408, pad2: 412,
});
/** asm/kvm.h: sizeof(kvm_fpu.fpr) = 8 * 16 */
export const KVM_FPU_FPR_BYTES = 128;
/** asm/kvm.h: sizeof(kvm_fpu.xmm) = 16 * 16 */
export const KVM_FPU_XMM_BYTES = 256;

// asm/kvm.h: struct kvm_msr_entry { __u32 index; __u32 reserved; __u64 data; }
export const kvm_msr_entry = layout(16, { index: 0, reserved: 4, data: 8 });
// asm/kvm.h: struct kvm_msrs { __u32 nmsrs; __u32 pad; struct kvm_msr_entry entries[]; }
export const kvm_msrs = layout(8, { nmsrs: 0, pad: 4, entries: 8 });
// asm/kvm.h: struct kvm_msr_list { __u32 nmsrs; __u32 indices[]; }
export const kvm_msr_list = layout(4, { nmsrs: 0, indices: 4 });

// asm/kvm.h: struct kvm_cpuid_entry2 { __u32 function, index, flags, eax, ebx, ecx, edx; __u32 padding[3]; }
export const kvm_cpuid_entry2 = layout(40, {
  function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24, padding: 28,
});
// asm/kvm.h: struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; }
export const kvm_cpuid2 = layout(8, { nent: 0, padding: 4, entries: 8 });

// asm/kvm.h: struct kvm_lapic_state { char regs[KVM_APIC_REG_SIZE]; }
export const kvm_lapic_state = layout(1024, { regs: 0 });
/** asm/kvm.h: KVM_APIC_REG_SIZE 0x400 */
export const KVM_APIC_REG_SIZE = 0x400;

// linux/kvm.h: struct kvm_userspace_memory_region { __u32 slot; __u32 flags; __u64 guest_phys_addr;
//   __u64 memory_size; __u64 userspace_addr; }
export const kvm_userspace_memory_region = layout(32, {
  slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24,
});

// linux/kvm.h: struct kvm_ioeventfd { __u64 datamatch; __u64 addr; __u32 len; __s32 fd; __u32 flags; __u8 pad[36]; }
export const kvm_ioeventfd = layout(64, { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24, pad: 28 });

// linux/kvm.h: struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; __u8 pad[16]; }
export const kvm_irqfd = layout(32, { fd: 0, gsi: 4, flags: 8, resamplefd: 12, pad: 16 });

// linux/kvm.h: struct kvm_irq_routing_entry { __u32 gsi; __u32 type; __u32 flags; __u32 pad;
//   union { struct kvm_irq_routing_irqchip irqchip; struct kvm_irq_routing_msi msi; ...; __u32 pad[8]; } u; }
// struct kvm_irq_routing_irqchip { __u32 irqchip; __u32 pin; }
// struct kvm_irq_routing_msi { __u32 address_lo; __u32 address_hi; __u32 data; union { __u32 pad; __u32 devid; }; }
export const kvm_irq_routing_entry = layout(48, {
  gsi: 0, type: 4, flags: 8, pad: 12, u: 16,
  "u.irqchip.irqchip": 16, "u.irqchip.pin": 20,
  "u.msi.address_lo": 16, "u.msi.address_hi": 20, "u.msi.data": 24, "u.msi.devid": 28,
});
// linux/kvm.h: struct kvm_irq_routing { __u32 nr; __u32 flags; struct kvm_irq_routing_entry entries[]; }
export const kvm_irq_routing = layout(8, { nr: 0, flags: 4, entries: 8 });

// linux/kvm.h: struct kvm_pit_config { __u32 flags; __u32 pad[15]; }
export const kvm_pit_config = layout(64, { flags: 0, pad: 4 });

// linux/kvm.h: struct kvm_mp_state { __u32 mp_state; }
export const kvm_mp_state = layout(4, { mp_state: 0 });

// linux/kvm.h: struct kvm_irq_level { union { __u32 irq; __s32 status; }; __u32 level; }
export const kvm_irq_level = layout(8, { irq: 0, status: 0, level: 4 });

// linux/kvm.h: struct kvm_msi { __u32 address_lo; __u32 address_hi; __u32 data; __u32 flags; __u32 devid; __u8 pad[12]; }
export const kvm_msi = layout(32, { address_lo: 0, address_hi: 4, data: 8, flags: 12, devid: 16, pad: 20 });

/** Every layout above, by C struct name (the ABI check walks this). */
export const STRUCTS: Readonly<Record<string, StructLayout>> = Object.freeze({
  kvm_run, kvm_regs, kvm_segment, kvm_dtable, kvm_sregs, kvm_fpu, kvm_msr_entry, kvm_msrs, kvm_msr_list,
  kvm_cpuid_entry2, kvm_cpuid2, kvm_lapic_state, kvm_userspace_memory_region, kvm_ioeventfd, kvm_irqfd,
  kvm_irq_routing_entry, kvm_irq_routing, kvm_pit_config, kvm_mp_state, kvm_irq_level, kvm_msi,
});

// ---------------------------------------------------------------------------------------------
// ioctl numbers.
// ---------------------------------------------------------------------------------------------

/** linux/kvm.h: KVMIO 0xAE */
export const KVMIO = 0xae;
/** linux/kvm.h: sizeof(__u64), the argument of KVM_SET_IDENTITY_MAP_ADDR */
const U64 = 8;

// System ioctls (on the /dev/kvm fd).
/** linux/kvm.h: _IO(KVMIO, 0x00) */
export const KVM_GET_API_VERSION = _IO(KVMIO, 0x00);
/** linux/kvm.h: _IO(KVMIO, 0x01), returns a VM fd */
export const KVM_CREATE_VM = _IO(KVMIO, 0x01);
/** linux/kvm.h: _IOWR(KVMIO, 0x02, struct kvm_msr_list) */
export const KVM_GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, kvm_msr_list.size);
/** linux/kvm.h: _IO(KVMIO, 0x03) (also valid on a VM fd) */
export const KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03);
/** linux/kvm.h: _IO(KVMIO, 0x04), in bytes */
export const KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04);
/** linux/kvm.h: _IOWR(KVMIO, 0x05, struct kvm_cpuid2) */
export const KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2.size);

// VM ioctls.
/** linux/kvm.h: _IO(KVMIO, 0x41), returns a vCPU fd */
export const KVM_CREATE_VCPU = _IO(KVMIO, 0x41);
/** linux/kvm.h: _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region) */
export const KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region.size);
/** linux/kvm.h: _IO(KVMIO, 0x47) */
export const KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47);
/** linux/kvm.h: _IOW(KVMIO, 0x48, __u64) */
export const KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, U64);
/** linux/kvm.h: _IO(KVMIO, 0x60) */
export const KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60);
/** linux/kvm.h: _IOW(KVMIO, 0x61, struct kvm_irq_level) */
export const KVM_IRQ_LINE = _IOW(KVMIO, 0x61, kvm_irq_level.size);
/** linux/kvm.h: _IOW(KVMIO, 0x6a, struct kvm_irq_routing) */
export const KVM_SET_GSI_ROUTING = _IOW(KVMIO, 0x6a, kvm_irq_routing.size);
/** linux/kvm.h: _IOW(KVMIO, 0x76, struct kvm_irqfd) */
export const KVM_IRQFD = _IOW(KVMIO, 0x76, kvm_irqfd.size);
/** linux/kvm.h: _IOW(KVMIO, 0x77, struct kvm_pit_config) */
export const KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, kvm_pit_config.size);
/** linux/kvm.h: _IOW(KVMIO, 0x79, struct kvm_ioeventfd) */
export const KVM_IOEVENTFD = _IOW(KVMIO, 0x79, kvm_ioeventfd.size);
/** linux/kvm.h: _IOW(KVMIO, 0xa5, struct kvm_msi) */
export const KVM_SIGNAL_MSI = _IOW(KVMIO, 0xa5, kvm_msi.size);

// vCPU ioctls.
/** linux/kvm.h: _IO(KVMIO, 0x80) */
export const KVM_RUN = _IO(KVMIO, 0x80);
/** linux/kvm.h: _IOR(KVMIO, 0x81, struct kvm_regs) */
export const KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs.size);
/** linux/kvm.h: _IOW(KVMIO, 0x82, struct kvm_regs) */
export const KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs.size);
/** linux/kvm.h: _IOR(KVMIO, 0x83, struct kvm_sregs) */
export const KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs.size);
/** linux/kvm.h: _IOW(KVMIO, 0x84, struct kvm_sregs) */
export const KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs.size);
/** linux/kvm.h: _IOWR(KVMIO, 0x88, struct kvm_msrs) */
export const KVM_GET_MSRS = _IOWR(KVMIO, 0x88, kvm_msrs.size);
/** linux/kvm.h: _IOW(KVMIO, 0x89, struct kvm_msrs) */
export const KVM_SET_MSRS = _IOW(KVMIO, 0x89, kvm_msrs.size);
/** linux/kvm.h: _IOR(KVMIO, 0x8c, struct kvm_fpu) */
export const KVM_GET_FPU = _IOR(KVMIO, 0x8c, kvm_fpu.size);
/** linux/kvm.h: _IOW(KVMIO, 0x8d, struct kvm_fpu) */
export const KVM_SET_FPU = _IOW(KVMIO, 0x8d, kvm_fpu.size);
/** linux/kvm.h: _IOR(KVMIO, 0x8e, struct kvm_lapic_state) */
export const KVM_GET_LAPIC = _IOR(KVMIO, 0x8e, kvm_lapic_state.size);
/** linux/kvm.h: _IOW(KVMIO, 0x8f, struct kvm_lapic_state) */
export const KVM_SET_LAPIC = _IOW(KVMIO, 0x8f, kvm_lapic_state.size);
/** linux/kvm.h: _IOW(KVMIO, 0x90, struct kvm_cpuid2) */
export const KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2.size);
/** linux/kvm.h: _IOR(KVMIO, 0x98, struct kvm_mp_state) */
export const KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, kvm_mp_state.size);
/** linux/kvm.h: _IOW(KVMIO, 0x99, struct kvm_mp_state) */
export const KVM_SET_MP_STATE = _IOW(KVMIO, 0x99, kvm_mp_state.size);

/** Every KVM ioctl we issue, by name (for the ABI check and for error messages). */
export const KVM_IOCTLS: Readonly<Record<string, number>> = Object.freeze({
  KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_MSR_INDEX_LIST, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
  KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR,
  KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_SET_GSI_ROUTING, KVM_IRQFD, KVM_CREATE_PIT2,
  KVM_IOEVENTFD, KVM_SIGNAL_MSI, KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS,
  KVM_GET_MSRS, KVM_SET_MSRS, KVM_GET_FPU, KVM_SET_FPU, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_SET_CPUID2,
  KVM_GET_MP_STATE, KVM_SET_MP_STATE,
});

const IOCTL_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(KVM_IOCTLS).map(([name, nr]) => [nr, name]));

/** The name of a KVM ioctl request (`KVM_RUN`), or `ioctl(0x...)` for one we do not know. */
export function ioctlName(request: number): string {
  return IOCTL_NAMES.get(request >>> 0) ?? `ioctl(0x${(request >>> 0).toString(16)})`;
}

// ---------------------------------------------------------------------------------------------
// Constants.
// ---------------------------------------------------------------------------------------------

/** linux/kvm.h: KVM_API_VERSION 12 */
export const KVM_API_VERSION = 12;

// linux/kvm.h: KVM_EXIT_* (kvm_run.exit_reason)
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_SET_TPR = 11;
export const KVM_EXIT_TPR_ACCESS = 12;
export const KVM_EXIT_NMI = 16;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_IOAPIC_EOI = 26;
export const KVM_EXIT_X86_RDMSR = 29;
export const KVM_EXIT_X86_WRMSR = 30;
export const KVM_EXIT_X86_BUS_LOCK = 33;
export const KVM_EXIT_NOTIFY = 37;

// linux/kvm.h: kvm_run.io.direction
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

// linux/kvm.h: kvm_run.internal.suberror
export const KVM_INTERNAL_ERROR_EMULATION = 1;
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;
export const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;

// linux/kvm.h: kvm_run.system_event.type
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;
export const KVM_SYSTEM_EVENT_WAKEUP = 4;
export const KVM_SYSTEM_EVENT_SUSPEND = 5;
export const KVM_SYSTEM_EVENT_SEV_TERM = 6;

// linux/kvm.h: KVM_CAP_* (KVM_CHECK_EXTENSION)
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_HLT = 1;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_MP_STATE = 14;
export const KVM_CAP_SYNC_MMU = 16;
export const KVM_CAP_USER_NMI = 22;
export const KVM_CAP_IRQ_ROUTING = 25;
export const KVM_CAP_IRQ_INJECT_STATUS = 26;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_PIT_STATE2 = 35;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
export const KVM_CAP_ADJUST_CLOCK = 39;
export const KVM_CAP_INTERNAL_ERROR_DATA = 40;
export const KVM_CAP_VCPU_EVENTS = 41;
export const KVM_CAP_DEBUGREGS = 50;
export const KVM_CAP_XSAVE = 55;
export const KVM_CAP_XCRS = 56;
export const KVM_CAP_GET_TSC_KHZ = 61;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_ONE_REG = 70;
export const KVM_CAP_TSC_DEADLINE_TIMER = 72;
export const KVM_CAP_SIGNAL_MSI = 77;
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_IOEVENTFD_ANY_LENGTH = 122;
export const KVM_CAP_MAX_VCPU_ID = 128;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_SYSTEM_EVENT_DATA = 215;

/** Every KVM_CAP_* above, by name (so errors can name a missing capability). */
export const KVM_CAPS: Readonly<Record<string, number>> = Object.freeze({
  KVM_CAP_IRQCHIP, KVM_CAP_HLT, KVM_CAP_USER_MEMORY, KVM_CAP_SET_TSS_ADDR, KVM_CAP_EXT_CPUID, KVM_CAP_NR_VCPUS,
  KVM_CAP_NR_MEMSLOTS, KVM_CAP_MP_STATE, KVM_CAP_SYNC_MMU, KVM_CAP_USER_NMI, KVM_CAP_IRQ_ROUTING,
  KVM_CAP_IRQ_INJECT_STATUS, KVM_CAP_IRQFD, KVM_CAP_PIT2, KVM_CAP_PIT_STATE2, KVM_CAP_IOEVENTFD,
  KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_ADJUST_CLOCK, KVM_CAP_INTERNAL_ERROR_DATA, KVM_CAP_VCPU_EVENTS,
  KVM_CAP_DEBUGREGS, KVM_CAP_XSAVE, KVM_CAP_XCRS, KVM_CAP_GET_TSC_KHZ, KVM_CAP_MAX_VCPUS, KVM_CAP_ONE_REG,
  KVM_CAP_TSC_DEADLINE_TIMER, KVM_CAP_SIGNAL_MSI, KVM_CAP_READONLY_MEM, KVM_CAP_IOEVENTFD_ANY_LENGTH,
  KVM_CAP_MAX_VCPU_ID, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_SYSTEM_EVENT_DATA,
});

const CAP_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(KVM_CAPS).map(([name, nr]) => [nr, name]));

/** The name of a capability (`KVM_CAP_IRQFD`), or `KVM_CAP(<n>)` for one we do not know. */
export function capName(cap: number): string {
  return CAP_NAMES.get(cap) ?? `KVM_CAP(${cap})`;
}

// linux/kvm.h: kvm_userspace_memory_region.flags
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

/** linux/kvm.h: kvm_pit_config.flags */
export const KVM_PIT_SPEAKER_DUMMY = 1;

// linux/kvm.h: kvm_ioeventfd.flags (1 << kvm_ioeventfd_flag_nr_*)
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

// linux/kvm.h: kvm_irqfd.flags
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;

// linux/kvm.h: kvm_irq_routing_entry.type
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;

// asm/kvm.h: kvm_irq_routing_irqchip.irqchip
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

// linux/kvm.h: kvm_mp_state.mp_state (types.ts MpState mirrors these)
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;
export const KVM_MP_STATE_SIPI_RECEIVED = 4;

/** asm/kvm.h: KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic) — kvm_cpuid_entry2.index is meaningful */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0;

/** Every constant above (except ioctls and caps), by header name, for the ABI check. */
export const KVM_CONSTANTS: Readonly<Record<string, number>> = Object.freeze({
  KVM_API_VERSION, KVMIO, KVM_NR_INTERRUPTS, KVM_APIC_REG_SIZE,
  KVM_EXIT_UNKNOWN, KVM_EXIT_EXCEPTION, KVM_EXIT_IO, KVM_EXIT_HYPERCALL, KVM_EXIT_DEBUG, KVM_EXIT_HLT,
  KVM_EXIT_MMIO, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR,
  KVM_EXIT_SET_TPR, KVM_EXIT_TPR_ACCESS, KVM_EXIT_NMI, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_IOAPIC_EOI, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR, KVM_EXIT_X86_BUS_LOCK, KVM_EXIT_NOTIFY,
  KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
  KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_SIMUL_EX, KVM_INTERNAL_ERROR_DELIVERY_EV,
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
  KVM_SYSTEM_EVENT_SHUTDOWN, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_WAKEUP,
  KVM_SYSTEM_EVENT_SUSPEND, KVM_SYSTEM_EVENT_SEV_TERM,
  KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_PIT_SPEAKER_DUMMY,
  KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
  KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC,
  KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_HALTED,
  KVM_MP_STATE_SIPI_RECEIVED, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
  // Array lengths, checked as sizeof(member) / sizeof(element) in the C program.
  KVM_RUN_INTERNAL_DATA_LEN, KVM_RUN_SYSTEM_EVENT_DATA_LEN, KVM_RUN_MMIO_DATA_LEN,
  KVM_SREGS_INTERRUPT_BITMAP_LEN, KVM_FPU_FPR_BYTES, KVM_FPU_XMM_BYTES,
});
