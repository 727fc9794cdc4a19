// A blkfront in TypeScript over guest memory: what the probe's guest/src/xenblk.c does, used by
// the tests (and usable by any host-side harness). It grants frames, queues requests and reaps
// responses with the ring.h macros' index arithmetic.

import type { GuestMemory } from "../memory/guest-memory.js";
import {
  BLKIF_ENTRY_BYTES,
  BLKIF_RING_SIZE,
  GNT_DOMID,
  GNT_FLAGS,
  GNT_FRAME,
  GRANT_ENTRY_BYTES,
  GRANT_TABLE_OFFSET,
  REQ_HANDLE,
  REQ_ID,
  REQ_NR_SEGMENTS,
  REQ_OPERATION,
  REQ_SECTOR,
  REQ_SEG,
  RSP_ID,
  RSP_OPERATION,
  RSP_STATUS,
  SEG_BYTES,
  SEG_FIRST,
  SEG_GREF,
  SEG_LAST,
  SRING_HEADER_BYTES,
  SRING_REQ_EVENT,
  SRING_REQ_PROD,
  SRING_RSP_EVENT,
  SRING_RSP_PROD,
  XEN_PAGE_SIZE,
} from "./blkif.js";

export interface Segment {
  gref: number;
  first: number;
  last: number;
}

export interface Request {
  op: number;
  id: bigint;
  sector: bigint;
  segs: Segment[];
  /** Override nr_segments (hostile tests). */
  nrSegments?: number;
}

export interface Response {
  id: bigint;
  op: number;
  status: number;
}

export class Blkfront {
  reqProdPvt = 0;
  rspCons = 0;

  constructor(
    readonly mem: GuestMemory,
    readonly ringGpa: number,
  ) {}

  /** SHARED_RING_INIT + FRONT_RING_INIT; clears the grant table. */
  init(): void {
    this.mem.fill(this.ringGpa, 2 * XEN_PAGE_SIZE, 0);
    this.mem.writeU32(this.ringGpa + SRING_REQ_EVENT, 1);
    this.mem.writeU32(this.ringGpa + SRING_RSP_EVENT, 1);
    this.reqProdPvt = 0;
    this.rspCons = 0;
  }

  /** Writes grant entry `ref`: {flags, domid, frame}. */
  grant(ref: number, frame: number, flags: number, domid = 0): void {
    const at = this.ringGpa + GRANT_TABLE_OFFSET + ref * GRANT_ENTRY_BYTES;
    this.mem.writeU32(at + GNT_FRAME, frame);
    this.mem.writeU16(at + GNT_DOMID, domid);
    this.mem.writeU16(at + GNT_FLAGS, flags); // flags last: the entry becomes valid
  }

  /** Puts a request in the next private slot (not yet visible). */
  queue(r: Request): void {
    const at = this.ringGpa + SRING_HEADER_BYTES + (this.reqProdPvt & (BLKIF_RING_SIZE - 1)) * BLKIF_ENTRY_BYTES;
    this.mem.fill(at, BLKIF_ENTRY_BYTES, 0);
    this.mem.writeU8(at + REQ_OPERATION, r.op);
    this.mem.writeU8(at + REQ_NR_SEGMENTS, r.nrSegments ?? r.segs.length);
    this.mem.writeU16(at + REQ_HANDLE, 0);
    this.mem.writeU64(at + REQ_ID, r.id);
    this.mem.writeU64(at + REQ_SECTOR, r.sector);
    r.segs.slice(0, 11).forEach((s, i) => {
      const sa = at + REQ_SEG + i * SEG_BYTES;
      this.mem.writeU32(sa + SEG_GREF, s.gref);
      this.mem.writeU8(sa + SEG_FIRST, s.first);
      this.mem.writeU8(sa + SEG_LAST, s.last);
    });
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }

  /** RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publishes req_prod; true when the back end wants a notification. */
  push(): boolean {
    const old = this.mem.readU32(this.ringGpa + SRING_REQ_PROD);
    const now = this.reqProdPvt;
    this.mem.writeU32(this.ringGpa + SRING_REQ_PROD, now);
    const event = this.mem.readU32(this.ringGpa + SRING_REQ_EVENT);
    return ((now - event) >>> 0) < ((now - old) >>> 0);
  }

  /** Responses available since the last reap, consumed; sets rsp_event for the next one. */
  reap(): Response[] {
    const out: Response[] = [];
    const rp = this.mem.readU32(this.ringGpa + SRING_RSP_PROD);
    while (this.rspCons !== rp) {
      const at = this.ringGpa + SRING_HEADER_BYTES + (this.rspCons & (BLKIF_RING_SIZE - 1)) * BLKIF_ENTRY_BYTES;
      out.push({ id: this.mem.readU64(at + RSP_ID), op: this.mem.readU8(at + RSP_OPERATION), status: (this.mem.readU16(at + RSP_STATUS) << 16) >> 16 });
      this.rspCons = (this.rspCons + 1) >>> 0;
    }
    this.mem.writeU32(this.ringGpa + SRING_RSP_EVENT, (this.rspCons + 1) >>> 0);
    return out;
  }
}
