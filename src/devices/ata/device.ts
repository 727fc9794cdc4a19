// An ATA (IDE) disk on the primary channel, PIO only, handled on the vCPU thread: every register
// access the guest makes is a VM exit that lands here. This is the "fully emulated legacy disk"
// of the Xen-vs-Nitro comparison (docs/xen-vs-nitro.md), the opposite of the virtio card.
//
// Commands: IDENTIFY DEVICE, READ SECTORS, WRITE SECTORS (PIO, LBA28), FLUSH CACHE, EXECUTE
// DEVICE DIAGNOSTIC; anything else is aborted (ABRT). CHS addressing is aborted too (LBA only).
// Protocols from ATA/ATAPI-6 §9.7 (PIO data-in) and §9.8 (PIO data-out). Device 1 is absent.
//
// The state (registers, the transfer position and the sector buffer) is plain data in a
// SharedArrayBuffer guarded by a SharedLock, as in ../legacy/serial.ts: every vCPU worker builds
// its own AtaDevice over the same state and the same image descriptor and sees one disk.

import type { BusDevice } from "../bus.js";
import type { IrqTrigger } from "../legacy/serial.js";
import { SharedLock } from "../shared-state.js";
import {
  ATA_SECTOR_SIZE,
  CMD_EXECUTE_DEVICE_DIAGNOSTIC,
  CMD_FLUSH_CACHE,
  CMD_IDENTIFY_DEVICE,
  CMD_READ_SECTORS,
  CMD_READ_SECTORS_NORETRY,
  CMD_WRITE_SECTORS,
  CMD_WRITE_SECTORS_NORETRY,
  CHS_HEADS,
  CHS_MAX_CYLINDERS,
  CHS_SECTORS,
  CTL_NIEN,
  CTL_SRST,
  DEV_DEV,
  DEV_LBA,
  DEV_LBA_HIGH_MASK,
  DEV_OBSOLETE,
  DIAG_DEVICE0_PASSED,
  ERR_ABRT,
  ERR_IDNF,
  ERR_UNC,
  ID_CAPABILITIES,
  ID_CAP_LBA,
  ID_COMMAND_ENABLED_2,
  ID_COMMAND_SET_2,
  ID_COMMAND_SET_EXT,
  ID_CURRENT_CAPACITY,
  ID_CURRENT_CYLINDERS,
  ID_CURRENT_HEADS,
  ID_CURRENT_SECTORS,
  ID_CYLINDERS,
  ID_FIELD_VALIDITY,
  ID_FIRMWARE,
  ID_FLUSH_CACHE,
  ID_GENERAL_CONFIG,
  ID_HEADS,
  ID_INTEGRITY,
  ID_INTEGRITY_SIGNATURE,
  ID_LBA28_SECTORS,
  ID_MAJOR_ATA1_TO_6,
  ID_MAJOR_VERSION,
  ID_MAX_MULTIPLE,
  ID_MODEL,
  ID_SECTORS_PER_TRACK,
  ID_SERIAL,
  ID_SHALL_BE_ONE,
  LBA28_MAX_SECTORS,
  MAX_SECTORS_PER_COMMAND,
  REG_DATA,
  REG_DEVICE,
  REG_ERROR_FEATURES,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS_COMMAND,
  ST_BSY,
  ST_DRDY,
  ST_DRQ,
  ST_DSC,
  ST_ERR,
} from "./spec.js";

/** Where the sectors live. Offsets and lengths are bytes, sector-aligned. Errors throw. */
export interface AtaBackend {
  readonly sizeBytes: number;
  read(into: Uint8Array, offset: number): void;
  write(from: Uint8Array, offset: number): void;
  flush(): void;
}

