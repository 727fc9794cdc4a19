import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AmlError, ONE, ONES, ZERO, buffer, byteConst, concat, device, dwordConst, eisaId, encodePkgLength, extendedInterrupt, integer, io,
  memory32Fixed, name, nameSeg, nameString, pkgLength, qwordConst, resourceTemplate, scope, string, wordConst,
} from "./aml.js";

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
const ascii = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));
const sum = (b: Uint8Array): number => b.reduce((s, x) => (s + x) & 0xff, 0);

test("NameSeg (ACPI 6.5 §20.2.2): four characters, short ASL names padded with '_'", () => {
  assert.deepEqual(nameSeg("_HID"), bytes(0x5f, 0x48, 0x49, 0x44));
  assert.deepEqual(nameSeg("_SB"), bytes(...ascii("_SB_")));
  assert.deepEqual(nameSeg("V012"), bytes(...ascii("V012")));
  for (const bad of ["", "1ABC", "abcd", "ABCDE", "A-B"]) assert.throws(() => nameSeg(bad), AmlError, bad);
});

test("NameString (ACPI 6.5 §20.2.2): RootChar, ParentPrefixChar, DualNamePrefix 0x2E, MultiNamePrefix 0x2F", () => {
  assert.deepEqual(nameString("COM1"), bytes(...ascii("COM1")));
  assert.deepEqual(nameString("\\_SB_"), bytes(0x5c, ...ascii("_SB_")));
  assert.deepEqual(nameString("\\_SB_.COM1"), bytes(0x5c, 0x2e, ...ascii("_SB_COM1")));
  assert.deepEqual(nameString("_SB_.PCI0.ISA"), bytes(0x2f, 3, ...ascii("_SB_PCI0ISA_")));
  assert.deepEqual(nameString("^^FOO"), bytes(0x5e, 0x5e, ...ascii("FOO_")));
  assert.throws(() => nameString("\\"), /no name segment/);
  assert.throws(() => nameString("_SB_..X"), AmlError);
});

test("PkgLength (ACPI 6.5 §20.2.4): 1-byte up to 63, then lead byte with the count in bits 7-6 and the low nibble", () => {
  const cases: Array<[number, number[]]> = [
    [0, [0x00]],
    [63, [0x3f]],
    [64, [0x40, 0x04]],
    [0x123, [0x43, 0x12]],
    [0xfff, [0x4f, 0xff]],
    [0x1000, [0x80, 0x00, 0x01]],
    [0xfffff, [0x8f, 0xff, 0xff]],
    [0x100000, [0xc0, 0x00, 0x00, 0x01]],
    [0x0fffffff, [0xcf, 0xff, 0xff, 0xff]],
  ];
  for (const [v, enc] of cases) assert.deepEqual(encodePkgLength(v), bytes(...enc), `value ${v}`);
  assert.throws(() => encodePkgLength(0x10000000), /outside 0\.\.268435455/);
  assert.throws(() => encodePkgLength(-1), AmlError);
});

test("PkgLength counts its own bytes: the encoding size is chosen with itself included", () => {
  assert.deepEqual(pkgLength(0), bytes(0x01));
  assert.deepEqual(pkgLength(62), bytes(0x3f)); // 62 + 1 = 63 still fits one byte
  assert.deepEqual(pkgLength(63), bytes(0x41, 0x04)); // 63 + 2 = 65
  assert.deepEqual(pkgLength(4093), bytes(0x4f, 0xff)); // 4093 + 2 = 4095
  assert.deepEqual(pkgLength(4094), bytes(0x81, 0x00, 0x01)); // 4094 + 3 = 4097
  assert.deepEqual(pkgLength(0xffffc), bytes(0x8f, 0xff, 0xff)); // + 3 = 0xfffff
  assert.deepEqual(pkgLength(0xffffd), bytes(0xc1, 0x00, 0x00, 0x01)); // + 4 = 0x100001
  assert.throws(() => pkgLength(0x0ffffffc), /does not fit a PkgLength/);
});

