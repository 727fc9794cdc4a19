// virtio-blk device model (virtio 1.2 §5.2): feature set, configuration layout and the request
// machine that answers one queue. Pure with respect to the world: storage is a BlockBackend,
// throttling a Throttle, counting a BlkStats, all injected by the card runtime (src/cards).
//
// Request rules (virtio 1.2 §5.2.6, §5.2.6.1-2): a 16-byte header in device-readable memory,
// then data (readable for OUT, DISCARD, WRITE_ZEROES; writable for IN, GET_ID), then one
// device-writable status byte, last. Anything else is answered IOERR (or UNSUPP for an unknown
// type) when the status byte can be written, and with a used length of 0 when it cannot.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import { newChain, type DescriptorChain, type Segment, type SplitQueue } from "../queue.js";
import {
  BLK_CFG_BLK_SIZE,
  BLK_CFG_CAPACITY,
  BLK_CFG_DISCARD_SECTOR_ALIGNMENT,
  BLK_CFG_MAX_DISCARD_SECTORS,
  BLK_CFG_MAX_DISCARD_SEG,
  BLK_CFG_MAX_WRITE_ZEROES_SECTORS,
  BLK_CFG_MAX_WRITE_ZEROES_SEG,
  BLK_CFG_SEG_MAX,
  BLK_CFG_WRITE_ZEROES_MAY_UNMAP,
  BLK_CONFIG_SIZE,
  BLK_DWZ_F_UNMAP,
  BLK_DWZ_SEGMENT_SIZE,
  BLK_F_BLK_SIZE,
  BLK_F_DISCARD,
  BLK_F_FLUSH,
  BLK_F_RO,
  BLK_F_SEG_MAX,
  BLK_F_WRITE_ZEROES,
  BLK_ID_BYTES,
  BLK_REQ_HEADER_SIZE,
  BLK_SECTOR_SIZE,
  BLK_S_IOERR,
  BLK_S_OK,
  BLK_S_UNSUPP,
  BLK_T_DISCARD,
  BLK_T_FLUSH,
  BLK_T_GET_ID,
  BLK_T_IN,
  BLK_T_OUT,
  BLK_T_WRITE_ZEROES,
  DEVICE_ID_BLOCK,
  F_RING_EVENT_IDX,
  F_RING_INDIRECT_DESC,
  F_VERSION_1,
  bit,
} from "../spec.js";
import type { VirtioDeviceInfo } from "../mmio.js";

/** Storage under a drive. Offsets and lengths are bytes, already checked against `sizeBytes`. */
export interface BlockBackend {
  readonly sizeBytes: number;
  read(into: Uint8Array, offset: number): void;
  write(from: Uint8Array, offset: number): void;
  /**
   * Optional, the same as read/write with the guest's buffer given as a host address (guest RAM,
   * checked by GuestMemory.hostAddress): a file backend passes it to the system call as is.
   */
  readAt?(host: number, len: number, offset: number): void;
  writeAt?(host: number, len: number, offset: number): void;
  /** Makes every completed write durable (fdatasync). */
  flush(): void;
  /** The range reads as zeros afterwards; `unmap`: the backend may also deallocate it. */
  writeZeroes(offset: number, len: number, unmap: boolean): void;
  /** The driver no longer needs the range (what it reads afterwards is unspecified). */
  discard(offset: number, len: number): void;
}

/** A storage failure a backend reports (short read, ...): the request gets IOERR. */
export class BlockIoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlockIoError";
  }
}

/** Rate limiting: 0 = go ahead (tokens taken), otherwise milliseconds to wait (nothing taken). */
export interface Throttle {
  consume(bytes: number, ops: number): number;
}

export interface BlkStats {
  request(bytes: number): void;
  error(): void;
  throttled(): void;
}

export interface BlkOptions {
  readOnly: boolean;
  /** GET_ID answer (at most 20 bytes of ASCII). */
  id?: string;
  /** Queue size offered (QueueNumMax). */
  queueSize?: number;
}

