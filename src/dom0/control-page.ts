// The control page shared by the VMM, its doorbell devices and the Dom0 back-end process: one
// 4 KiB memfd that each side maps. Plain data, so the VMM's vCPU workers (doorbell writes), the
// VMM main thread (metrics, stop) and the child process all see the same words.

import * as sys from "../sys/index.js";

export const CONTROL_BYTES = 4096;
// Int32 words.
export const C_STOP = 0; // VMM -> back end: exit
export const C_XENBUS_GEN = 1; // bumped by the doorbell on each front-end state write
export const C_XENBUS_FRONT = 2; // the front end's last xenbus state
export const C_XENBUS_BACK = 3; // the back end's xenbus state (read by the front end)
export const C_READY = 4; // the back end mapped memory and waits
export const C_LAST_GNTST = 5; // GNTST_* of the last refused grant
export const C_BROKEN = 6; // 1 while the ring is given up (bogus producer index)
export const C_WORDS = 16;
// Float64 metrics after the Int32 words.
export const METRIC_NAMES = [
  "requests", // requests answered (any status)
  "bytes", // payload bytes moved
  "errors", // BLKIF_RSP_ERROR answers
  "grantErrors", // requests refused because of a grant check
  "ringErrors", // bogus producer indices seen
  "unsupported", // BLKIF_RSP_EOPNOTSUPP answers
  "flushes",
  "copiedBytes", // payload bytes copied: kernel <-> bounce buffer + grant copy bounce <-> guest
  "notifyIn", // doorbell notifications consumed
  "notifyOut", // irqfd notifications sent
  "cpuMicros", // the back end's own user+system CPU time (process.cpuUsage), µs
] as const;
export type Dom0Metrics = Record<(typeof METRIC_NAMES)[number], number>;
const METRICS_OFFSET = C_WORDS * 4;

export class ControlPage {
  readonly ints: Int32Array;
  readonly f64: Float64Array;

  /** `buf` is a view of the mapped page (4096 bytes). */
  constructor(buf: ArrayBuffer) {
    if (buf.byteLength < CONTROL_BYTES) throw new Error(`control page must be ${CONTROL_BYTES} bytes`);
    this.ints = new Int32Array(buf, 0, C_WORDS);
    this.f64 = new Float64Array(buf, METRICS_OFFSET, METRIC_NAMES.length);
  }

  add(name: (typeof METRIC_NAMES)[number], n = 1): void {
    this.f64[METRIC_NAMES.indexOf(name)]! += n;
  }

  set(name: (typeof METRIC_NAMES)[number], v: number): void {
    this.f64[METRIC_NAMES.indexOf(name)] = v;
  }

  metrics(): Dom0Metrics {
    const m = {} as Dom0Metrics;
    METRIC_NAMES.forEach((n, i) => (m[n] = this.f64[i]!));
    return m;
  }
}

export interface MappedControl {
  page: ControlPage;
  unmap(): void;
}

/** Maps the control memfd `fd` (shared) and returns its page. */
export function mapControl(fd: number): MappedControl {
  const addr = sys.mmap(CONTROL_BYTES, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  // The view lives until unmap(), which the owner calls last.
  const page = new ControlPage(sys.view(addr, CONTROL_BYTES));
  let done = false;
  return {
    page,
    unmap() {
      if (!done) sys.munmap(addr, CONTROL_BYTES);
      done = true;
    },
  };
}

/** Creates the control memfd (zeroed). */
export function createControlFd(): number {
  const fd = sys.memfdCreate("typervisor-dom0-control", sys.MFD_CLOEXEC);
  sys.ftruncate(fd, CONTROL_BYTES);
  return fd;
}

/** Signals an eventfd once (eventfd(2): an 8-byte counter add). */
export function signal(fd: number): void {
  const one = new Uint8Array(8);
  one[0] = 1;
  sys.write(fd, one);
}
