/*
 * boot.S — everything that runs at ring 0, plus the ELF notes and the two
 * ring-3 trampolines.
 *
 * Ring 0 is emulated under PVM (each instruction ~0.3-0.55 µs, DESIGN.md §6),
 * so it only loads prepared tables, sets the syscall MSRs and `iretq`s to
 * ring 3. All descriptor tables and page tables are complete in the image
 * (section .fixed at IMAGE_BASE, see layout.h): no loops at ring 0.
 *
 * Not used anywhere, because PVM rejects them (DESIGN.md §6): `int $n`,
 * `sysretq`, IOPL, `lock cmpxchg16b`.
 */
#include "layout.h"

/* MSRs: Intel SDM Vol.4 Table 2-2 (IA32_EFER, IA32_STAR, IA32_LSTAR, IA32_FMASK) */
#define MSR_EFER         0xc0000080
#define MSR_STAR         0xc0000081
#define MSR_LSTAR        0xc0000082
#define MSR_FMASK        0xc0000084
#define EFER_SCE         (1 << 0)           /* SDM Vol.3 §2.2.1 */
#define EFER_LME         (1 << 8)
#define CR0_PE           (1 << 0)           /* SDM Vol.3 §2.5 */
#define CR0_PG           (1 << 31)
#define CR4_PAE          (1 << 5)
/* STAR[47:32] = syscall CS (SS = +8); STAR[63:48] = sysret base (CS = +16,
 * SS = +8), which with base 0x1b gives USER_CS 0x2b and USER_SS 0x23. */
#define STAR_HIGH        (((UDATA_SEL - 8) | 3) << 16 | KCODE_SEL)
/* RFLAGS bits cleared on syscall entry: TF, IF, DF, NT, AC (SDM Vol.1 §3.4.3) */
#define SYSCALL_RFLAGS_MASK ((1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 18))

/* Paging entry bits (SDM Vol.3 §4.5, Tables 4-15..4-18) */
#define PTE_P            0x01
#define PTE_RW           0x02
#define PTE_US           0x04
#define PTE_PWT          0x08
#define PTE_PCD          0x10
#define PTE_PS           0x80               /* 2 MiB page in a PD entry */
#define PTE_TABLE        (PTE_P | PTE_RW | PTE_US)
#define PTE_2M_WB        (PTE_P | PTE_RW | PTE_US | PTE_PS)
#define PTE_2M_UC        (PTE_2M_WB | PTE_PWT | PTE_PCD)
#define MMIO_HOLE_START  0xc0000000         /* 3..4 GiB mapped uncached (MMIO) */

/* Gate/descriptor type bytes (SDM Vol.3 §3.4.5, §6.14.1, §8.2.3) */
#define GATE_INTR64      0x8e               /* P=1 DPL=0 type=0xE interrupt gate */
#define DESC_TSS64_AVAIL 0x89               /* P=1 DPL=0 type=0x9 available TSS  */

/* Exceptions that push an error code: SDM Vol.3 §6.15 (Table 6-1):
 * #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17, #CP 21, #VC 29, #SX 30 */
#define HAS_ERRCODE(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17 || \
                        (v) == 21 || (v) == 29 || (v) == 30)

/* ======================================================================== */
/* The fixed region: page tables, IDT, GDT, vector stubs, TSSes.            */
/* ======================================================================== */
        .section .fixed, "awx", @progbits
        .code64

/* --- PML4 @ PML4_ADDR: one entry, the first 512 GiB -> PDPT ------------ */
        .org PML4_ADDR - IMAGE_BASE
        .quad PDPT_ADDR | PTE_TABLE
        .fill 511, 8, 0

/* --- PDPT @ PDPT_ADDR: 4 x 1 GiB -> PD0..PD3 ---------------------------- */
        .org PDPT_ADDR - IMAGE_BASE
        .set i, 0
        .rept PD_COUNT
        .quad (PD_ADDR + i * 0x1000) | PTE_TABLE
        .set i, i + 1
        .endr
        .fill 512 - PD_COUNT, 8, 0

