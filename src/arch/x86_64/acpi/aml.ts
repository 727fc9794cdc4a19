// A small AML encoder: the subset of the ACPI Machine Language (ACPI 6.5 §20, "ACPI Machine
// Language (AML) Specification") and of the resource descriptors (ACPI 6.5 §6.4, "Resource Data
// Types for ACPI") that a microVM's DSDT needs. Every builder returns the exact bytes of one term,
// so a table is the concatenation of terms; there is no intermediate tree.
//
// The ASL each builder corresponds to is named in its comment (ACPI 6.5 §19), e.g. `Name (_HID,
// EISAID ("PNP0501"))` is `name("_HID", integer(eisaId("PNP0501")))`.

import { checksumByte } from "../checksum.js";

/** A name, value or descriptor that cannot be encoded (the message names the value and the rule). */
export class AmlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AmlError";
  }
}

// --- Opcodes and prefixes (ACPI 6.5 §20.2, "AML Grammar Definition") ----------------------------

/** ACPI 6.5 §20.2.3: ZeroOp, OneOp, OnesOp (ConstObj). */
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const ONES_OP = 0xff;
/** ACPI 6.5 §20.2.3: BytePrefix, WordPrefix, DWordPrefix, StringPrefix, QWordPrefix. */
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
/** ACPI 6.5 §20.2.5.1: NameOp (DefName). */
const NAME_OP = 0x08;
/** ACPI 6.5 §20.2.5.1: ScopeOp (DefScope). */
const SCOPE_OP = 0x10;
/** ACPI 6.5 §20.2.5.4: BufferOp (DefBuffer). */
const BUFFER_OP = 0x11;
/** ACPI 6.5 §20.2.5.2: DeviceOp = ExtOpPrefix 0x82 (DefDevice). */
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82;
/** ACPI 6.5 §20.2.2: RootChar '\', ParentPrefixChar '^', DualNamePrefix, MultiNamePrefix. */
const ROOT_CHAR = 0x5c;
const PARENT_PREFIX_CHAR = 0x5e;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
/** ACPI 6.5 §20.2.2: a NameSeg is 4 characters. */
const NAME_SEG_SIZE = 4;
/** ACPI 6.5 §20.2.2: SegCount is a ByteData of 1..255. */
const MAX_SEG_COUNT = 255;
/** ACPI 6.5 §20.2.4: PkgLength holds at most 28 bits (lead nibble + 3 bytes). */
const PKG_LENGTH_MAX = 0x0fff_ffff;

/** Concatenates byte strings. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const le = (value: number, bytes: number): number[] => {
  const out: number[] = [];
  let v = value;
  for (let i = 0; i < bytes; i++) {
    out.push(v % 256);
    v = Math.floor(v / 256);
  }
  return out;
};

const checkUnsigned = (v: number, max: number, what: string): void => {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new AmlError(`AML ${what} ${v} is outside 0..${max}`);
};

// --- Names (ACPI 6.5 §20.2.2 "Name Objects Encoding") -------------------------------------------

/**
 * One NameSeg: LeadNameChar ('A'-'Z' or '_') then three NameChars (also '0'-'9'). ASL lets a
 * segment be shorter and pads it with '_' (ACPI 6.5 §19.2.2, "_SB" = "_SB_"); so do we.
 */
export function nameSeg(seg: string): Uint8Array {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) {
    throw new AmlError(`AML name segment "${seg}" must be 1-4 characters of A-Z, 0-9 or _, not starting with a digit (ACPI 6.5 §20.2.2)`);
  }
  const padded = seg.padEnd(NAME_SEG_SIZE, "_");
  return Uint8Array.from(padded, (c) => c.charCodeAt(0));
}

/**
 * A NameString: an optional root ('\') or parent prefixes ('^'), then the dot-separated segments
 * as a NameSeg, a DualNamePath or a MultiNamePath (ACPI 6.5 §20.2.2). `"\\_SB_.COM1"`,
 * `"_HID"`, `"^PCI0"`.
 */
