// The 8-bit checksums of firmware tables: a structure whose bytes, checksum included, sum to zero
// mod 256 (MP spec 1.4 §4.1/§4.2; ACPI 6.5 §5.2.5.3, §5.2.6 and §6.4.2.9 for resource data).

/** Byte sum mod 256. */
export function byteSum(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

/** The checksum byte that makes `bytes` (holding 0 where the checksum goes) sum to zero. */
export const checksumByte = (bytes: Uint8Array): number => (0x100 - byteSum(bytes)) & 0xff;