// ---- shared state layout ---------------------------------------------------------------------
const OFF_LOCK = 0;
// Int32 words after the lock.
const W_XFER = 1; // XFER_NONE / XFER_IN / XFER_OUT
const W_POS = 2; // bytes of the buffer already transferred
const W_END = 3; // bytes in the buffer for this transfer (IN) or this DRQ block (OUT)
const W_LBA = 4; // OUT: LBA of the sector being filled
const W_LEFT = 5; // OUT: sectors left including the one being filled
const W_METRICS = 8; // 8 metric words (see AtaMetrics)
const INT_WORDS = 16;
// Byte registers after the Int32 words.
const OFF_REGS = INT_WORDS * 4;
const R_FEATURES = 0;
const R_COUNT = 1;
const R_LBA_LOW = 2;
const R_LBA_MID = 3;
const R_LBA_HIGH = 4;
const R_DEVICE = 5;
const R_STATUS = 6;
const R_ERROR = 7;
const R_CONTROL = 8;
const R_INTRQ = 9; // INTRQ asserted (cleared by reading Status, §7.15.5)
const REG_BYTES = 16;
const OFF_BUFFER = OFF_REGS + REG_BYTES;
const BUFFER_BYTES = MAX_SECTORS_PER_COMMAND * ATA_SECTOR_SIZE; // one whole READ SECTORS of 256
export const ATA_STATE_BYTES = OFF_BUFFER + BUFFER_BYTES;

const XFER_NONE = 0;
const XFER_IN = 1;
const XFER_OUT = 2;

/** Counters kept in the shared state, for the comparison report. */
export const ATA_METRIC_NAMES = [
  "commands", // commands accepted
  "sectorsRead",
  "sectorsWritten",
  "dataAccesses", // Data register reads/writes (each one a guest exit)
  "registerAccesses", // every other register access
  "spuriousData", // Data register accesses without DRQ
  "errors", // commands that ended with ERR
  "copiedBytes", // payload bytes copied by the device: pread/pwrite into the buffer + buffer <-> exit data
] as const;
export type AtaMetrics = Record<(typeof ATA_METRIC_NAMES)[number], number>;

export interface AtaIdentity {
  serial?: string;
  model?: string;
  firmware?: string;
}

/** Fresh state for one drive: device 0 after power-on (§9.1 signature, DRDY|DSC). */
export function createAtaState(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(ATA_STATE_BYTES);
  resetRegisters(new Uint8Array(sab, OFF_REGS, REG_BYTES));
  return sab;
}

/** The ATA signature and ready status after power-on or reset (§9.12: count 1, LBA 1/0/0). */
function resetRegisters(r: Uint8Array): void {
  r[R_COUNT] = 1;
  r[R_LBA_LOW] = 1;
  r[R_LBA_MID] = 0;
  r[R_LBA_HIGH] = 0;
  r[R_DEVICE] = DEV_OBSOLETE;
  r[R_ERROR] = DIAG_DEVICE0_PASSED;
  r[R_STATUS] = ST_DRDY | ST_DSC;
  r[R_FEATURES] = 0;
  r[R_INTRQ] = 0;
}

export class AtaDevice {
  private readonly lock: SharedLock;
  private readonly ints: Int32Array;
  private readonly regs: Uint8Array;
  private readonly buf: Uint8Array;
  private readonly sectors: number;
  private readonly identity: Required<AtaIdentity>;
  /** The command block (0x1f0, 8 ports) as a bus device. */
  readonly commandBlock: BusDevice;
  /** The control block (0x3f6, 1 port) as a bus device. */
  readonly controlBlock: BusDevice;