/* --- PD0..PD3 @ PD_ADDR: identity, 2 MiB pages, user-accessible --------- */
        .org PD_ADDR - IMAGE_BASE
        .set i, 0
        .rept PD_COUNT * 512
        .if (i << 21) >= MMIO_HOLE_START
        .quad (i << 21) | PTE_2M_UC
        .else
        .quad (i << 21) | PTE_2M_WB
        .endif
        .set i, i + 1
        .endr

/* --- IDT @ IDT_ADDR: 256 interrupt gates -> STUBS_ADDR + 16*v ------------
 * 16-byte gate, SDM Vol.3 §6.14.1 Figure 6-8. Vectors 32..255 are all wired
 * to counting stubs, so LAPIC/IOAPIC vectors only need an EOI added later. */
        .org IDT_ADDR - IMAGE_BASE
        .set v, 0
        .rept 256
        .set h, STUBS_ADDR + v * STUB_SIZE
        .word h & 0xffff                /* offset 15:0 */
        .word KCODE_SEL
        .byte 0                         /* IST: none */
        .byte GATE_INTR64
        .word (h >> 16) & 0xffff        /* offset 31:16 */
        .long h >> 32                   /* offset 63:32 */
        .long 0
        .set v, v + 1
        .endr

/* --- GDT @ GDT_ADDR (SDM Vol.3 §3.4.5; 64-bit code: L=1, D=0) ----------- */
        .org GDT_ADDR - IMAGE_BASE
        .quad 0                         /* 0x00 null */
        .quad 0                         /* 0x08 unused */
        .quad 0x00af9a000000ffff        /* 0x10 KCODE: P DPL0 code R, L=1 G=1 */
        .quad 0x00cf92000000ffff        /* 0x18 KDATA: P DPL0 data W, D/B G=1 */
        .quad 0x00cff2000000ffff        /* 0x20 UDATA: P DPL3 data W          */
        .quad 0x00affa000000ffff        /* 0x28 UCODE: P DPL3 code R, L=1     */
        /* 0x30 + 16*i: 64-bit TSS descriptor per CPU (SDM Vol.3 §8.2.3 Fig 8-4) */
        .set i, 0
        .rept MAX_CPUS
        .set b, TSS_ADDR + i * TSS_STRIDE
        .word TSS_LIMIT & 0xffff
        .word b & 0xffff
        .byte (b >> 16) & 0xff
        .byte DESC_TSS64_AVAIL
        .byte (TSS_LIMIT >> 16) & 0x0f  /* G=0: byte-granular limit */
        .byte (b >> 24) & 0xff
        .long b >> 32
        .long 0
        .set i, i + 1
        .endr

/* --- vector stubs @ STUBS_ADDR, 16 bytes each ----------------------------
 * 0..31 (exceptions): push a dummy error code where the CPU pushes none,
 *   push the vector, jump to exc_common.
 * 32..255 (interrupts): count, iretq (3-6 instructions, DESIGN.md §6). */
        .set v, 0
        .rept 256
        .org STUBS_ADDR - IMAGE_BASE + v * STUB_SIZE
        .if v < 32
        .if HAS_ERRCODE(v) == 0
        pushq $0
        .endif
        pushq $v
        jmp exc_common
        .else
        lock incq vector_count + 8 * v
        iretq
        .endif
        .set v, v + 1
        .endr

