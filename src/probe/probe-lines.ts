// The probe guest's report protocol (guest/README.md): one fact per line,
//   PROBE <name> key=value key=value flag ...
// Values never contain spaces; strings that could are hex-encoded in a key ending `_hex`.
// A bare word (no `=`), such as `done` in `PROBE exits done kind=pio`, is a flag: it is
// recorded as a field whose value is the empty string.

/** One `PROBE` line, split into its name and fields. */
export interface ProbeLine {
  name: string;
  fields: Record<string, string>;
  raw: string;
}

const PREFIX = 'PROBE ';

/** Parses every `PROBE` line of a serial transcript; other lines are ignored, `\r` is tolerated. */
export function parseProbeLines(text: string): ProbeLine[] {
  const lines: ProbeLine[] = [];
  for (const rawLine of text.split('\n')) {
    const raw = rawLine.replace(/\r+$/, '').replace(/^\r+/, '');
    if (!raw.startsWith(PREFIX)) continue;
    const tokens = raw.slice(PREFIX.length).split(' ').filter((t) => t.length > 0);
    const name = tokens.shift();
    if (name === undefined) continue;
    const fields: Record<string, string> = {};
    for (const token of tokens) {
      const eq = token.indexOf('=');
      if (eq < 0) fields[token] = '';
      else fields[token.slice(0, eq)] = token.slice(eq + 1);
    }
    lines.push({ name, fields, raw });
  }
  return lines;
}

/** The first line called `name` for which `pred` holds (every such line when `pred` is absent). */
export function findLine(
  lines: readonly ProbeLine[],
  name: string,
  pred?: (fields: Record<string, string>) => boolean,
): ProbeLine | undefined {
  return lines.find((l) => l.name === name && (pred === undefined || pred(l.fields)));
}

/** Decodes a `_hex` value (two lowercase or uppercase hex digits per byte) as UTF-8. */
export function hexToString(hex: string): string {
  return new TextDecoder().decode(hexToBytes(hex));
}

/** Decodes a `_hex` value to bytes; throws on odd length or a non-hex digit. */
export function hexToBytes(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error(`not a hex byte string (${hex.length} chars): ${hex.slice(0, 32)}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// FNV-1a 64-bit (http://www.isthe.com/chongo/tech/comp/fnv/): the guest's initrd digest.
const FNV64_OFFSET_BASIS = 0xcbf29ce484222325n;
const FNV64_PRIME = 0x100000001b3n;
const MASK64 = 0xffffffffffffffffn;

/** FNV-1a 64 over `bytes`, as the probe computes it over the initrd. */
export function fnv1a64(bytes: Uint8Array): bigint {
  // Two 32-bit halves keep the hot loop in small integers; the product is exact mod 2^64.
  let hi = Number(FNV64_OFFSET_BASIS >> 32n);
  let lo = Number(FNV64_OFFSET_BASIS & 0xffffffffn);
  // prime = 0x100_000001b3: lo part 0x1b3, hi part 0x100
  for (let i = 0; i < bytes.length; i++) {
    lo = (lo ^ bytes[i]!) >>> 0;
    const loLo = lo & 0xffff;
    const loHi = lo >>> 16;
    // (hi:lo) * 0x1b3
    const a = loLo * 0x1b3;
    const b = loHi * 0x1b3 + (a >>> 16);
    const newLo = (((b & 0xffff) << 16) | (a & 0xffff)) >>> 0;
    const carry = Math.floor(b / 0x10000);
    // high word: hi * 0x1b3 + lo * 0x100 + carry (mod 2^32)
    const newHi = (Math.imul(hi, 0x1b3) + Math.imul(lo, 0x100) + carry) >>> 0;
    lo = newLo;
    hi = newHi;
  }
  return ((BigInt(hi) << 32n) | BigInt(lo)) & MASK64;
}

/** A 64-bit value in the probe's `0x` + 16 hex digits form, e.g. for comparing `fnv1a64=`. */
export function hex64(v: bigint): string {
  return '0x' + v.toString(16).padStart(16, '0');
}

/** Reference implementation (slow, BigInt) used by the unit tests to check the fast one. */
export function fnv1a64Reference(bytes: Uint8Array): bigint {
  let h = FNV64_OFFSET_BASIS;
  for (const byte of bytes) h = ((h ^ BigInt(byte)) * FNV64_PRIME) & MASK64;
  return h;
}