export function nameString(path: string): Uint8Array {
  let rest = path;
  const prefix: number[] = [];
  if (rest.startsWith("\\")) {
    prefix.push(ROOT_CHAR);
    rest = rest.slice(1);
  } else {
    while (rest.startsWith("^")) {
      prefix.push(PARENT_PREFIX_CHAR);
      rest = rest.slice(1);
    }
  }
  if (rest === "") throw new AmlError(`AML name "${path}" has no name segment`);
  const segs = rest.split(".").map(nameSeg);
  if (segs.length > MAX_SEG_COUNT) throw new AmlError(`AML name "${path}" has ${segs.length} segments; at most ${MAX_SEG_COUNT} fit (ACPI 6.5 §20.2.2)`);
  const head = segs.length === 1 ? [] : segs.length === 2 ? [DUAL_NAME_PREFIX] : [MULTI_NAME_PREFIX, segs.length];
  return concat(Uint8Array.from([...prefix, ...head]), ...segs);
}

// --- Package length (ACPI 6.5 §20.2.4 "Package Length Encoding") ---------------------------------

/**
 * The PkgLength encoding of `value` in the fewest bytes: one byte holds 0-63 in bits 5-0; otherwise
 * bits 7-6 of the lead byte count the 1-3 bytes that follow, bits 3-0 are the low nibble, and each
 * following byte the next 8 bits (bits 5-4 of the lead byte stay zero).
 */
export function encodePkgLength(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > PKG_LENGTH_MAX) {
    throw new AmlError(`AML PkgLength ${value} is outside 0..${PKG_LENGTH_MAX} (ACPI 6.5 §20.2.4)`);
  }
  if (value <= 0x3f) return Uint8Array.of(value);
  const follow = value <= 0xfff ? 1 : value <= 0xf_ffff ? 2 : 3;
  const out = [(follow << 6) | (value & 0x0f)];
  for (let i = 0; i < follow; i++) out.push((value >>> (4 + 8 * i)) & 0xff);
  return Uint8Array.from(out);
}

/**
 * The PkgLength in front of a body of `bodyLength` bytes. The encoded value counts the PkgLength
 * bytes themselves (ACPI 6.5 §20.2.4), so the size of the encoding is part of the value.
 */
export function pkgLength(bodyLength: number): Uint8Array {
  checkUnsigned(bodyLength, PKG_LENGTH_MAX, "package body length");
  for (let size = 1; size <= 4 && bodyLength + size <= PKG_LENGTH_MAX; size++) {
    const enc = encodePkgLength(bodyLength + size);
    if (enc.length === size) return enc;
  }
  throw new AmlError(`AML package body of ${bodyLength} bytes does not fit a PkgLength (at most ${PKG_LENGTH_MAX} bytes, ACPI 6.5 §20.2.4)`);
}

/** `op PkgLength body`: the shape of every variable-length term. */
function withPkgLength(op: readonly number[], body: Uint8Array): Uint8Array {
  return concat(Uint8Array.from(op), pkgLength(body.length), body);
}

// --- Data objects (ACPI 6.5 §20.2.3 "Data Objects Encoding") -------------------------------------

/** ZeroOp, OneOp, OnesOp (ASL `Zero`, `One`, `Ones`). */
export const ZERO: Uint8Array = Uint8Array.of(ZERO_OP);
export const ONE: Uint8Array = Uint8Array.of(ONE_OP);
export const ONES: Uint8Array = Uint8Array.of(ONES_OP);

/** ByteConst: BytePrefix ByteData. */
export function byteConst(v: number): Uint8Array {
  checkUnsigned(v, 0xff, "ByteConst");
  return Uint8Array.of(BYTE_PREFIX, v);
}

/** WordConst: WordPrefix WordData (little endian, ACPI 6.5 §20.2.3). */
export function wordConst(v: number): Uint8Array {
  checkUnsigned(v, 0xffff, "WordConst");
  return Uint8Array.from([WORD_PREFIX, ...le(v, 2)]);
}

/** DWordConst: DWordPrefix DWordData. */
export function dwordConst(v: number): Uint8Array {
  checkUnsigned(v, 0xffff_ffff, "DWordConst");
  return Uint8Array.from([DWORD_PREFIX, ...le(v, 4)]);
}

/** QWordConst: QWordPrefix QWordData. */
export function qwordConst(v: bigint): Uint8Array {
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new AmlError(`AML QWordConst ${v} is outside 0..2^64-1`);
  const out = new Uint8Array(9);
  out[0] = QWORD_PREFIX;
  new DataView(out.buffer).setBigUint64(1, v, true);
  return out;
}

/**
 * An integer in the shortest encoding, as iasl writes it: Zero and One as ConstObj, then the
 * smallest of ByteConst, WordConst, DWordConst, QWordConst.
 */