/* --- TSS per CPU @ TSS_ADDR + i*TSS_STRIDE (SDM Vol.3 §8.7 Figure 8-11) ---
 * rsp0 = top of this CPU's ring-0 stack; I/O map base = 104, the bitmap is
 * all zero (every port allowed to ring 3: IOPL is ignored under PVM, the
 * bitmap is honoured, DESIGN.md §6), then the 0xff terminator byte
 * (SDM Vol.1 §19.5.2). Limit 0x2068 covers the terminator. */
        .set i, 0
        .rept MAX_CPUS
        .org TSS_ADDR - IMAGE_BASE + i * TSS_STRIDE
        .long 0                                 /* 0: reserved */
        .quad kstacks + (i + 1) * KSTACK_SIZE   /* 4: rsp0 */
        .fill TSS_IOMAP_OFF - 12, 1, 0          /* rsp1, rsp2, ist1..7, reserved */
        .word TSS_HDR_SIZE                      /* 102: I/O map base */
        .fill IOMAP_BYTES, 1, 0                 /* 104: ports 0..0xffff allowed */
        .byte 0xff                              /* 0x2068: terminator */
        .set i, i + 1
        .endr
        .org FIXED_END - IMAGE_BASE

/* ======================================================================== */
/* Entries                                                                  */
/* ======================================================================== */
        .section .text.boot, "ax", @progbits

/* Linux 64-bit boot protocol entry (ELF e_entry; boot.rst "64-bit BOOT
 * PROTOCOL"): long mode, VMM page tables, interrupts off, rsi = zero page.
 * Nothing else from the VMM is trusted: not rdi, not rsp. */
        .code64
        .globl linux64_entry
linux64_entry:
        xor     %edi, %edi                      /* BSP = vCPU 0 */
        mov     $ENTRY_LINUX64, %r8d
        jmp     long_common

/* AP entry (ELF note "Typervisor"/1): same 64-bit state as the BSP,
 * rdi = vCPU index (= APIC ID), rsi = zero page. */
        .globl ap_entry
ap_entry:
        mov     $ENTRY_AP, %r8d
        jmp     long_common

/* PVH entry (Xen arch-x86/hvm/start_info.h; note XEN_ELFNOTE_PHYS32_ENTRY):
 * 32-bit protected mode, flat segments, paging off, ebx = hvm_start_info. */
/* 32-bit protected mode -> long mode on our own tables, then ljmp to \target. */
        .macro ENTER_LONG_MODE target
        lgdt    gdt_ptr                         /* reads limit + 32-bit base */
        mov     $KDATA_SEL, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     %cr4, %eax
        or      $CR4_PAE, %eax
        mov     %eax, %cr4
        mov     $PML4_ADDR, %eax
        mov     %eax, %cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $EFER_LME, %eax
        wrmsr
        mov     %cr0, %eax
        or      $(CR0_PG | CR0_PE), %eax
        mov     %eax, %cr0                      /* long mode active (compat) */
        ljmp    $KCODE_SEL, $\target
        .endm

/* PVH entry (Xen arch-x86/hvm/start_info.h; note XEN_ELFNOTE_PHYS32_ENTRY):
 * 32-bit protected mode, flat segments, paging off, ebx = hvm_start_info. */
        .code32
        .globl pvh_entry
pvh_entry:
        ENTER_LONG_MODE pvh_long
        .code64
pvh_long:
        mov     %ebx, %esi                      /* zero-extends */
        xor     %edi, %edi
        mov     $ENTRY_PVH, %r8d
        jmp     long_common

#ifdef LINUX64_SHIM
/* Test build only (probe-linux64-shim.elf): QEMU enters here through the PVH
 * note; shim.c turns hvm_start_info into a Linux zero page and we enter
 * linux64_entry as a Firecracker-style VMM would (rsi = zero page). */
        .code32
shim_entry:
        ENTER_LONG_MODE shim_long
        .code64
shim_long:
        lea     kstacks + KSTACK_SIZE(%rip), %rsp
        mov     %ebx, %edi
        call    shim_make_zero_page
        mov     %rax, %rsi
        mov     $0xbad, %edi                    /* garbage the entry must ignore */
        jmp     linux64_entry
#endif

