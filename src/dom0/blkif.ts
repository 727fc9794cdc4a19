// The Xen block split-driver wire format, as the real headers define it, plus the small parts of
// the Xen machinery we model in its place (the event channel is a doorbell port, xenbus is a state
// port, the grant table is one guest page). Layouts are x86-64 (LP64):
//
//   xen/include/public/io/ring.h   DEFINE_RING_TYPES: struct sring { RING_IDX req_prod, req_event,
//                                  rsp_prod, rsp_event; uint8_t pvt[4]; uint8_t __pad[44]; entries }
//   xen/include/public/io/blkif.h  struct blkif_request / blkif_request_segment / blkif_response
//   xen/include/public/grant_table.h  struct grant_entry_v1 { uint16_t flags; domid_t domid; uint32_t frame; }
//   xen/include/public/io/xenbus.h enum xenbus_state
//
// Our protocol ("typervisor xenblk", documented in docs/xen-vs-nitro.md and guest/README.md):
//   kernel command line:  typervisor_xenblk=<ring gpa>@<port>:<irq>:<sectors>
//   ring gpa + 0x0000     the shared ring page (front end runs SHARED_RING_INIT on it)
//   ring gpa + 0x1000     the grant table: one page of 512 grant_entry_v1 (what Xen's
//                         GNTTABOP_setup_table would map; here it sits at a fixed place)
//   port + 0 (4 bytes)    event-channel doorbell: any write notifies the back end (an ioeventfd
//                         in production, so it costs no userspace exit; else the VMM signals it)
//   port + 4 (4 bytes)    xenbus state: the front end writes XenbusStateInitialised (3) after
//                         SHARED_RING_INIT, Closing (5) when done; a read returns the back end's
//                         state (Connected = 4 once it serves the ring, Closed = 6 when it gave up)
//   irq                   back end -> front end notification (irqfd); the probe polls instead.

// ---- ring.h -----------------------------------------------------------------------------------
export const XEN_PAGE_SIZE = 4096; // ring.h: XEN_PAGE_SHIFT 12
export const SRING_REQ_PROD = 0;
export const SRING_REQ_EVENT = 4;
export const SRING_RSP_PROD = 8;
export const SRING_RSP_EVENT = 12;
/** ring.h: 4 x RING_IDX + pvt[4] + __pad[44] = 64 bytes before ring[]. */
export const SRING_HEADER_BYTES = 64;

// ---- blkif.h ----------------------------------------------------------------------------------
export const BLKIF_OP_READ = 0;
export const BLKIF_OP_WRITE = 1;
export const BLKIF_OP_WRITE_BARRIER = 2;
export const BLKIF_OP_FLUSH_DISKCACHE = 3;
export const BLKIF_OP_DISCARD = 5;
export const BLKIF_OP_INDIRECT = 6;
export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
export const BLKIF_RSP_EOPNOTSUPP = -2;
export const BLKIF_RSP_ERROR = -1;
export const BLKIF_RSP_OKAY = 0;
/** blkif.h: "sectors" are always 512 bytes, whatever the backing device's sector size. */
export const BLKIF_SECTOR_SIZE = 512;
/** A segment addresses sectors 0..7 of one 4 KiB frame (first_sect/last_sect, inclusive). */
export const SECTORS_PER_PAGE = XEN_PAGE_SIZE / BLKIF_SECTOR_SIZE;

// struct blkif_request (x86-64): operation u8 @0, nr_segments u8 @1, handle u16 @2, id u64 @8,
// sector_number u64 @16, seg[11] @24, each { gref u32 @0, first_sect u8 @4, last_sect u8 @5 } 8 bytes.
export const REQ_OPERATION = 0;
export const REQ_NR_SEGMENTS = 1;
export const REQ_HANDLE = 2;
export const REQ_ID = 8;
export const REQ_SECTOR = 16;
export const REQ_SEG = 24;
export const SEG_BYTES = 8;
export const SEG_GREF = 0;
export const SEG_FIRST = 4;
export const SEG_LAST = 5;
export const BLKIF_REQUEST_BYTES = REQ_SEG + BLKIF_MAX_SEGMENTS_PER_REQUEST * SEG_BYTES; // 112
// struct blkif_response: id u64 @0, operation u8 @8, status i16 @10 (16 bytes).
export const RSP_ID = 0;
export const RSP_OPERATION = 8;
export const RSP_STATUS = 10;
/** union blkif_sring_entry = max(request, response). */
export const BLKIF_ENTRY_BYTES = BLKIF_REQUEST_BYTES;
/** ring.h __RING_SIZE: entries that fit after the header, rounded down to a power of two: 4032/112 = 36 -> 32. */
export const BLKIF_RING_SIZE = rd32(Math.floor((XEN_PAGE_SIZE - SRING_HEADER_BYTES) / BLKIF_ENTRY_BYTES));

function rd32(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

// ---- grant_table.h (v1) ----------------------------------------------------------------------
export const GRANT_ENTRY_BYTES = 8;
export const GNT_FLAGS = 0;
export const GNT_DOMID = 2;
export const GNT_FRAME = 4;
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_type_mask = 3;
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
/** One grant-table page: 4096 / 8 entries. */
export const GRANT_ENTRIES = XEN_PAGE_SIZE / GRANT_ENTRY_BYTES;
/** Our back end runs as domain 0 (xen.h DOMID_FIRST_RESERVED is 0x7ff0; Dom0 is 0). */
export const DOM0_ID = 0;
// grant_table.h GNTST_* (the status a GNTTABOP_copy would return), kept per failed request.
export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_permission_denied = -8;
export const GNTST_bad_page = -9;
export const GNTST_bad_copy_arg = -10;

// ---- xenbus.h ---------------------------------------------------------------------------------
export const XenbusStateUnknown = 0;
export const XenbusStateInitialising = 1;
export const XenbusStateInitWait = 2;
export const XenbusStateInitialised = 3;
export const XenbusStateConnected = 4;
export const XenbusStateClosing = 5;
export const XenbusStateClosed = 6;

// ---- our layout --------------------------------------------------------------------------------
/** The grant table page follows the ring page. */
export const GRANT_TABLE_OFFSET = XEN_PAGE_SIZE;
/** Guest RAM the VMM reserves for the device at ring gpa: ring + grant table. */
export const XENBLK_SHARED_BYTES = 2 * XEN_PAGE_SIZE;
/** Doorbell ports: event channel at +0, xenbus state at +4. 0x610 is unassigned on microvm and PC (DESIGN.md §6 lists 0x600 as free; 0x600 is the exits test's). */
export const XENBLK_DOORBELL_PORT = 0x610;
export const XENBLK_DOORBELL_LEN = 8;
export const DOORBELL_NOTIFY = 0;
export const DOORBELL_XENBUS = 4;

/** The command-line entry that describes the device to the probe guest. */
export function xenblkCmdline(ringGpa: number, port: number, irq: number, sectors: number): string {
  return `typervisor_xenblk=0x${ringGpa.toString(16)}@0x${port.toString(16)}:${irq}:${sectors}`;
}