export const BLK_QUEUE_SIZE_DEFAULT = 256;
/** Data segments per request we accept (config seg_max). Linux sizes its sg lists from it. */
export const BLK_SEG_MAX = 128;
/** DISCARD / WRITE_ZEROES limits offered in config. */
export const BLK_MAX_DWZ_SECTORS = 0x3fffff; // 2 GiB - 512 per request
export const BLK_MAX_DWZ_SEG = 1;
/** Bytes a single zero-write pass writes at most (bounds the buffer). */
const ZERO_CHUNK = 1 << 20;

export function blkFeatures(opts: BlkOptions): bigint {
  let f =
    bit(F_VERSION_1) |
    bit(F_RING_INDIRECT_DESC) |
    bit(F_RING_EVENT_IDX) |
    bit(BLK_F_FLUSH) |
    bit(BLK_F_SEG_MAX) |
    bit(BLK_F_BLK_SIZE);
  if (opts.readOnly) f |= bit(BLK_F_RO);
  else f |= bit(BLK_F_DISCARD) | bit(BLK_F_WRITE_ZEROES);
  return f;
}

/** struct virtio_blk_config (virtio 1.2 §5.2.4) for a drive of `sizeBytes`. */
export function blkConfigSpace(sizeBytes: number, opts: BlkOptions): Uint8Array {
  const cfg = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(cfg.buffer);
  v.setBigUint64(BLK_CFG_CAPACITY, BigInt(Math.floor(sizeBytes / BLK_SECTOR_SIZE)), true);
  v.setUint32(BLK_CFG_SEG_MAX, BLK_SEG_MAX, true);
  v.setUint32(BLK_CFG_BLK_SIZE, BLK_SECTOR_SIZE, true);
  if (!opts.readOnly) {
    v.setUint32(BLK_CFG_MAX_DISCARD_SECTORS, BLK_MAX_DWZ_SECTORS, true);
    v.setUint32(BLK_CFG_MAX_DISCARD_SEG, BLK_MAX_DWZ_SEG, true);
    v.setUint32(BLK_CFG_DISCARD_SECTOR_ALIGNMENT, 1, true);
    v.setUint32(BLK_CFG_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_DWZ_SECTORS, true);
    v.setUint32(BLK_CFG_MAX_WRITE_ZEROES_SEG, BLK_MAX_DWZ_SEG, true);
    cfg[BLK_CFG_WRITE_ZEROES_MAY_UNMAP] = 1; // the unmap flag is honoured (file backends punch a hole)
  }
  return cfg;
}

export function blkDeviceInfo(sizeBytes: number, opts: BlkOptions): VirtioDeviceInfo {
  return {
    deviceId: DEVICE_ID_BLOCK,
    features: blkFeatures(opts),
    numQueues: 1,
    queueNumMax: opts.queueSize ?? BLK_QUEUE_SIZE_DEFAULT,
    config: blkConfigSpace(sizeBytes, opts),
  };
}

/** A parsed request; `status` is where the answer goes (undefined: nowhere to answer). */
export interface BlkRequest {
  type: number;
  /** The first sector; -1 when its byte offset is 2^53 or more (then the request is rejected). */
  sector: number;
  /**
   * Data buffers (readable for OUT/DISCARD/WRITE_ZEROES, writable for IN/GET_ID): data[dataFrom]
   * up to data[dataTo - 1]. A read or write in the usual shape names the chain's own segments
   * (no copy of the list); every other request has a list of its own, dataFrom 0 and dataTo its length.
   */
  data: Segment[];
  dataFrom: number;
  dataTo: number;
  dataLen: number;
  /** Guest address of the status byte. */
  status: number;
  /** Set when the request is malformed: answered with this status without touching storage. */
  reject?: number | undefined;
  why?: string | undefined;
}

/** A request for parseBlkRequest to fill in (a device keeps one and reuses it). */
function newRequest(): BlkRequest {
  return { type: -1, sector: 0, data: [], dataFrom: 0, dataTo: 0, dataLen: 0, status: 0 };
}

