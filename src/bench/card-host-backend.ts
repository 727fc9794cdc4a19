// The backend side of `npm run bench:cards` (see card-host.ts): a card's hot loop with nothing
// else in it. It runs either as a worker thread (workerData carries the descriptors) or as a child
// process (the descriptors arrive as fds 4–7, the IPC channel is fd 3). Per kick: block in read(2)
// on the notify eventfd (KVM's ioeventfd in a VM), pread the 4 KiB block the control word names
// from the image into "guest memory" (the memfd, mapped here), write the irq eventfd (irqfd).

import { isMainThread, parentPort, workerData } from "node:worker_threads";
import * as sys from "../sys/index.js";

export interface BackendFds {
  memfd: number;
  memBytes: number;
  notifyFd: number;
  irqFd: number;
  imageFd: number;
}

/** Control words at the start of the shared memory (Int32): stop flag, block index to read. */
export const CTL_STOP = 0;
export const CTL_BLOCK = 1;
/** Where the backend puts the block it reads. */
export const DATA_OFFSET = 4096;
export const BLOCK = 4096;

function serve(f: BackendFds, ready: () => void): void {
  const addr = sys.mmap(f.memBytes, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, f.memfd, 0);
  const mem = sys.view(addr, f.memBytes);
  const ctl = new Int32Array(mem, 0, 2);
  const data = new Uint8Array(mem, DATA_OFFSET, BLOCK);
  const counter = new Uint8Array(8);
  const one = new Uint8Array(8);
  one[0] = 1;
  ready();
  for (;;) {
    sys.read(f.notifyFd, counter);
    if (Atomics.load(ctl, CTL_STOP) !== 0) break;
    const block = Atomics.load(ctl, CTL_BLOCK);
    if (sys.pread(f.imageFd, data, block * BLOCK) !== BLOCK) throw new Error(`short read of block ${block}`);
    sys.write(f.irqFd, one);
  }
  sys.munmap(addr, f.memBytes);
}

if (!isMainThread && parentPort !== null) {
  serve(workerData as BackendFds, () => parentPort!.postMessage("ready"));
} else if (process.argv[2] === "--process" && process.send !== undefined) {
  // fds as card-host.ts passes them in spawn's stdio array.
  const memBytes = Number(process.argv[3]);
  serve({ memfd: 4, memBytes, notifyFd: 5, irqFd: 6, imageFd: 7 }, () => process.send!("ready"));
  process.disconnect();
}
