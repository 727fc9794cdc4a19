// LZ4 decompression for kernel payloads: the block format and the "legacy frame" that the kernel
// build wraps around it (arch/x86/boot/compressed/Makefile: vmlinux.bin.lz4 is `lz4 -l` output
// plus the uncompressed size as a u32 LE, scripts/Makefile.lib cmd_lz4_with_size).
//
// Formats: lz4 repository doc/lz4_Block_format.md ("Compressed block format") and
// doc/lz4_Frame_format.md ("Legacy frame"). Every read and write is bounds-checked against the
// input and the caller's output limit; each loop iteration consumes at least one input byte, so
// malformed input ends in a KernelFormatError, never an out-of-bounds access or a hang.

import { KernelFormatError, hex } from "./errors.js";

/** lz4_Frame_format.md "Legacy frame": magic number 0x184C2102, stored little-endian. */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** lz4_Frame_format.md "Legacy frame": each block decompresses to at most 8 MB (8 MiB, LEGACY_BLOCKSIZE in lz4io.c). */
export const LZ4_LEGACY_BLOCK_MAX = 8 * 1024 * 1024;

/** lz4_Block_format.md: a match is at least 4 bytes long (minmatch); the token stores length - 4. */
const MIN_MATCH = 4;
/** lz4_Block_format.md: a 4-bit length field of 15 means "more length bytes follow". */
const RUN_MASK = 15;
/** lz4_Block_format.md: each extension byte adds its value; 255 means "another byte follows". */
const EXT_CONTINUE = 255;
/** lz4_Block_format.md: the offset field is 2 bytes, little-endian. */
const OFFSET_SIZE = 2;
/** lz4_Frame_format.md "Legacy frame": each block is preceded by its compressed size, u32 LE. */
const CHUNK_HEADER_SIZE = 4;

/** lz4.h LZ4_COMPRESSBOUND(n) = n + n/255 + 16: the largest compressed size of n input bytes. */
export function lz4CompressBound(n: number): number {
  return n + Math.floor(n / 255) + 16;
}