/** Takes `len` bytes of a segment list starting `skip` bytes in. */
function sub(segs: readonly Segment[], skip: number, len: number): Segment[] {
  const out: Segment[] = [];
  for (const s of segs) {
    if (len === 0) break;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const take = Math.min(s.len - skip, len);
    out.push({ addr: s.addr + skip, len: take });
    len -= take;
    skip = 0;
  }
  return out;
}

/**
 * Splits a chain into header, data and status (virtio 1.2 §5.2.6). Returns undefined when there
 * is no device-writable byte to put a status in: such a chain is answered with used length 0.
 */
export function parseBlkRequest(mem: GuestMemory, chain: DescriptorChain, capacityBytes: number, opts: BlkOptions, into?: BlkRequest): BlkRequest | undefined {
  if (chain.writableBytes < 1) return undefined;
  const { readable, writable } = chain;
  // The status byte is the chain's last device-writable byte. Drivers put it in a descriptor of
  // its own (Linux, the probe): then the segments before it are the data, with no copying.
  const lastW = writable[writable.length - 1]!;
  const status = lastW.addr + lastW.len - 1;
  // The shape every driver sends reads and writes in (Linux, the probe): a 16-byte header alone in
  // the first descriptor, the status byte alone in the last. Taken without the general path's
  // closures and copies, with the same checks, into `into` when given (nothing allocated);
  // anything else goes the general way below.
  if (readable.length > 0 && readable[0]!.len === BLK_REQ_HEADER_SIZE && lastW.len === 1) {
    const first = readable[0]!;
    const type = mem.readU32(first.addr);
    const hi = mem.readU32(first.addr + 12);
    if ((type === BLK_T_IN && readable.length === 1 && writable.length > 1) || (type === BLK_T_OUT && !opts.readOnly && writable.length === 1 && readable.length > 1)) {
      const isIn = type === BLK_T_IN;
      const len = isIn ? chain.writableBytes - 1 : chain.readableBytes - BLK_REQ_HEADER_SIZE;
      const segs = isIn ? writable.length - 1 : readable.length - 1;
      if (hi < 2 ** 21 / BLK_SECTOR_SIZE && len % BLK_SECTOR_SIZE === 0 && segs <= BLK_SEG_MAX) {
        const sector = hi * 2 ** 32 + mem.readU32(first.addr + 8);
        if (sector * BLK_SECTOR_SIZE + len <= capacityBytes) {
          const req = into ?? newRequest();
          req.type = type;
          req.sector = sector;
          req.data = isIn ? writable : readable;
          req.dataFrom = isIn ? 0 : 1;
          req.dataTo = isIn ? writable.length - 1 : readable.length;
          req.dataLen = len;
          req.status = status;
          req.reject = undefined;
          req.why = undefined;
          return req;
        }
      }
    }
  }
  const req: BlkRequest = { type: -1, sector: 0, data: [], dataFrom: 0, dataTo: 0, dataLen: 0, status };
  const reject = (st: number, why: string): BlkRequest => ({ ...req, reject: st, why });
  const withData = (data: Segment[], dataLen: number): BlkRequest => ({ ...req, data, dataFrom: 0, dataTo: data.length, dataLen });
  if (chain.readableBytes < BLK_REQ_HEADER_SIZE) return reject(BLK_S_IOERR, `header needs ${BLK_REQ_HEADER_SIZE} device-readable bytes, chain has ${chain.readableBytes}`);
  // The header (§5.2.6): type u32 at 0, sector u64 at 8, little-endian; read in place when one
  // segment holds it, as the sector's two halves (no BigInt on the request path).
  const first = readable[0]!;
  let header: GuestMemory | Uint8Array = mem;
  let at = first.addr;
  if (first.len < BLK_REQ_HEADER_SIZE) {
    const bytes = new Uint8Array(BLK_REQ_HEADER_SIZE);
    let o = 0;
    for (const seg of sub(readable, 0, BLK_REQ_HEADER_SIZE)) {
      bytes.set(mem.slice(seg.addr, seg.len), o);
      o += seg.len;
    }
    header = bytes;
    at = 0;
  }
  const u32 = (off: number): number =>
    header instanceof Uint8Array ? new DataView(header.buffer).getUint32(off, true) : mem.readU32(at + off);
  req.type = u32(0);
  const lo = u32(8);
  const hi = u32(12);
  const readLen = chain.readableBytes - BLK_REQ_HEADER_SIZE;
  const writeLen = chain.writableBytes - 1;
  const readData = (): Segment[] => (first.len === BLK_REQ_HEADER_SIZE ? readable.slice(1) : sub(readable, BLK_REQ_HEADER_SIZE, readLen));
  const writeData = (): Segment[] => (lastW.len === 1 ? writable.slice(0, -1) : sub(writable, 0, writeLen));
  // Byte offsets stay exact below 2^53: a sector whose offset would not is past any capacity.
  const sectorOk = hi < 2 ** 21 / BLK_SECTOR_SIZE;
  req.sector = sectorOk ? hi * 2 ** 32 + lo : -1;
  const sectorsFit = (len: number): boolean => sectorOk && req.sector * BLK_SECTOR_SIZE + len <= capacityBytes;
  const sectorText = (): string => ((BigInt(hi) << 32n) | BigInt(lo)).toString();

  switch (req.type) {
    case BLK_T_IN:
    case BLK_T_OUT: {
      const isIn = req.type === BLK_T_IN;
      // IN data is device-writable and OUT data device-readable; the other side holds nothing.
      if (isIn ? readLen !== 0 : writeLen !== 0) return reject(BLK_S_IOERR, `${isIn ? "IN" : "OUT"} request has data in the wrong direction`);
      const len = isIn ? writeLen : readLen;
      if (len % BLK_SECTOR_SIZE !== 0) return reject(BLK_S_IOERR, `data length ${len} is not a multiple of ${BLK_SECTOR_SIZE}`);
      const data = isIn ? writeData() : readData();
      if (data.length > BLK_SEG_MAX) return reject(BLK_S_IOERR, `${data.length} data segments exceed seg_max ${BLK_SEG_MAX}`);
      if (!sectorsFit(len)) return reject(BLK_S_IOERR, `sector ${sectorText()} + ${len} bytes is past the capacity of ${capacityBytes} bytes`);
      if (!isIn && opts.readOnly) return reject(BLK_S_IOERR, "write to a read-only drive");
      return withData(data, len);
    }
    case BLK_T_FLUSH:
      if (readLen !== 0 || writeLen !== 0) return reject(BLK_S_IOERR, "FLUSH carries no data");
      return req;
    case BLK_T_GET_ID:
      if (readLen !== 0 || writeLen === 0) return reject(BLK_S_IOERR, "GET_ID needs a device-writable buffer and nothing readable");
      return withData(writeData(), writeLen);
    case BLK_T_DISCARD:
    case BLK_T_WRITE_ZEROES: {
      if (opts.readOnly) return reject(BLK_S_UNSUPP, "DISCARD/WRITE_ZEROES are not offered on a read-only drive");
      if (writeLen !== 0 || readLen === 0 || readLen % BLK_DWZ_SEGMENT_SIZE !== 0) {
        return reject(BLK_S_IOERR, `DISCARD/WRITE_ZEROES need readable segments of ${BLK_DWZ_SEGMENT_SIZE} bytes, got ${readLen}`);
      }
      if (readLen / BLK_DWZ_SEGMENT_SIZE > BLK_MAX_DWZ_SEG) return reject(BLK_S_UNSUPP, `more than ${BLK_MAX_DWZ_SEG} segments`);
      return withData(readData(), readLen);
    }
    default:
      return reject(BLK_S_UNSUPP, `unknown request type ${req.type}`);
  }
}