/* rdi = cpu index, rsi = boot info address, r8 = ENTRY_* */
long_common:
        cmp     $MAX_CPUS, %rdi
        jae     sys_park                        /* no TSS/stacks for it */
        mov     $PML4_ADDR, %eax
        mov     %rax, %cr3                      /* our tables: 4 GiB, user bit */
        lgdt    gdt_ptr
        lidt    idt_ptr
        mov     %edi, %eax                      /* TR = TSS_SEL0 + 16 * cpu */
        shl     $4, %eax
        add     $TSS_SEL0, %eax
        ltr     %ax
        mov     $MSR_EFER, %ecx                 /* syscall: SDM Vol.3 §5.8.8 */
        rdmsr
        or      $EFER_SCE, %eax
        wrmsr
        mov     $MSR_STAR, %ecx
        xor     %eax, %eax
        mov     $STAR_HIGH, %edx
        wrmsr
        mov     $MSR_LSTAR, %ecx
        mov     $syscall_entry, %eax
        xor     %edx, %edx
        wrmsr
        mov     $MSR_FMASK, %ecx
        mov     $SYSCALL_RFLAGS_MASK, %eax
        wrmsr                                   /* edx is still 0 */
        mov     %r8, %rdx
        lea     iret_frame(%rip), %rsp          /* prepared, read-only frame */
        iretq                                   /* -> user_entry at ring 3 */

/* ======================================================================== */
/* Ring-0 services: syscall from ring 3 (rax = service, rdi = argument).    */
/* Returns with iretq, never sysretq (#GP under PVM, DESIGN.md §6).         */
/* Clobbers rcx, r10, r11 (and rax = result).                               */
/* ======================================================================== */
        .globl syscall_entry
syscall_entry:
        cmp     $SYS_PARK, %eax
        je      sys_park
        cmp     $SYS_TRIPLE_FAULT, %eax
        je      sys_triple_fault
        /* SYS_IRQ: the IF bit of the rflags this call returns with (r11) is
         * rdi != 0; then it answers 0 as SYS_NULL does. Interrupts that come in
         * ring 3 go to the counting stubs above (vector_count). */
        cmp     $SYS_IRQ, %eax
        jne     1f
        and     $~0x200, %r11                   /* RFLAGS.IF (SDM Vol.1 §3.4.3) */
        test    %rdi, %rdi
        jz      2f
        or      $0x200, %r11
2:      xor     %eax, %eax
1:
        /* SYS_NULL and unknown services: return 0 (unknown: -1) on this CPU's
         * ring-0 stack, found from TR (cpu = (TR - TSS_SEL0) / 16). */
        mov     %rsp, %r10
        cmp     $SYS_NULL, %eax
        setne   %al
        movzbl  %al, %eax
        neg     %rax
        mov     %rax, %rdi                      /* result; rdi is the argument, free now */
        str     %ax
        movzwl  %ax, %eax
        sub     $TSS_SEL0, %eax
        shl     $(KSTACK_SHIFT - 4), %eax
        lea     kstacks + KSTACK_SIZE(%rax), %rsp
        pushq   $USER_SS
        push    %r10                            /* user rsp */
        push    %r11                            /* user rflags */
        pushq   $USER_CS
        push    %rcx                            /* user rip */
        mov     %rdi, %rax
        iretq

        .globl sys_park
sys_park:                                       /* APs and the final fallback */
        cli
1:      hlt
        jmp     1b

        .globl sys_triple_fault
sys_triple_fault:
        /* No usable IDT: the #UD cannot be delivered -> #DF cannot either ->
         * shutdown (SDM Vol.3 §6.15 "Interrupt 8"): KVM_EXIT_SHUTDOWN, or a
         * QEMU reset, which -no-reboot turns into exit. */
        lidt    zero_idtr
        ud2

