/*
 * probe.ld.S — linker script (run through the C preprocessor for layout.h).
 *
 * One PT_LOAD at IMAGE_BASE (1 MiB) holding everything, and a PT_NOTE for the
 * PVH and Typervisor notes. The ELF header and program headers are NOT part
 * of any PT_LOAD (no FILEHDR/PHDRS keywords, first section at IMAGE_BASE):
 * a loader that put them in memory would place them below 1 MiB, in the BIOS
 * area (DESIGN.md §6 "QEMU as the peer").
 */
#include "layout.h"

OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(linux64_entry)

PHDRS
{
    image PT_LOAD FLAGS(7);     /* RWX: page tables get A/D bits, stubs are code */
    note  PT_NOTE FLAGS(4);
}

SECTIONS
{
    . = IMAGE_BASE;
    .fixed : { KEEP(*(.fixed)) } :image
    .text : { *(.text.boot) *(.text .text.*) } :image
    .rodata : { *(.rodata .rodata.*) } :image
    .note : { KEEP(*(.note.Xen)) KEEP(*(.note.Typervisor)) } :image :note
    .data : { *(.data .data.*) } :image
    .bss : { *(.bss .bss.*) *(COMMON) } :image
    _end = .;

    /DISCARD/ : { *(.comment) *(.eh_frame*) *(.note.GNU-stack) *(.note.gnu.*) }
}

ASSERT(ADDR(.fixed) == IMAGE_BASE, "the fixed region must start at IMAGE_BASE (layout.h)")
ASSERT(SIZEOF(.fixed) == FIXED_END - IMAGE_BASE, "the fixed region does not match layout.h")
ASSERT(_end <= 0x800000, "the probe image must stay below 8 MiB")