export type ProcessResult =
  | { kind: "idle"; interrupt: boolean }
  /** A request waits for the rate limiter: try again after `waitMs`. */
  | { kind: "throttled"; interrupt: boolean; waitMs: number }
  /** The pass stopped at its bound with work left (so other queues get their turn): come back at once. */
  | { kind: "more"; interrupt: boolean };

function capacityOf(b: BlockBackend): number {
  return Math.floor(b.sizeBytes / BLK_SECTOR_SIZE) * BLK_SECTOR_SIZE;
}

/** The virtio-blk request machine for one drive. */
export class BlkDevice {
  private capacity: number;
  /** The chain and the request each pass refills (newChain, parseBlkRequest's `into`): nothing allocated per request. */
  private readonly chain = newChain();
  private readonly req = newRequest();
  private readonly onMalformed = (): void => this.stats.error();

  constructor(
    private readonly mem: GuestMemory,
    private backend: BlockBackend,
    private readonly opts: BlkOptions,
    private readonly stats: BlkStats,
    private readonly throttle?: Throttle,
  ) {
    this.capacity = capacityOf(backend);
  }

  /** Bytes of the drive the guest may address: whole sectors of the backend. */
  get capacityBytes(): number {
    return this.capacity;
  }

  /**
   * Puts another backing store under the drive (Firecracker's PATCH /drives path_on_host), between
   * two requests: every later request uses it and its capacity. The caller tells the driver
   * (config space capacity, config-change interrupt). virtio 1.2 §5.2.4
   */
  replaceBackend(backend: BlockBackend): void {
    this.backend = backend;
    this.capacity = capacityOf(backend);
  }