export function integer(v: number | bigint): Uint8Array {
  if (typeof v === "number" && !Number.isSafeInteger(v)) throw new AmlError(`AML integer ${v} is not an exact integer`);
  const b = BigInt(v);
  if (b < 0n || b > 0xffff_ffff_ffff_ffffn) throw new AmlError(`AML integer ${v} is outside 0..2^64-1`);
  if (b === 0n) return ZERO;
  if (b === 1n) return ONE;
  if (b <= 0xffn) return byteConst(Number(b));
  if (b <= 0xffffn) return wordConst(Number(b));
  if (b <= 0xffff_ffffn) return dwordConst(Number(b));
  return qwordConst(b);
}

/** String: StringPrefix AsciiCharList NullChar; AsciiChar is 0x01-0x7F. */
export function string(s: string): Uint8Array {
  const codes = Array.from(s, (c) => c.charCodeAt(0));
  if (codes.some((c) => c < 0x01 || c > 0x7f)) throw new AmlError(`AML string "${s}" may hold only ASCII 0x01-0x7F (ACPI 6.5 §20.2.3)`);
  return Uint8Array.from([STRING_PREFIX, ...codes, 0]);
}

/** DefBuffer: BufferOp PkgLength BufferSize ByteList, BufferSize as the shortest integer (ASL `Buffer () {...}`). */
export function buffer(data: Uint8Array): Uint8Array {
  return withPkgLength([BUFFER_OP], concat(integer(data.length), data));
}

/**
 * EISAID ("UUUNNNN") (ACPI 6.5 §19.6.35): three upper-case letters compressed to 5 bits each
 * (letter - 0x40) in the first two bytes, big-endian, then four hex digits in the next two; the
 * result is read as a little-endian 32-bit integer. EISAID ("PNP0501") = 0x0105D041.
 */
export function eisaId(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new AmlError(`EISA id "${id}" must be 3 upper-case letters and 4 hex digits (ACPI 6.5 §19.6.35)`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const vendor = (c(0) << 10) | (c(1) << 5) | c(2);
  const product = parseInt(id.slice(3), 16);
  const bytes = [vendor >> 8, vendor & 0xff, product >> 8, product & 0xff];
  return (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) >>> 0;
}

// --- Named objects and namespace modifiers (ACPI 6.5 §20.2.5) ------------------------------------

/** DefName: NameOp NameString DataRefObject (ASL `Name (path, value)`). */
export function name(path: string, value: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(NAME_OP), nameString(path), value);
}

/** DefScope: ScopeOp PkgLength NameString TermList (ASL `Scope (path) {...}`). */
export function scope(path: string, ...terms: readonly Uint8Array[]): Uint8Array {
  return withPkgLength([SCOPE_OP], concat(nameString(path), ...terms));
}

/** DefDevice: DeviceOp PkgLength NameString TermList (ASL `Device (path) {...}`). */
export function device(path: string, ...terms: readonly Uint8Array[]): Uint8Array {
  return withPkgLength([EXT_OP_PREFIX, DEVICE_OP], concat(nameString(path), ...terms));
}

// --- Resource descriptors (ACPI 6.5 §6.4) ---------------------------------------------------------

/** ACPI 6.5 §6.4.2.5 I/O Port Descriptor: small item 0x08, length 7 -> tag byte 0x47. */
const IO_PORT_TAG = 0x47;
/** ACPI 6.5 §6.4.2.5: Information bit 0 (_DEC) = 1, the device decodes 16 address bits. */
const IO_DECODE_16 = 0x01;
/** ACPI 6.5 §6.4.2.9 End Tag: small item 0x0F, length 1 -> tag byte 0x79. */
const END_TAG = 0x79;
/** ACPI 6.5 §6.4.3.4 32-Bit Fixed Memory Range Descriptor: large item 0x06 -> tag byte 0x86, 9 data bytes. */
const MEMORY32_FIXED_TAG = 0x86;
const MEMORY32_FIXED_LENGTH = 9;
/** ACPI 6.5 §6.4.3.4: Information bit 0 (_RW) = 1 read/write, 0 read-only. */
const MEMORY_READ_WRITE = 0x01;
/** ACPI 6.5 §6.4.3.6 Extended Interrupt Descriptor: large item 0x09 -> tag byte 0x89. */
const EXTENDED_INTERRUPT_TAG = 0x89;
/** ACPI 6.5 §6.4.3.6: Interrupt Vector Flags. */
const INT_CONSUMER = 1 << 0; // bit 0: 1 = consumer, 0 = producer
const INT_EDGE = 1 << 1; // bit 1 (_HE): 1 = edge, 0 = level
const INT_ACTIVE_LOW = 1 << 2; // bit 2 (_LL): 1 = active-low, 0 = active-high
const INT_SHARED = 1 << 3; // bit 3 (_SHR): 1 = shared, 0 = exclusive
const INT_WAKE = 1 << 4; // bit 4 (_WKC): 1 = wake capable
/** ACPI 6.5 §6.4.3.6: the interrupt table length is a byte, at least 1. */
const MAX_INTERRUPTS = 255;

