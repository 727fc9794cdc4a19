// Guest RAM backed by a memfd: one file holds all of guest memory, each RAM region is a shared
// mapping of its slice of that file, exposed to JavaScript as a zero-copy view. Because the
// pages belong to a file, a card running in another process can map the very same memory.

import * as sys from "../sys/index.js";
import { GuestMemory, GuestMemoryError, type RegionInit } from "./guest-memory.js";

const PAGE_SIZE = 4096;

export interface MemfdGuestMemory {
  memory: GuestMemory;
  /** The memfd holding every region (regions are at consecutive offsets, in address order). */
  fd: number;
  /** Unmaps every region and closes the memfd. The views must not be used afterwards. */
  close(): void;
}

/**
 * Creates memfd-backed guest memory for `layout` ([guest-physical start, size] pairs, each
 * page-aligned). Pages are not touched: the host commits memory only as the guest uses it.
 */
export function createMemfdGuestMemory(layout: Array<[gpa: number, size: number]>, name = "typervisor-guest-ram"): MemfdGuestMemory {
  for (const [gpa, size] of layout) {
    if (gpa % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || size <= 0) {
      throw new GuestMemoryError(`guest memory region 0x${gpa.toString(16)}+0x${size.toString(16)} is not page-aligned`);
    }
  }
  const total = layout.reduce((s, [, size]) => s + size, 0);
  const fd = sys.memfdCreate(name, sys.MFD_CLOEXEC);
  const mappings: Array<[bigint, number]> = [];
  try {
    sys.ftruncate(fd, total);
    const regions: RegionInit[] = [];
    let offset = 0;
    for (const [gpa, size] of [...layout].sort((a, b) => a[0] - b[0])) {
      const addr = sys.mmap(size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED | sys.MAP_NORESERVE, fd, offset);
      mappings.push([addr, size]);
      // The view aliases the mapping for as long as it exists; close() below is the only
      // place that unmaps it, and it is the owner's last use of the memory.
      regions.push({ gpa, bytes: new Uint8Array(sys.view(addr, size)), fd, fdOffset: offset, hostAddr: addr });
      offset += size;
    }
    const memory = new GuestMemory(regions);
    let closed = false;
    return {
      memory,
      fd,
      close() {
        if (closed) return;
        closed = true;
        for (const [addr, size] of mappings) sys.munmap(addr, size);
        sys.close(fd);
      },
    };
  } catch (e) {
    for (const [addr, size] of mappings) sys.munmap(addr, size);
    sys.close(fd);
    throw e;
  }
}