  /**
   * Answers every available request (multiple in flight: everything the driver queued before the
   * kick). A fatal VirtqueueError propagates: the caller marks the device NEEDS_RESET.
   */
  process(q: SplitQueue): ProcessResult {
    const oldUsed = q.pos.nextUsed;
    for (;;) {
      for (let chain: DescriptorChain | undefined; (chain = q.peekChain(this.onMalformed, this.chain)) !== undefined; ) {
        const head = chain.head;
        const req = parseBlkRequest(this.mem, chain, this.capacityBytes, this.opts, this.req);
        if (this.throttle !== undefined && req !== undefined && req.reject === undefined) {
          const bytes = req.type === BLK_T_IN || req.type === BLK_T_OUT ? req.dataLen : 0;
          const wait = this.throttle.consume(bytes, 1);
          if (wait > 0) {
            this.stats.throttled();
            // The request stays in the avail ring; the card comes back after `wait`.
            return { kind: "throttled", interrupt: q.needsInterrupt(oldUsed), waitMs: wait };
          }
        }
        q.advance();
        if (req === undefined) {
          q.pushUsed(head, 0);
          this.stats.error();
          continue;
        }
        const status = this.execute(req);
        this.mem.writeU8(req.status, status);
        if (status !== BLK_S_OK) this.stats.error();
        // Used length: bytes written into the chain, status included. §2.7.8
        q.pushUsed(head, this.written + 1);
      }
      q.publishAvailEvent();
      // With EVENT_IDX a buffer made available before avail_event was published sent no kick: look again.
      if (q.pending() === 0) break;
    }
    return { kind: "idle", interrupt: q.needsInterrupt(oldUsed) };
  }

  /** Bytes the last execute() wrote to the driver's data buffers (a field: no pair allocated per request). */
  private written = 0;

