// blkback: the Dom0 half of Xen's block split driver, as a state machine over guest memory.
// It runs in the Dom0 child process (backend-main.ts); the tests also drive it in-process.
//
// What it does per notification, as Linux's xen-blkback does (drivers/block/xen-blkback/blkback.c,
// __do_block_io_op / dispatch_rw_block_io / make_response):
//   1. copy each request off the shared ring before looking at it (RING_COPY_REQUEST), so the
//      guest cannot change it under us;
//   2. check every segment's grant in the guest's grant table (ref in range, GTF_permit_access,
//      granted to our domain, not read-only when we write into it, frame inside guest RAM,
//      first_sect <= last_sect < 8) before doing any I/O - one bad grant fails the request;
//   3. do the I/O through a bounce buffer of its own: pread/pwrite on the image, and a "grant
//      copy" between the bounce buffer and the granted guest frames (GNTTABOP_copy semantics);
//   4. write responses, RING_PUSH_RESPONSES_AND_CHECK_NOTIFY, notify through the irqfd;
//   5. RING_FINAL_CHECK_FOR_REQUESTS (set req_event, look again) before sleeping.
// A producer index that claims more than RING_SIZE outstanding requests is a bogus front end
// (RING_REQUEST_PROD_OVERFLOW): the ring is given up until the front end reconnects through
// xenbus, and the back end keeps running.

import type { GuestMemory } from "../memory/guest-memory.js";
import {
  BLKIF_ENTRY_BYTES,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RING_SIZE,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  BLKIF_SECTOR_SIZE,
  DOM0_ID,
  GNTST_bad_copy_arg,
  GNTST_bad_gntref,
  GNTST_bad_page,
  GNTST_general_error,
  GNTST_permission_denied,
  GNT_DOMID,
  GNT_FLAGS,
  GNT_FRAME,
  GRANT_ENTRIES,
  GRANT_ENTRY_BYTES,
  GRANT_TABLE_OFFSET,
  GTF_permit_access,
  GTF_readonly,
  GTF_type_mask,
  REQ_ID,
  REQ_NR_SEGMENTS,
  REQ_OPERATION,
  REQ_SECTOR,
  REQ_SEG,
  RSP_ID,
  RSP_OPERATION,
  RSP_STATUS,
  SECTORS_PER_PAGE,
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
  XENBLK_SHARED_BYTES,
  XenbusStateClosed,
  XenbusStateClosing,
  XenbusStateConnected,
  XenbusStateInitWait,
  XenbusStateInitialised,
} from "./blkif.js";
import { C_BROKEN, C_LAST_GNTST, C_XENBUS_BACK, C_XENBUS_FRONT, C_XENBUS_GEN, type ControlPage } from "./control-page.js";

export interface Disk {
  readonly sizeBytes: number;
  read(into: Uint8Array, offset: number): void;
  write(from: Uint8Array, offset: number): void;
  flush(): void;
}

export interface BlkbackOptions {
  mem: GuestMemory;
  /** Guest-physical address of the ring page; the grant table page follows it. */
  ringGpa: number;
  disk: Disk;
  control: ControlPage;
  /** Raises the front end's interrupt (writes the irqfd). */
  notify: () => void;
  readOnly?: boolean;
  /** Our domain id: grants must name it (grant_entry_v1.domid). */
  domid?: number;
}

const u32 = (n: number): number => n >>> 0;

export class Blkback {
  private readonly idx: Int32Array; // req_prod, req_event, rsp_prod, rsp_event
  private readonly ring: Uint8Array; // entries after the header
  private readonly ringView: DataView;
  private readonly gnt: DataView;
  private readonly req = new Uint8Array(BLKIF_ENTRY_BYTES);
  private readonly reqView = new DataView(this.req.buffer);
  private readonly bounce = new Uint8Array(BLKIF_MAX_SEGMENTS_PER_REQUEST * XEN_PAGE_SIZE);
  private readonly capacity: number;
  private readonly domid: number;
  private reqCons = 0;
  private rspProdPvt = 0;
  private xenbusGen = 0;
  private connected = false;