const readU32 = (b: Uint8Array, at: number): number =>
  (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

/**
 * Decodes one LZ4 block (lz4_Block_format.md) from all of `src` into `dst` starting at
 * `dstStart`, writing no further than `dstEnd` (default: the end of `dst`). Matches may only
 * refer to bytes this block wrote (offsets reaching before `dstStart` are an error), as for
 * LZ4_decompress_safe. Returns the number of bytes written.
 */
export function lz4DecompressBlock(src: Uint8Array, dst: Uint8Array, dstStart = 0, dstEnd = dst.length): number {
  if (!Number.isInteger(dstStart) || !Number.isInteger(dstEnd) || dstStart < 0 || dstEnd > dst.length || dstStart > dstEnd) {
    throw new KernelFormatError(`LZ4 block: output window ${dstStart}..${dstEnd} is not inside the ${dst.length}-byte buffer`);
  }
  if (src.length === 0) {
    throw new KernelFormatError("LZ4 block: empty input (a block holds at least one token byte)");
  }
  let ip = 0;
  let op = dstStart;

  // Reads the extension bytes of a length field whose 4-bit value was RUN_MASK.
  const extend = (base: number, what: string): number => {
    let len = base;
    for (;;) {
      if (ip >= src.length) {
        throw new KernelFormatError(`LZ4 block: input ends inside the ${what} length extension at byte ${ip}`);
      }
      const b = src[ip++]!;
      len += b;
      if (b !== EXT_CONTINUE) return len;
    }
  };

  for (;;) {
    const token = src[ip++]!;
    // Literals.
    let litLen = token >>> 4;
    if (litLen === RUN_MASK) litLen = extend(litLen, "literal");
    if (litLen > src.length - ip) {
      throw new KernelFormatError(
        `LZ4 block: ${litLen} literal bytes at input byte ${ip} run past the end of the ${src.length}-byte block (truncated input)`,
      );
    }
    if (litLen > dstEnd - op) {
      throw new KernelFormatError(
        `LZ4 block: ${litLen} literal bytes at output byte ${op - dstStart} overflow the ${dstEnd - dstStart}-byte output limit`,
      );
    }
    dst.set(src.subarray(ip, ip + litLen), op);
    ip += litLen;
    op += litLen;
    // lz4_Block_format.md "End of block conditions": the last sequence holds only literals.
    if (ip === src.length) return op - dstStart;

    // Match.
    if (src.length - ip < OFFSET_SIZE) {
      throw new KernelFormatError(`LZ4 block: input ends inside a match offset at byte ${ip} (truncated input)`);
    }
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += OFFSET_SIZE;
    if (offset === 0) {
      throw new KernelFormatError(`LZ4 block: match offset 0 at input byte ${ip - OFFSET_SIZE} (invalid by the block format)`);
    }
    if (offset > op - dstStart) {
      throw new KernelFormatError(
        `LZ4 block: match offset ${offset} at output byte ${op - dstStart} reaches before the start of the output`,
      );
    }
    let matchLen = token & 0x0f;
    if (matchLen === RUN_MASK) matchLen = extend(matchLen, "match");
    matchLen += MIN_MATCH;
    if (matchLen > dstEnd - op) {
      throw new KernelFormatError(
        `LZ4 block: ${matchLen}-byte match at output byte ${op - dstStart} overflows the ${dstEnd - dstStart}-byte output limit`,
      );
    }
    const from = op - offset;
    if (offset >= matchLen) {
      dst.copyWithin(op, from, from + matchLen);
      op += matchLen;
    } else {
      // Overlapping copy: the output repeats with period `offset` (offset 1 = a run of one byte).
      // Copying from the fixed `from` in steps of (op - from), a multiple of the period that
      // doubles each time, preserves that repetition.
      let left = matchLen;
      while (left > 0) {
        const step = Math.min(op - from, left);
        dst.copyWithin(op, from, from + step);
        op += step;
        left -= step;
      }
    }
    if (ip >= src.length) {
      throw new KernelFormatError(
        `LZ4 block: input ends after a match at byte ${ip}; the last sequence must hold only literals (truncated input)`,
      );
    }
  }
}

/**
 * Decompresses an LZ4 legacy frame (lz4_Frame_format.md "Legacy frame", as `lz4 -l` writes it
 * and the kernel's lib/decompress_unlz4.c reads it): the magic, then chunks of u32 LE compressed
 * size + one independent block of at most 8 MiB output. A chunk size equal to the magic starts a
 * new frame (concatenated frames). Bytes after the last chunk are tolerated when fewer than 4
 * remain or exactly 4 remain (the uncompressed size the kernel build appends); a zero chunk size
 * ends the data (zero padding: no valid chunk is empty). Output beyond `maxOutput` bytes is an
 * error.
 */
export function lz4DecompressLegacy(input: Uint8Array, maxOutput: number): Uint8Array {
  if (!Number.isInteger(maxOutput) || maxOutput < 0) {
    throw new KernelFormatError(`LZ4 legacy frame: output limit ${maxOutput} is not a non-negative integer`);
  }
  if (input.length < CHUNK_HEADER_SIZE || readU32(input, 0) !== LZ4_LEGACY_MAGIC) {
    const got = input.length < CHUNK_HEADER_SIZE ? `only ${input.length} bytes` : hex(readU32(input, 0));
    throw new KernelFormatError(`LZ4 legacy frame: expected magic ${hex(LZ4_LEGACY_MAGIC)} (little-endian), got ${got}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  let ip = CHUNK_HEADER_SIZE;
  for (;;) {
    const left = input.length - ip;
    if (left < CHUNK_HEADER_SIZE) break; // end of input, or < 4 trailing bytes
    const size = readU32(input, ip);
    if (size === LZ4_LEGACY_MAGIC) {
      ip += CHUNK_HEADER_SIZE; // a concatenated frame starts
      continue;
    }
    if (left === CHUNK_HEADER_SIZE && chunks.length > 0) break; // the appended uncompressed size
    if (size === 0) break; // zero padding
    ip += CHUNK_HEADER_SIZE;
    if (size > lz4CompressBound(LZ4_LEGACY_BLOCK_MAX)) {
      throw new KernelFormatError(
        `LZ4 legacy frame: chunk at byte ${ip - CHUNK_HEADER_SIZE} claims ${size} compressed bytes, more than any 8 MiB block needs (${lz4CompressBound(LZ4_LEGACY_BLOCK_MAX)})`,
      );
    }
    if (size > input.length - ip) {
      throw new KernelFormatError(
        `LZ4 legacy frame: chunk at byte ${ip - CHUNK_HEADER_SIZE} claims ${size} compressed bytes but only ${input.length - ip} remain (truncated input)`,
      );
    }
    const room = Math.min(LZ4_LEGACY_BLOCK_MAX, maxOutput - total);
    const out = new Uint8Array(room);
    let n: number;
    try {
      n = lz4DecompressBlock(input.subarray(ip, ip + size), out);
    } catch (e) {
      if (!(e instanceof KernelFormatError)) throw e;
      throw new KernelFormatError(
        `LZ4 legacy frame, chunk at byte ${ip - CHUNK_HEADER_SIZE} (${total} of at most ${maxOutput} output bytes written): ${e.message}`,
      );
    }
    chunks.push(out.subarray(0, n));
    total += n;
    ip += size;
  }
  if (chunks.length === 0) {
    throw new KernelFormatError("LZ4 legacy frame: no compressed chunk after the magic");
  }
  if (chunks.length === 1) return chunks[0]!;
  const result = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    result.set(c, at);
    at += c.length;
  }
  return result;
}