test("Integers (ACPI 6.5 §20.2.3): ZeroOp, OneOp, then the shortest of Byte/Word/DWord/QWord prefix 0x0A/0x0B/0x0C/0x0E", () => {
  assert.deepEqual(integer(0), bytes(0x00));
  assert.deepEqual(integer(1), bytes(0x01));
  assert.deepEqual(integer(2), bytes(0x0a, 0x02));
  assert.deepEqual(integer(0xff), bytes(0x0a, 0xff));
  assert.deepEqual(integer(0x100), bytes(0x0b, 0x00, 0x01));
  assert.deepEqual(integer(0xffff), bytes(0x0b, 0xff, 0xff));
  assert.deepEqual(integer(0x10000), bytes(0x0c, 0x00, 0x00, 0x01, 0x00));
  assert.deepEqual(integer(0xd0001000), bytes(0x0c, 0x00, 0x10, 0x00, 0xd0));
  assert.deepEqual(integer(0x1_0000_0000), bytes(0x0e, 0, 0, 0, 0, 1, 0, 0, 0));
  assert.deepEqual(integer(0xffff_ffff_ffff_ffffn), bytes(0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
  assert.deepEqual([ZERO, ONE, ONES], [bytes(0x00), bytes(0x01), bytes(0xff)]);
  assert.deepEqual(byteConst(1), bytes(0x0a, 0x01), "an explicit ByteConst keeps its prefix");
  assert.deepEqual(wordConst(0x1234), bytes(0x0b, 0x34, 0x12));
  assert.deepEqual(dwordConst(0x12345678), bytes(0x0c, 0x78, 0x56, 0x34, 0x12));
  assert.deepEqual(qwordConst(0x0102030405060708n), bytes(0x0e, 8, 7, 6, 5, 4, 3, 2, 1));
  for (const bad of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1]) assert.throws(() => integer(bad), AmlError, String(bad));
  assert.throws(() => integer(1n << 64n), AmlError);
  assert.throws(() => byteConst(0x100), /ByteConst 256 is outside 0\.\.255/);
  assert.throws(() => wordConst(0x10000), AmlError);
  assert.throws(() => dwordConst(0x1_0000_0000), AmlError);
});

test("String (ACPI 6.5 §20.2.3): StringPrefix 0x0D, ASCII 0x01-0x7F, NullChar", () => {
  assert.deepEqual(string("LNRO0005"), bytes(0x0d, ...ascii("LNRO0005"), 0x00));
  assert.deepEqual(string(""), bytes(0x0d, 0x00));
  assert.throws(() => string("é"), /ASCII 0x01-0x7F/);
  assert.throws(() => string("a\0b"), AmlError);
});

test("Buffer (ACPI 6.5 §20.2.5.4): BufferOp 0x11 PkgLength BufferSize ByteList", () => {
  assert.deepEqual(buffer(bytes(1, 2, 3)), bytes(0x11, 0x06, 0x0a, 0x03, 1, 2, 3));
  assert.deepEqual(buffer(bytes()), bytes(0x11, 0x02, 0x00));
  const big = buffer(new Uint8Array(300));
  // Body = WordConst 300 (3 bytes) + 300 bytes; PkgLength 2 bytes: 305 = 0x131.
  assert.deepEqual(big.subarray(0, 6), bytes(0x11, 0x41, 0x13, 0x0b, 0x2c, 0x01));
  assert.equal(big.length, 1 + 305);
});

test("EISAID (ACPI 6.5 §19.6.35): compressed vendor letters and product number", () => {
  assert.equal(eisaId("PNP0501"), 0x0105d041);
  assert.equal(eisaId("PNP0303"), 0x0303d041);
  assert.equal(eisaId("PNP0A03"), 0x030ad041);
  assert.deepEqual(integer(eisaId("PNP0501")), bytes(0x0c, 0x41, 0xd0, 0x05, 0x01));
  for (const bad of ["pnp0501", "PNP050", "PNP050G", "P1P0501"]) assert.throws(() => eisaId(bad), AmlError, bad);
});

test("Name, Device, Scope (ACPI 6.5 §20.2.5): NameOp 0x08; DeviceOp 0x5B 0x82 and ScopeOp 0x10 with PkgLength", () => {
  assert.deepEqual(name("_UID", ZERO), bytes(0x08, ...ascii("_UID"), 0x00));
  assert.deepEqual(device("COM1", name("_UID", ZERO)), bytes(0x5b, 0x82, 0x0b, ...ascii("COM1"), 0x08, ...ascii("_UID"), 0x00));
  assert.deepEqual(scope("\\_SB_"), bytes(0x10, 0x06, 0x5c, ...ascii("_SB_")));
  // A device body of 100 bytes needs a 2-byte PkgLength: 4 (name) + 100 + 2 = 106 = 0x6A.
  const d = device("BIG_", new Uint8Array(100));
  assert.deepEqual(d.subarray(0, 4), bytes(0x5b, 0x82, 0x4a, 0x06));
  assert.equal(d.length, 2 + 106, "PkgLength covers everything after the opcode");
});

test("IO port descriptor (ACPI 6.5 §6.4.2.5): tag 0x47, Decode16, min, max, alignment, length", () => {
  assert.deepEqual(io(0x3f8, 0x3f8, 1, 8), bytes(0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08));
  assert.throws(() => io(0x64, 0x60, 1, 1), /minimum base 0x64 is above its maximum 0x60/);
  assert.throws(() => io(0x10000, 0x10000, 1, 1), AmlError);
});

test("Memory32Fixed (ACPI 6.5 §6.4.3.4): tag 0x86, length 9, _RW bit, base, length", () => {
  assert.deepEqual(memory32Fixed(true, 0xd0001000, 0x1000), bytes(0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00));
  assert.equal(memory32Fixed(false, 0, 1)[3], 0x00, "ReadOnly");
  assert.throws(() => memory32Fixed(true, 0xffff_f000, 0x2000), /ends above 4 GiB/);
});

test("Extended Interrupt (ACPI 6.5 §6.4.3.6): tag 0x89, flags consumer/edge/low/shared/wake, count, 32-bit GSIs", () => {
  assert.deepEqual(extendedInterrupt({ edge: true, activeLow: false }, 5), bytes(0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00));
  assert.equal(extendedInterrupt({ edge: false, activeLow: true, shared: true }, 9)[3], 0x0d, "consumer | active-low | shared");
  assert.equal(extendedInterrupt({ consumer: false, edge: false, activeLow: false, wake: true }, 9)[3], 0x10, "producer, level, wake");
  assert.deepEqual(extendedInterrupt({ edge: true, activeLow: false }, 1, 0x12345678), bytes(0x89, 0x0a, 0x00, 0x03, 0x02, 1, 0, 0, 0, 0x78, 0x56, 0x34, 0x12));
  assert.throws(() => extendedInterrupt({ edge: true, activeLow: false }), /needs 1\.\.255 interrupts, got 0/);
});

test("ResourceTemplate: a Buffer ending in End Tag 0x79 whose checksum makes the resource data sum to 0 (ACPI 6.5 §6.4.2.9)", () => {
  const rt = resourceTemplate(io(0x3f8, 0x3f8, 1, 8));
  assert.deepEqual(rt, bytes(0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x79, 0x40));
  assert.equal(sum(rt.subarray(4)), 0);
  assert.deepEqual(resourceTemplate(), bytes(0x11, 0x05, 0x0a, 0x02, 0x79, 0x87), "an empty template is the End Tag alone");
});

test("COM1 device: the bytes iasl 20200925 compiles from the same ASL (End Tag checksum aside, iasl writes 0)", () => {
  // Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, Zero) Name (_DDN, "COM1")
  //   Name (_CRS, ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
  //     Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 4 } }) }
  const iasl = bytes(
    0x5b, 0x82, 0x3c, 0x43, 0x4f, 0x4d, 0x31, 0x08, 0x5f, 0x48, 0x49, 0x44, 0x0c, 0x41, 0xd0, 0x05, 0x01, 0x08, 0x5f, 0x55, 0x49, 0x44,
    0x00, 0x08, 0x5f, 0x44, 0x44, 0x4e, 0x0d, 0x43, 0x4f, 0x4d, 0x31, 0x00, 0x08, 0x5f, 0x43, 0x52, 0x53, 0x11, 0x16, 0x0a, 0x13, 0x47,
    0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00, 0x79, 0x00,
  );
  const ours = device(
    "COM1",
    name("_HID", integer(eisaId("PNP0501"))),
    name("_UID", integer(0)),
    name("_DDN", string("COM1")),
    name("_CRS", resourceTemplate(io(0x3f8, 0x3f8, 1, 8), extendedInterrupt({ edge: true, activeLow: false }, 4))),
  );
  assert.equal(ours.length, iasl.length);
  assert.deepEqual(ours.subarray(0, -1), iasl.subarray(0, -1));
  assert.equal(sum(concat(ours.subarray(ours.length - 19))), 0, "the End Tag checksum covers IO (8) + Interrupt (9) + End Tag (2)");
});