  constructor(
    readonly state: SharedArrayBuffer,
    private readonly backend: AtaBackend,
    private readonly irq: IrqTrigger,
    identity: AtaIdentity = {},
  ) {
    if (state.byteLength !== ATA_STATE_BYTES) throw new Error(`ATA state must be ${ATA_STATE_BYTES} bytes, got ${state.byteLength}`);
    if (backend.sizeBytes < ATA_SECTOR_SIZE) throw new Error(`ATA image of ${backend.sizeBytes} bytes holds no ${ATA_SECTOR_SIZE}-byte sector`);
    this.lock = new SharedLock(state, OFF_LOCK);
    this.ints = new Int32Array(state, 0, INT_WORDS);
    this.regs = new Uint8Array(state, OFF_REGS, REG_BYTES);
    this.buf = new Uint8Array(state, OFF_BUFFER, BUFFER_BYTES);
    // LBA28 reaches 2^28 - 1 sectors; a bigger image shows only that much (§6.2.1).
    this.sectors = Math.min(Math.floor(backend.sizeBytes / ATA_SECTOR_SIZE), LBA28_MAX_SECTORS);
    this.identity = { serial: identity.serial ?? "TYPERVISOR-ATA0", model: identity.model ?? "Typervisor emulated ATA disk", firmware: identity.firmware ?? "0.1" };
    this.commandBlock = { read: (o, d) => this.readCommand(o, d), write: (o, d) => this.writeCommand(o, d) };
    this.controlBlock = { read: (o, d) => this.readControl(o, d), write: (o, d) => this.writeControl(o, d) };
  }

  /** User-addressable sectors (IDENTIFY words 60-61). */
  get capacitySectors(): number {
    return this.sectors;
  }

  metrics(): AtaMetrics {
    const out = {} as AtaMetrics;
    ATA_METRIC_NAMES.forEach((n, i) => (out[n] = Atomics.load(this.ints, W_METRICS + i)));
    return out;
  }

  private count(name: (typeof ATA_METRIC_NAMES)[number], n = 1): void {
    this.ints[W_METRICS + ATA_METRIC_NAMES.indexOf(name)]! += n;
  }

  // ---- bus entry points -------------------------------------------------------------------

  private readCommand(offset: number, data: Uint8Array): void {
    let raise = false;
    this.lock.with(() => {
      if (offset === REG_DATA) {
        raise = this.dataIn(data);
        return;
      }
      this.count("registerAccesses");
      data.fill(0);
      const r = this.regs;
      if (this.device1Selected()) return; // no device 1: its registers read zero (QEMU does the same)
      switch (offset) {
        case REG_ERROR_FEATURES:
          data[0] = r[R_ERROR]!;
          break;
        case REG_SECTOR_COUNT:
          data[0] = r[R_COUNT]!;
          break;
        case REG_LBA_LOW:
          data[0] = r[R_LBA_LOW]!;
          break;
        case REG_LBA_MID:
          data[0] = r[R_LBA_MID]!;
          break;
        case REG_LBA_HIGH:
          data[0] = r[R_LBA_HIGH]!;
          break;
        case REG_DEVICE:
          data[0] = r[R_DEVICE]!;
          break;
        case REG_STATUS_COMMAND:
          data[0] = r[R_STATUS]!;
          r[R_INTRQ] = 0; // reading Status clears a pending interrupt (§7.15.5)
          break;
      }
    });
    if (raise) this.irq.trigger();
  }

  private writeCommand(offset: number, data: Uint8Array): void {
    let raise = false;
    this.lock.with(() => {
      if (offset === REG_DATA) {
        raise = this.dataOut(data);
        return;
      }
      this.count("registerAccesses");
      const v = data[0]!;
      const r = this.regs;
      switch (offset) {
        case REG_ERROR_FEATURES:
          r[R_FEATURES] = v;
          break;
        case REG_SECTOR_COUNT:
          r[R_COUNT] = v;
          break;
        case REG_LBA_LOW:
          r[R_LBA_LOW] = v;
          break;
        case REG_LBA_MID:
          r[R_LBA_MID] = v;
          break;
        case REG_LBA_HIGH:
          r[R_LBA_HIGH] = v;
          break;
        case REG_DEVICE:
          r[R_DEVICE] = v;
          break;
        case REG_STATUS_COMMAND:
          if (!this.device1Selected()) raise = this.command(v);
          break;
      }
    });
    if (raise) this.irq.trigger();
  }

  private readControl(_offset: number, data: Uint8Array): void {
    data.fill(0);
    this.lock.with(() => {
      this.count("registerAccesses");
      // Alternate Status: Status without clearing INTRQ (§7.3).
      if (!this.device1Selected()) data[0] = this.regs[R_STATUS]!;
    });
  }