  constructor(private readonly o: BlkbackOptions) {
    if (o.ringGpa % XEN_PAGE_SIZE !== 0 || !o.mem.contains(o.ringGpa, XENBLK_SHARED_BYTES)) {
      throw new Error(`xenblk ring page 0x${o.ringGpa.toString(16)} (+ grant table) is not page-aligned guest RAM`);
    }
    const page = o.mem.slice(o.ringGpa, XEN_PAGE_SIZE);
    // Index words are read and written with Atomics (a full fence on x86: the xen_mb() of ring.h).
    this.idx = new Int32Array(page.buffer, page.byteOffset, 4);
    this.ring = page.subarray(SRING_HEADER_BYTES);
    this.ringView = new DataView(page.buffer, page.byteOffset + SRING_HEADER_BYTES, XEN_PAGE_SIZE - SRING_HEADER_BYTES);
    const g = o.mem.slice(o.ringGpa + GRANT_TABLE_OFFSET, XEN_PAGE_SIZE);
    this.gnt = new DataView(g.buffer, g.byteOffset, XEN_PAGE_SIZE);
    this.capacity = Math.floor(o.disk.sizeBytes / BLKIF_SECTOR_SIZE);
    this.domid = o.domid ?? DOM0_ID;
    Atomics.store(o.control.ints, C_XENBUS_BACK, XenbusStateInitWait);
  }

  /** Handles one wake-up: xenbus state changes, then every request on the ring. */
  service(): void {
    const c = this.o.control;
    c.add("notifyIn");
    const gen = Atomics.load(c.ints, C_XENBUS_GEN);
    if (gen !== this.xenbusGen) {
      this.xenbusGen = gen;
      this.xenbusChanged(Atomics.load(c.ints, C_XENBUS_FRONT));
    }
    if (!this.connected || Atomics.load(c.ints, C_BROKEN) !== 0) return;
    for (;;) {
      const more = this.drain();
      if (more === "broken") return;
      // RING_FINAL_CHECK_FOR_REQUESTS: ask to be notified for the next request, then look again.
      Atomics.store(this.idx, SRING_REQ_EVENT / 4, u32(this.reqCons + 1) | 0);
      if (u32(Atomics.load(this.idx, SRING_REQ_PROD / 4) - this.reqCons) === 0) return;
    }
  }

  private xenbusChanged(front: number): void {
    const c = this.o.control;
    if (front === XenbusStateInitialised || front === XenbusStateConnected) {
      // The front end ran SHARED_RING_INIT: start over (BACK_RING_INIT).
      this.reqCons = 0;
      this.rspProdPvt = 0;
      this.connected = true;
      Atomics.store(c.ints, C_BROKEN, 0);
      Atomics.store(c.ints, C_XENBUS_BACK, XenbusStateConnected);
    } else if (front === XenbusStateClosing || front === XenbusStateClosed) {
      this.connected = false;
      Atomics.store(c.ints, C_XENBUS_BACK, XenbusStateClosed);
    }
  }

  /** Consumes requests up to req_prod; returns "broken" when the producer index is bogus. */
  private drain(): "ok" | "broken" {
    const c = this.o.control;
    const rp = u32(Atomics.load(this.idx, SRING_REQ_PROD / 4));
    // RING_REQUEST_PROD_OVERFLOW: more outstanding than the ring holds.
    if (u32(rp - this.rspProdPvt) > BLKIF_RING_SIZE) {
      c.add("ringErrors");
      Atomics.store(c.ints, C_BROKEN, 1);
      Atomics.store(c.ints, C_XENBUS_BACK, XenbusStateClosed);
      this.connected = false;
      return "broken";
    }
    let answered = 0;
    while (this.reqCons !== rp) {
      const slot = (this.reqCons & (BLKIF_RING_SIZE - 1)) * BLKIF_ENTRY_BYTES;
      // RING_COPY_REQUEST: a private copy, so the guest cannot change it while we check it.
      this.req.set(this.ring.subarray(slot, slot + BLKIF_ENTRY_BYTES));
      this.reqCons = u32(this.reqCons + 1);
      const status = this.handle();
      this.respond(this.reqView.getBigUint64(REQ_ID, true), this.req[REQ_OPERATION]!, status);
      answered++;
    }
    if (answered > 0) this.push();
    return "ok";
  }