/* Exceptions. Stack: vector, error code, rip, cs, rflags, rsp, ss.
 * From ring 3: count, then redirect the return to user_fault_entry with
 * rdi = vector, rsi = rip, rdx = error code, rcx = cr2, r8 = cpu and a fresh
 * user stack (the faulting context is abandoned, the C side reports it).
 * From ring 0: a bug in this file -> triple fault, so the VMM sees it. */
exc_common:
        push    %rax                            /* 0 rax 8 vec 16 err 24 rip 32 cs 48 rsp */
        mov     8(%rsp), %rax
        lock incq vector_count(, %rax, 8)
        testb   $3, 32(%rsp)
        jz      sys_triple_fault
        mov     %rax, %rdi
        mov     24(%rsp), %rsi
        mov     16(%rsp), %rdx
        mov     %cr2, %rcx
        mov     %rsp, %r8                       /* cpu = (rsp - kstacks) >> KSTACK_SHIFT */
        sub     $kstacks, %r8
        shr     $KSTACK_SHIFT, %r8
        lea     1(%r8), %rax
        shl     $USTACK_SHIFT, %rax
        add     $ustacks, %rax
        mov     %rax, 48(%rsp)
        movq    $user_fault_entry, 24(%rsp)
        add     $24, %rsp
        iretq

/* ======================================================================== */
/* Ring-3 trampolines                                                       */
/* ======================================================================== */
        .text
/* rdi = cpu, rsi = boot info, rdx = ENTRY_*: take this CPU's user stack. */
        .globl user_entry
user_entry:
        lea     1(%rdi), %rax
        shl     $USTACK_SHIFT, %rax
        lea     ustacks(%rax), %rsp
        xor     %ebp, %ebp
        call    probe_main
        jmp     user_park

user_fault_entry:
        xor     %ebp, %ebp
        call    probe_fault
user_park:
        mov     $SYS_PARK, %eax
        syscall
        jmp     user_park

/* ======================================================================== */
/* Data                                                                     */
/* ======================================================================== */
        .section .rodata
        .balign 8
        .globl gdt_ptr
gdt_ptr:
        .word GDT_LIMIT
        .quad GDT_ADDR
        .balign 8
idt_ptr:
        .word 256 * 16 - 1
        .quad IDT_ADDR
        .balign 8
zero_idtr:
        .word 0
        .quad 0

/* The frame every CPU's first iretq pops (read-only, so shared): ring-3
 * user_entry; rsp is set by user_entry itself from the cpu index. The guard
 * below it takes anything pushed at ring 0 (an NMI) before the iretq. */
        .balign 16
        .skip 256
iret_frame:
        .quad user_entry
        .quad USER_CS
        .quad USER_RFLAGS
        .quad 0
        .quad USER_SS

        .bss
        .balign 4096
        .globl kstacks, ustacks, vector_count
kstacks:
        .skip MAX_CPUS * KSTACK_SIZE
ustacks:
        .skip MAX_CPUS * USTACK_SIZE
vector_count:                                   /* per vector, all CPUs */
        .skip 256 * 8

/* ======================================================================== */
/* ELF notes (4-byte aligned, as Linux and Xen emit them; PT_NOTE p_align 4) */
/* ======================================================================== */
        .section .note.Xen, "a", @note
        .balign 4
        .long 4                                 /* namesz: "Xen\0" */
        .long 8                                 /* descsz: QEMU reads a 64-bit value */
        .long XEN_ELFNOTE_PHYS32_ENTRY
        .asciz "Xen"
#ifdef LINUX64_SHIM
        .quad shim_entry
#else
        .quad pvh_entry
#endif

        .section .note.Typervisor, "a", @note
        .balign 4
        .long 11                                /* namesz: "Typervisor\0" */
        .long 8                                 /* descsz */
        .long TYPERVISOR_NOTE_AP_ENTRY
        .asciz "Typervisor"
        .balign 4                               /* name padded to 12 */
        .quad ap_entry