  private writeControl(_offset: number, data: Uint8Array): void {
    const v = data[0]!;
    this.lock.with(() => {
      this.count("registerAccesses");
      const r = this.regs;
      const was = r[R_CONTROL]!;
      r[R_CONTROL] = v;
      if (v & CTL_SRST) {
        // SRST set: the device is busy resetting until the host clears it (§9.2 software reset).
        this.endTransfer();
        r[R_STATUS] = ST_BSY;
      } else if (was & CTL_SRST) {
        this.endTransfer();
        resetRegisters(r);
        r[R_CONTROL] = v;
      }
    });
  }

  // ---- commands ---------------------------------------------------------------------------

  private device1Selected(): boolean {
    return (this.regs[R_DEVICE]! & DEV_DEV) !== 0;
  }

  /** Runs a command written to the Command register; returns whether to raise INTRQ. */
  private command(cmd: number): boolean {
    const r = this.regs;
    if (r[R_STATUS]! & ST_BSY) return false; // writes to Command while BSY are ignored (§7.4.4)
    // A new command while a transfer is in progress ends that transfer (the host broke the protocol).
    this.endTransfer();
    r[R_ERROR] = 0;
    switch (cmd) {
      case CMD_IDENTIFY_DEVICE:
        this.count("commands");
        this.fillIdentify();
        return this.startIn(ATA_SECTOR_SIZE);
      case CMD_READ_SECTORS:
      case CMD_READ_SECTORS_NORETRY:
        return this.readSectors();
      case CMD_WRITE_SECTORS:
      case CMD_WRITE_SECTORS_NORETRY:
        return this.writeSectors();
      case CMD_FLUSH_CACHE:
        this.count("commands");
        try {
          this.backend.flush();
        } catch {
          return this.fail(ERR_UNC);
        }
        return this.complete();
      case CMD_EXECUTE_DEVICE_DIAGNOSTIC:
        // §8.11: the signature, and the diagnostic code in Error. Not an error despite Error != 0.
        this.count("commands");
        resetRegisters(r);
        return this.interrupt();
      default:
        return this.fail(ERR_ABRT);
    }
  }

  /** The LBA28 address in the registers, or -1 when the host chose CHS addressing. */
  private lba28(): number {
    const r = this.regs;
    if (!(r[R_DEVICE]! & DEV_LBA)) return -1;
    return ((r[R_DEVICE]! & DEV_LBA_HIGH_MASK) * 0x1000000) + (r[R_LBA_HIGH]! << 16) + (r[R_LBA_MID]! << 8) + r[R_LBA_LOW]!;
  }

  /** Sector Count, where 0 means 256 (§8.27.3.1). */
  private sectorCount(): number {
    return this.regs[R_COUNT]! === 0 ? MAX_SECTORS_PER_COMMAND : this.regs[R_COUNT]!;
  }

  /** Validates the address; returns [lba, count] or an error to report. */
  private address(): [number, number] | { error: number } {
    const lba = this.lba28();
    if (lba < 0) return { error: ERR_ABRT }; // CHS is not supported by this model
    const n = this.sectorCount();
    // An address outside the user-addressable range: IDNF (§8.27.6, §8.45.6).
    if (lba + n > this.sectors) return { error: ERR_IDNF };
    return [lba, n];
  }

  private readSectors(): boolean {
    const a = this.address();
    if (!Array.isArray(a)) return this.fail(a.error);
    const [lba, n] = a;
    this.count("commands");
    const bytes = n * ATA_SECTOR_SIZE;
    try {
      this.backend.read(this.buf.subarray(0, bytes), lba * ATA_SECTOR_SIZE);
    } catch {
      return this.fail(ERR_UNC);
    }
    this.count("copiedBytes", bytes);
    this.count("sectorsRead", n);
    return this.startIn(bytes);
  }