/** ASL `IO (Decode16, min, max, alignment, length)`: a fixed or relocatable I/O port range. */
export function io(min: number, max: number, alignment: number, length: number): Uint8Array {
  checkUnsigned(min, 0xffff, "IO minimum base");
  checkUnsigned(max, 0xffff, "IO maximum base");
  checkUnsigned(alignment, 0xff, "IO alignment");
  checkUnsigned(length, 0xff, "IO length");
  if (min > max) throw new AmlError(`IO descriptor minimum base 0x${min.toString(16)} is above its maximum 0x${max.toString(16)}`);
  return Uint8Array.from([IO_PORT_TAG, IO_DECODE_16, ...le(min, 2), ...le(max, 2), alignment, length]);
}

/** ASL `Memory32Fixed (ReadWrite|ReadOnly, base, length)`. */
export function memory32Fixed(readWrite: boolean, base: number, length: number): Uint8Array {
  checkUnsigned(base, 0xffff_ffff, "Memory32Fixed base");
  checkUnsigned(length, 0xffff_ffff, "Memory32Fixed length");
  if (base + length > 0x1_0000_0000) throw new AmlError(`Memory32Fixed 0x${base.toString(16)}+0x${length.toString(16)} ends above 4 GiB`);
  return Uint8Array.from([
    MEMORY32_FIXED_TAG, ...le(MEMORY32_FIXED_LENGTH, 2), readWrite ? MEMORY_READ_WRITE : 0, ...le(base, 4), ...le(length, 4),
  ]);
}

export interface InterruptFlags {
  /** ResourceConsumer (default) or ResourceProducer. */
  consumer?: boolean;
  /** Edge (true) or Level (false). */
  edge: boolean;
  /** ActiveLow (true) or ActiveHigh (false). */
  activeLow: boolean;
  /** Shared (true) or Exclusive (false, default). */
  shared?: boolean;
  /** Wake capable (default false). */
  wake?: boolean;
}

/**
 * ASL `Interrupt (ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {gsi, ...}`:
 * the Extended Interrupt Descriptor (ACPI 6.5 §6.4.3.6), without a resource source. The numbers
 * are global system interrupts.
 */
export function extendedInterrupt(flags: InterruptFlags, ...gsis: readonly number[]): Uint8Array {
  if (gsis.length < 1 || gsis.length > MAX_INTERRUPTS) throw new AmlError(`Interrupt descriptor needs 1..${MAX_INTERRUPTS} interrupts, got ${gsis.length}`);
  for (const g of gsis) checkUnsigned(g, 0xffff_ffff, "interrupt number");
  const f =
    ((flags.consumer ?? true) ? INT_CONSUMER : 0) |
    (flags.edge ? INT_EDGE : 0) |
    (flags.activeLow ? INT_ACTIVE_LOW : 0) |
    (flags.shared === true ? INT_SHARED : 0) |
    (flags.wake === true ? INT_WAKE : 0);
  // Length counts the bytes after the 3-byte header: flags, table length, 4 bytes per interrupt.
  const length = 2 + 4 * gsis.length;
  return Uint8Array.from([EXTENDED_INTERRUPT_TAG, ...le(length, 2), f, gsis.length, ...gsis.flatMap((g) => le(g, 4))]);
}

/**
 * ASL `ResourceTemplate () {...}`: a Buffer holding the descriptors and the End Tag. The End Tag's
 * checksum byte makes all bytes of the resource data, itself included, sum to zero (ACPI 6.5
 * §6.4.2.9; a zero checksum would also be accepted, but a real one costs nothing).
 */
export function resourceTemplate(...descriptors: readonly Uint8Array[]): Uint8Array {
  const body = concat(...descriptors, Uint8Array.of(END_TAG, 0));
  body[body.length - 1] = checksumByte(body);
  return buffer(body);
}