  /** Runs one request: its status; the bytes it wrote to the driver's data buffers in `written`. */
  private execute(req: BlkRequest): number {
    this.written = 0;
    if (req.reject !== undefined) return req.reject;
    const base = req.sector * BLK_SECTOR_SIZE;
    try {
      switch (req.type) {
        case BLK_T_IN: {
          let off = base;
          // Straight into guest memory: each segment is guest RAM, checked by the queue (and
          // again by GuestMemory here).
          const b = this.backend;
          for (let i = req.dataFrom; i < req.dataTo; i++) {
            const s = req.data[i]!;
            const host = b.readAt !== undefined ? this.mem.hostAddress(s.addr, s.len) : -1;
            if (host >= 0) b.readAt!(host, s.len, off);
            else b.read(this.mem.slice(s.addr, s.len), off);
            off += s.len;
          }
          this.stats.request(req.dataLen);
          this.written = req.dataLen;
          return BLK_S_OK;
        }
        case BLK_T_OUT: {
          let off = base;
          const b = this.backend;
          for (let i = req.dataFrom; i < req.dataTo; i++) {
            const s = req.data[i]!;
            const host = b.writeAt !== undefined ? this.mem.hostAddress(s.addr, s.len) : -1;
            if (host >= 0) b.writeAt!(host, s.len, off);
            else b.write(this.mem.slice(s.addr, s.len), off);
            off += s.len;
          }
          this.stats.request(req.dataLen);
          return BLK_S_OK;
        }
        case BLK_T_FLUSH:
          // Durable before the completion is published. §5.2.6.2
          this.backend.flush();
          this.stats.request(0);
          return BLK_S_OK;
        case BLK_T_GET_ID: {
          const id = new TextEncoder().encode(this.opts.id ?? "").subarray(0, BLK_ID_BYTES);
          const out = new Uint8Array(Math.min(req.dataLen, BLK_ID_BYTES));
          out.set(id.subarray(0, out.length));
          let o = 0;
          for (const s of sub(req.data, 0, out.length)) {
            this.mem.write(s.addr, out.subarray(o, o + s.len));
            o += s.len;
          }
          this.stats.request(0);
          this.written = out.length;
          return BLK_S_OK;
        }
        case BLK_T_DISCARD:
        case BLK_T_WRITE_ZEROES: {
          const seg = new Uint8Array(BLK_DWZ_SEGMENT_SIZE);
          let o = 0;
          for (const s of req.data) {
            seg.set(this.mem.slice(s.addr, s.len), o);
            o += s.len;
          }
          const v = new DataView(seg.buffer);
          const sector = v.getBigUint64(0, true);
          const num = v.getUint32(8, true);
          const flags = v.getUint32(12, true);
          if ((flags & ~BLK_DWZ_F_UNMAP) !== 0) return BLK_S_UNSUPP; // reserved flag bits §5.2.6.2
          // unmap is only defined for WRITE_ZEROES. §5.2.6.2
          if (req.type === BLK_T_DISCARD && (flags & BLK_DWZ_F_UNMAP) !== 0) return BLK_S_UNSUPP;
          if (num > BLK_MAX_DWZ_SECTORS) return BLK_S_IOERR;
          const start = Number(sector) * BLK_SECTOR_SIZE;
          const len = num * BLK_SECTOR_SIZE;
          if (sector > BigInt(this.capacityBytes / BLK_SECTOR_SIZE) || start + len > this.capacityBytes) return BLK_S_IOERR;
          if (req.type === BLK_T_DISCARD) this.backend.discard(start, len);
          else this.backend.writeZeroes(start, len, (flags & BLK_DWZ_F_UNMAP) !== 0);
          this.stats.request(0);
          return BLK_S_OK;
        }
        default:
          return BLK_S_UNSUPP;
      }
    } catch (e) {
      // Storage errors (EIO, ENOSPC, ...) are the request's: IOERR, the device carries on.
      if (e instanceof BlockIoError || (e instanceof Error && e.name === "SysError")) return BLK_S_IOERR;
      throw e;
    }
  }
}

/** Writes zeros over [offset, offset+len) through `write`, a chunk at a time. */
export function writeZeroesByChunks(write: (buf: Uint8Array, off: number) => void, offset: number, len: number): void {
  const zero = new Uint8Array(Math.min(len, ZERO_CHUNK));
  for (let done = 0; done < len; ) {
    const n = Math.min(zero.length, len - done);
    write(zero.subarray(0, n), offset + done);
    done += n;
  }
}

/** A drive held in memory, for tests and tools. */
export class MemoryBackend implements BlockBackend {
  flushes = 0;
  constructor(readonly bytes: Uint8Array) {}
  get sizeBytes(): number {
    return this.bytes.byteLength;
  }
  read(into: Uint8Array, offset: number): void {
    into.set(this.bytes.subarray(offset, offset + into.byteLength));
  }
  write(from: Uint8Array, offset: number): void {
    this.bytes.set(from, offset);
  }
  flush(): void {
    this.flushes++;
  }
  writeZeroes(offset: number, len: number): void {
    this.bytes.fill(0, offset, offset + len);
  }
  discard(offset: number, len: number): void {
    this.writeZeroes(offset, len);
  }
}