  private writeSectors(): boolean {
    const a = this.address();
    if (!Array.isArray(a)) return this.fail(a.error);
    const [lba, n] = a;
    this.count("commands");
    const w = this.ints;
    w[W_XFER] = XFER_OUT;
    w[W_POS] = 0;
    w[W_END] = ATA_SECTOR_SIZE;
    w[W_LBA] = lba;
    w[W_LEFT] = n;
    // PIO data-out: DRQ for the first block with no interrupt (§9.8, state HPIOO0 -> DRQ).
    this.regs[R_STATUS] = ST_DRDY | ST_DSC | ST_DRQ;
    return false;
  }

  /** Starts a PIO data-in transfer of `bytes` from the buffer; INTRQ per DRQ block (§9.7). */
  private startIn(bytes: number): boolean {
    const w = this.ints;
    w[W_XFER] = XFER_IN;
    w[W_POS] = 0;
    w[W_END] = bytes;
    this.regs[R_STATUS] = ST_DRDY | ST_DSC | ST_DRQ;
    return this.interrupt();
  }

  private endTransfer(): void {
    this.ints[W_XFER] = XFER_NONE;
    this.ints[W_POS] = 0;
    this.ints[W_END] = 0;
  }

  private complete(): boolean {
    this.endTransfer();
    this.regs[R_STATUS] = ST_DRDY | ST_DSC;
    return this.interrupt();
  }

  private fail(error: number): boolean {
    this.endTransfer();
    this.count("errors");
    this.regs[R_ERROR] = error;
    this.regs[R_STATUS] = ST_DRDY | ST_DSC | ST_ERR;
    return this.interrupt();
  }

  /** Asserts INTRQ unless nIEN (§7.8.6); returns whether the line should be pulsed. */
  private interrupt(): boolean {
    if (this.regs[R_CONTROL]! & CTL_NIEN) return false;
    this.regs[R_INTRQ] = 1;
    return true;
  }

  // ---- the Data register ------------------------------------------------------------------

  /** A Data read of data.length bytes (16-bit normally; 32-bit PIO reads two words). */
  private dataIn(data: Uint8Array): boolean {
    this.count("dataAccesses");
    const w = this.ints;
    if (w[W_XFER] !== XFER_IN || this.device1Selected()) {
      // No DRQ: the bus floats. Reads all ones, changes nothing (§9.7: data only while DRQ=1).
      this.count("spuriousData");
      data.fill(0xff);
      return false;
    }
    const pos = w[W_POS]!;
    const n = Math.min(data.length, w[W_END]! - pos);
    data.set(this.buf.subarray(pos, pos + n));
    if (n < data.length) data.fill(0xff, n);
    this.count("copiedBytes", n);
    const next = pos + n;
    w[W_POS] = next;
    if (next >= w[W_END]!) {
      // Last block read: DRQ clears, no further INTRQ (§9.7, after the final DRQ block).
      this.endTransfer();
      this.regs[R_STATUS] = ST_DRDY | ST_DSC;
      return false;
    }
    // The next sector starts a new DRQ block: INTRQ again (§9.7, one per block).
    if (next % ATA_SECTOR_SIZE === 0) return this.interrupt();
    return false;
  }

  private dataOut(data: Uint8Array): boolean {
    this.count("dataAccesses");
    const w = this.ints;
    if (w[W_XFER] !== XFER_OUT || this.device1Selected()) {
      this.count("spuriousData"); // no DRQ: the write goes nowhere
      return false;
    }
    const pos = w[W_POS]!;
    const n = Math.min(data.length, w[W_END]! - pos);
    this.buf.set(data.subarray(0, n), pos);
    this.count("copiedBytes", n);
    w[W_POS] = pos + n;
    if (pos + n < w[W_END]!) return false;
    // One sector complete: write it through, then either the next DRQ block or the end (§9.8).
    const lba = w[W_LBA]!;
    try {
      this.backend.write(this.buf.subarray(0, ATA_SECTOR_SIZE), lba * ATA_SECTOR_SIZE);
    } catch {
      return this.fail(ERR_UNC);
    }
    this.count("copiedBytes", ATA_SECTOR_SIZE);
    this.count("sectorsWritten");
    const left = w[W_LEFT]! - 1;
    if (left === 0) return this.complete();
    w[W_LEFT] = left;
    w[W_LBA] = lba + 1;
    w[W_POS] = 0;
    return this.interrupt();
  }

