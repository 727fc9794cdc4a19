// ATA register file, bits and commands. Numbers from T13 1410D "AT Attachment with Packet
// Interface - 6" (ATA/ATAPI-6, rev 3b, 2002): §7 register descriptions, §8 command descriptions,
// §9 protocols. The ISA port assignment is the PC/AT convention (IBM PC/AT Technical Reference,
// "Fixed Disk"), which QEMU's isa-ide and every BIOS use for the primary channel.

// ---- where the primary channel lives on the ISA bus (PC/AT convention) ----------------------
/** Command block registers: 0x1f0..0x1f7. */
export const ATA_PRIMARY_COMMAND_BASE = 0x1f0;
export const ATA_COMMAND_BLOCK_LEN = 8;
/** Control block: Alternate Status (read) / Device Control (write) at 0x3f6. 0x3f7 is the floppy's DIR. */
export const ATA_PRIMARY_CONTROL_BASE = 0x3f6;
export const ATA_CONTROL_BLOCK_LEN = 1;
/** ISA IRQ of the primary channel (PC/AT: IRQ 14). */
export const ATA_PRIMARY_IRQ = 14;

// ---- command block register offsets (ATA/ATAPI-6 §7.1, Table 3 "Register functions") ---------
export const REG_DATA = 0; // 16-bit data (§7.6)
export const REG_ERROR_FEATURES = 1; // Error (read, §7.9) / Features (write, §7.10)
export const REG_SECTOR_COUNT = 2; // §7.14
export const REG_LBA_LOW = 3; // §7.11 (Sector Number in CHS)
export const REG_LBA_MID = 4; // §7.12 (Cylinder Low)
export const REG_LBA_HIGH = 5; // §7.13 (Cylinder High)
export const REG_DEVICE = 6; // Device/Head (§7.7)
export const REG_STATUS_COMMAND = 7; // Status (read, §7.15) / Command (write, §7.4)

// ---- Status register bits (§7.15.6) -------------------------------------------------------
export const ST_ERR = 0x01; // an error occurred; see the Error register
export const ST_DRQ = 0x08; // ready to transfer a word of data
export const ST_DSC = 0x10; // "device seek complete" (obsolete in -6, still set by QEMU and most drives)
export const ST_DF = 0x20; // device fault
export const ST_DRDY = 0x40; // device ready
export const ST_BSY = 0x80; // busy

// ---- Error register bits (§7.9.6; per command in §8, e.g. §8.27.6 READ SECTORS) -------------
export const ERR_ABRT = 0x04; // command aborted (unsupported command or parameter)
export const ERR_IDNF = 0x10; // requested address not found (outside the user-addressable range)
export const ERR_UNC = 0x40; // uncorrectable data error (we report host I/O errors this way)

// ---- Device register bits (§7.7.6) ----------------------------------------------------------
export const DEV_LBA = 0x40; // LBA addressing (else CHS)
export const DEV_DEV = 0x10; // device 1 selected (else device 0)
export const DEV_OBSOLETE = 0xa0; // bits 7 and 5: obsolete, historically always one
export const DEV_LBA_HIGH_MASK = 0x0f; // LBA bits 27:24 in LBA mode

// ---- Device Control register bits (§7.8.6) ---------------------------------------------------
export const CTL_NIEN = 0x02; // INTRQ disabled
export const CTL_SRST = 0x04; // software reset

// ---- Commands (§8; opcodes from Table B.3 "Command codes") ----------------------------------
export const CMD_READ_SECTORS = 0x20; // §8.27
export const CMD_READ_SECTORS_NORETRY = 0x21; // obsolete in -6; accepted as 0x20 (ATA-3 §8.x)
export const CMD_WRITE_SECTORS = 0x30; // §8.45
export const CMD_WRITE_SECTORS_NORETRY = 0x31; // obsolete in -6; accepted as 0x30
export const CMD_EXECUTE_DEVICE_DIAGNOSTIC = 0x90; // §8.11
export const CMD_FLUSH_CACHE = 0xe7; // §8.13
export const CMD_IDENTIFY_DEVICE = 0xec; // §8.15

/** Bytes in one logical sector (§6.2: 256 words). */
export const ATA_SECTOR_SIZE = 512;
/** Sector Count 0 means 256 sectors for the 28-bit commands (§8.27.3.1 "A value of 00h specifies 256"). */
export const MAX_SECTORS_PER_COMMAND = 256;
/** LBA28: the largest user-addressable sector count (§6.2.1, IDENTIFY words 60-61 cap at 0FFFFFFFh). */
export const LBA28_MAX_SECTORS = 0x0fffffff;

/** Diagnostic code "device 0 passed, device 1 passed or not present" (§8.11, Table 10). */
export const DIAG_DEVICE0_PASSED = 0x01;

// ---- IDENTIFY DEVICE words (§8.15.7, Table 19) ----------------------------------------------
export const ID_GENERAL_CONFIG = 0; // bit 15 = 0: ATA device; bit 6 "fixed" (obsolete; what QEMU sets)
export const ID_CYLINDERS = 1; // obsolete default CHS geometry, words 1/3/6
export const ID_HEADS = 3;
export const ID_SECTORS_PER_TRACK = 6;
export const ID_SERIAL = 10; // words 10-19: 20 ASCII characters
export const ID_FIRMWARE = 23; // words 23-26: 8 ASCII characters
export const ID_MODEL = 27; // words 27-46: 40 ASCII characters
export const ID_MAX_MULTIPLE = 47; // bits 15:8 = 80h; 7:0 = max sectors per READ/WRITE MULTIPLE (0: unsupported)
export const ID_CAPABILITIES = 49; // bit 9 LBA supported
export const ID_FIELD_VALIDITY = 53; // bit 1: words 64-70 valid
export const ID_CURRENT_CYLINDERS = 54; // words 54-58: current CHS translation
export const ID_CURRENT_HEADS = 55;
export const ID_CURRENT_SECTORS = 56;
export const ID_CURRENT_CAPACITY = 57; // 57-58
export const ID_LBA28_SECTORS = 60; // words 60-61: total user-addressable sectors (LBA28)
export const ID_MAJOR_VERSION = 80; // bit n = supports ATA-n
export const ID_COMMAND_SET_1 = 82;
export const ID_COMMAND_SET_2 = 83; // bit 12 FLUSH CACHE; bit 14 shall be one, bit 15 zero
export const ID_COMMAND_SET_EXT = 84; // bit 14 shall be one
export const ID_COMMAND_ENABLED_2 = 86; // bit 12 FLUSH CACHE enabled
export const ID_INTEGRITY = 255; // bits 7:0 = A5h, 15:8 = checksum (§8.15.61)

export const ID_CAP_LBA = 1 << 9;
export const ID_FLUSH_CACHE = 1 << 12;
export const ID_SHALL_BE_ONE = 1 << 14;
/** Major version: ATA-1..ATA-6 (bits 1-6). */
export const ID_MAJOR_ATA1_TO_6 = 0x7e;
export const ID_INTEGRITY_SIGNATURE = 0xa5;
/** Default CHS translation for the obsolete words (the usual 16 heads, 63 sectors per track). */
export const CHS_HEADS = 16;
export const CHS_SECTORS = 63;
export const CHS_MAX_CYLINDERS = 16383;
