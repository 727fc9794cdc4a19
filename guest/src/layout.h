/*
 * layout.h — fixed guest-physical addresses of the probe image and the
 * constants shared by the assembly (boot.S, tables.S), the linker script
 * (probe.ld.S) and the ring-3 C code.
 *
 * Everything whose address must be split into descriptor bit fields at
 * assembly time (TSS bases in GDT descriptors, handler offsets in IDT gates)
 * lives at a fixed address here, so the assembler can compute the fields
 * from constants and the tables are complete in the image: no ring-0 loops.
 *
 * Included from C and from assembly/linker script (only #defines here).
 */
#ifndef PROBE_LAYOUT_H
#define PROBE_LAYOUT_H

/* Load/link address: 1 MiB, as for a Linux vmlinux (boot.rst "64-bit boot
 * protocol") and the PVH ELF loaders. */
#define IMAGE_BASE       0x100000

/* --- the fixed region (section .fixed, placed at IMAGE_BASE) ------------- */
#define PML4_ADDR        0x100000   /* 4 KiB: entry 0 -> PDPT                */
#define PDPT_ADDR        0x101000   /* 4 KiB: entries 0..3 -> PD0..PD3       */
#define PD_ADDR          0x102000   /* 4 x 4 KiB: 2048 x 2 MiB = 0..4 GiB    */
#define PD_COUNT         4
#define IDT_ADDR         0x106000   /* 256 x 16-byte gates                   */
#define GDT_ADDR         0x107000   /* see selectors below                   */
#define STUBS_ADDR       0x108000   /* 256 x 16-byte vector stubs            */
#define STUB_SIZE        16
#define TSS_ADDR         0x109000   /* MAX_CPUS x TSS_STRIDE                 */
#define TSS_STRIDE       0x3000     /* 104-byte TSS + 8 KiB bitmap + 0xff    */
#define FIXED_END        (TSS_ADDR + MAX_CPUS * TSS_STRIDE)   /* 0x121000 */

#define MAX_CPUS         8

/* --- GDT selectors (Intel SDM Vol.3 §3.4.2 segment selectors) ----------- */
/* 0x10/0x18 coincide with the selectors a Firecracker-style VMM uses for the
 * Linux 64-bit entry, so nothing changes meaning when our GDT is loaded.
 * STAR layout (SDM Vol.3 §5.8.8): SYSCALL CS = STAR[47:32], SS = +8;
 * SYSRET (never used, see DESIGN.md §6) CS = STAR[63:48]+16, SS = +8. */
#define KCODE_SEL        0x10       /* 64-bit ring-0 code                    */
#define KDATA_SEL        0x18       /* ring-0 data                           */
#define UDATA_SEL        0x20       /* ring-3 data (SS), DPL 3               */
#define UCODE_SEL        0x28       /* 64-bit ring-3 code, DPL 3             */
#define USER_SS          (UDATA_SEL | 3)
#define USER_CS          (UCODE_SEL | 3)
#define TSS_SEL0         0x30       /* 16-byte TSS descriptor per CPU        */
#define GDT_LIMIT        (TSS_SEL0 + 16 * MAX_CPUS - 1)

/* --- 64-bit TSS (SDM Vol.3 §8.7 "Task management in 64-bit mode") -------- */
#define TSS_RSP0_OFF     4
#define TSS_IOMAP_OFF    102        /* 16-bit I/O map base field             */
#define TSS_HDR_SIZE     104
#define IOMAP_BYTES      0x2000     /* 65536 ports / 8                       */
/* limit = last valid byte = the 0xff terminator (SDM Vol.1 §19.5.2) */
#define TSS_LIMIT        (TSS_HDR_SIZE + IOMAP_BYTES)   /* 0x2068 */

/* --- stacks (in .bss) ----------------------------------------------------- */
#define KSTACK_SHIFT     12         /* 4 KiB ring-0 stack per CPU            */
#define KSTACK_SIZE      (1 << KSTACK_SHIFT)
#define USTACK_SHIFT     14         /* 16 KiB ring-3 stack per CPU           */
#define USTACK_SIZE      (1 << USTACK_SHIFT)

/* --- how ring 3 was entered (rdx at the ring-3 entry) -------------------- */
#define ENTRY_LINUX64    1
#define ENTRY_PVH        2
#define ENTRY_AP         3

/* --- ring-0 services (syscall: rax = service, rdi = argument) ----------- */
#define SYS_NULL         0          /* returns 0: measures the round trip    */
#define SYS_PARK         1          /* cli; hlt forever                      */
#define SYS_TRIPLE_FAULT 2          /* zero-limit IDT + ud2 -> shutdown      */
#define SYS_IRQ          3          /* rdi = 1: ring 3 runs with IF=1, 0: IF=0 */

/* RFLAGS for ring 3: bit 1 is reserved-set; IF=0 (no interrupt sources are
 * programmed yet; later work that sets up the LAPIC flips this), IOPL=0
 * (ignored under PVM anyway: ports come from the TSS I/O bitmap). */
#define USER_RFLAGS      0x2

/* ELF note "Typervisor" type 1: 8-byte address of the 64-bit AP entry. */
#define TYPERVISOR_NOTE_AP_ENTRY 1
/* Xen public/elfnote.h: XEN_ELFNOTE_PHYS32_ENTRY */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#endif