  // ---- IDENTIFY DEVICE --------------------------------------------------------------------

  private fillIdentify(): void {
    const words = new Uint16Array(256);
    const cyl = Math.min(CHS_MAX_CYLINDERS, Math.floor(this.sectors / (CHS_HEADS * CHS_SECTORS)));
    words[ID_GENERAL_CONFIG] = 0x0040;
    words[ID_CYLINDERS] = cyl;
    words[ID_HEADS] = CHS_HEADS;
    words[ID_SECTORS_PER_TRACK] = CHS_SECTORS;
    putAscii(words, ID_SERIAL, 20, this.identity.serial);
    putAscii(words, ID_FIRMWARE, 8, this.identity.firmware);
    putAscii(words, ID_MODEL, 40, this.identity.model);
    words[ID_MAX_MULTIPLE] = 0x8000; // READ/WRITE MULTIPLE not supported (bits 7:0 = 0)
    words[ID_CAPABILITIES] = ID_CAP_LBA;
    words[ID_FIELD_VALIDITY] = 0x0001; // words 54-58 valid
    words[ID_CURRENT_CYLINDERS] = cyl;
    words[ID_CURRENT_HEADS] = CHS_HEADS;
    words[ID_CURRENT_SECTORS] = CHS_SECTORS;
    const chs = cyl * CHS_HEADS * CHS_SECTORS;
    words[ID_CURRENT_CAPACITY] = chs & 0xffff;
    words[ID_CURRENT_CAPACITY + 1] = chs >>> 16;
    words[ID_LBA28_SECTORS] = this.sectors & 0xffff;
    words[ID_LBA28_SECTORS + 1] = this.sectors >>> 16;
    words[ID_MAJOR_VERSION] = ID_MAJOR_ATA1_TO_6;
    words[ID_COMMAND_SET_2] = ID_SHALL_BE_ONE | ID_FLUSH_CACHE;
    words[ID_COMMAND_SET_EXT] = ID_SHALL_BE_ONE;
    words[ID_COMMAND_ENABLED_2] = ID_FLUSH_CACHE;
    // Integrity word (§8.15.61): signature A5h, and a checksum making all 512 bytes sum to 0 mod 256.
    words[ID_INTEGRITY] = ID_INTEGRITY_SIGNATURE;
    const bytes = new Uint8Array(words.buffer);
    let sum = 0;
    for (let i = 0; i < 511; i++) sum += bytes[i]!;
    words[ID_INTEGRITY] = ID_INTEGRITY_SIGNATURE | (((256 - (sum & 0xff)) & 0xff) << 8);
    // Words go out little-endian on the 16-bit Data register (§7.6).
    for (let i = 0; i < 256; i++) {
      this.buf[2 * i] = words[i]! & 0xff;
      this.buf[2 * i + 1] = words[i]! >>> 8;
    }
  }
}

/** ATA strings: two characters per word, the first in the high byte (§8.15.7 "ASCII strings"), space padded. */
function putAscii(words: Uint16Array, at: number, chars: number, s: string): void {
  const padded = s.slice(0, chars).padEnd(chars, " ");
  for (let i = 0; i < chars; i += 2) words[at + i / 2] = (padded.charCodeAt(i) << 8) | padded.charCodeAt(i + 1);
}

/** Decodes an ATA string from IDENTIFY data (for tests and the TS driver). */
export function ataString(identify: Uint8Array, wordAt: number, chars: number): string {
  let s = "";
  for (let i = 0; i < chars; i += 2) {
    const lo = identify[2 * (wordAt + i / 2)]!;
    const hi = identify[2 * (wordAt + i / 2) + 1]!;
    s += String.fromCharCode(hi, lo);
  }
  return s.trimEnd();
}