  private handle(): number {
    const c = this.o.control;
    const op = this.req[REQ_OPERATION]!;
    c.add("requests");
    if (op === BLKIF_OP_FLUSH_DISKCACHE) {
      c.add("flushes");
      try {
        if (!this.o.readOnly) this.o.disk.flush();
        return BLKIF_RSP_OKAY;
      } catch {
        c.add("errors");
        return BLKIF_RSP_ERROR;
      }
    }
    if (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) {
      c.add("unsupported");
      return BLKIF_RSP_EOPNOTSUPP;
    }
    const toGuest = op === BLKIF_OP_READ;
    const nseg = this.req[REQ_NR_SEGMENTS]!;
    if (nseg === 0 || nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST || (!toGuest && this.o.readOnly)) {
      c.add("errors");
      return BLKIF_RSP_ERROR;
    }
    // Check every grant before any I/O.
    const segs: Array<{ gpa: number; len: number }> = [];
    let sectors = 0;
    for (let i = 0; i < nseg; i++) {
      const at = REQ_SEG + i * SEG_BYTES;
      const gref = this.reqView.getUint32(at + SEG_GREF, true);
      const first = this.req[at + SEG_FIRST]!;
      const last = this.req[at + SEG_LAST]!;
      const g = first > last || last >= SECTORS_PER_PAGE ? { status: GNTST_bad_copy_arg } : this.grant(gref, toGuest);
      if ("status" in g) {
        Atomics.store(c.ints, C_LAST_GNTST, g.status);
        c.add("grantErrors");
        c.add("errors");
        return BLKIF_RSP_ERROR;
      }
      const len = (last - first + 1) * BLKIF_SECTOR_SIZE;
      segs.push({ gpa: g.gpa + first * BLKIF_SECTOR_SIZE, len });
      sectors += last - first + 1;
    }
    const sector = this.reqView.getBigUint64(REQ_SECTOR, true);
    if (sector + BigInt(sectors) > BigInt(this.capacity)) {
      c.add("errors");
      return BLKIF_RSP_ERROR;
    }
    const offset = Number(sector) * BLKIF_SECTOR_SIZE;
    const bytes = sectors * BLKIF_SECTOR_SIZE;
    const bounce = this.bounce.subarray(0, bytes);
    try {
      if (toGuest) {
        this.o.disk.read(bounce, offset); // copy 1: page cache -> bounce (kernel)
        let off = 0;
        for (const s of segs) {
          this.o.mem.slice(s.gpa, s.len).set(bounce.subarray(off, off + s.len)); // copy 2: grant copy
          off += s.len;
        }
      } else {
        let off = 0;
        for (const s of segs) {
          bounce.set(this.o.mem.slice(s.gpa, s.len), off); // copy 1: grant copy
          off += s.len;
        }
        this.o.disk.write(bounce, offset); // copy 2: bounce -> page cache (kernel)
      }
    } catch {
      c.add("errors");
      return BLKIF_RSP_ERROR;
    }
    c.add("bytes", bytes);
    c.add("copiedBytes", 2 * bytes);
    return BLKIF_RSP_OKAY;
  }

  /** Checks grant `ref` for a copy to (toGuest) or from the granted frame; returns its gpa or a GNTST_*. */
  private grant(ref: number, toGuest: boolean): { gpa: number } | { status: number } {
    if (ref >= GRANT_ENTRIES) return { status: GNTST_bad_gntref };
    const at = ref * GRANT_ENTRY_BYTES;
    const flags = this.gnt.getUint16(at + GNT_FLAGS, true);
    const domid = this.gnt.getUint16(at + GNT_DOMID, true);
    const frame = this.gnt.getUint32(at + GNT_FRAME, true);
    // grant_table.c _set_status_v1: "Bad flags or dom": not permit_access, or granted to another domain.
    if ((flags & GTF_type_mask) !== GTF_permit_access || domid !== this.domid) return { status: GNTST_general_error };
    if (toGuest && flags & GTF_readonly) return { status: GNTST_permission_denied };
    const gpa = frame * XEN_PAGE_SIZE;
    if (!this.o.mem.contains(gpa, XEN_PAGE_SIZE)) return { status: GNTST_bad_page };
    // The ring and grant-table pages themselves are not data frames.
    if (gpa >= this.o.ringGpa && gpa < this.o.ringGpa + XENBLK_SHARED_BYTES) return { status: GNTST_bad_page };
    return { gpa };
  }

  private respond(id: bigint, op: number, status: number): void {
    const at = (this.rspProdPvt & (BLKIF_RING_SIZE - 1)) * BLKIF_ENTRY_BYTES;
    this.ringView.setBigUint64(at + RSP_ID, id, true);
    this.ringView.setUint8(at + RSP_OPERATION, op);
    this.ringView.setInt16(at + RSP_STATUS, status, true);
    this.rspProdPvt = u32(this.rspProdPvt + 1);
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY, then the irqfd when the front end asked for it. */
  private push(): void {
    const old = u32(Atomics.load(this.idx, SRING_RSP_PROD / 4));
    const now = this.rspProdPvt;
    Atomics.store(this.idx, SRING_RSP_PROD / 4, now | 0);
    const event = u32(Atomics.load(this.idx, SRING_RSP_EVENT / 4));
    if (u32(now - event) < u32(now - old)) {
      this.o.control.add("notifyOut");
      this.o.notify();
    }
  }
}

