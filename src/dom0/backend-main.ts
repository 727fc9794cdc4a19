// The Dom0 process: a separate, privileged back-end process that owns the disk image and maps
// the guest's RAM from the memfd the VMM passes it (as Xen's Dom0 can map any guest page), then
// serves the blkif ring (backend.ts), restricting itself to the frames the guest granted.
//
// Inherited descriptors (spawn.ts): 3 = guest RAM memfd, 4 = notify eventfd (the doorbell; an
// ioeventfd in production), 5 = irq eventfd (an irqfd), 6 = control page memfd.
// argv[2] = JSON Dom0Config (spawn.ts). Blocks in read(2) on the notify eventfd between requests.

import { closeSync, constants, fstatSync, openSync } from "node:fs";
import * as sys from "../sys/index.js";
import { GuestMemory, type RegionInit } from "../memory/guest-memory.js";
import { Blkback, type Disk } from "./backend.js";
import { C_READY, C_STOP, mapControl, signal } from "./control-page.js";
import type { Dom0Config } from "./spawn.js";

export const FD_MEMFD = 3;
export const FD_NOTIFY = 4;
export const FD_IRQ = 5;
export const FD_CONTROL = 6;

const cfg = JSON.parse(process.argv[2] ?? "{}") as Dom0Config;
const control = mapControl(FD_CONTROL);
const page = control.page;

const imageFd = openSync(cfg.imagePath, cfg.readOnly ? constants.O_RDONLY : constants.O_RDWR);
const sizeBytes = fstatSync(imageFd).size;
const disk: Disk = {
  sizeBytes,
  read(into, offset) {
    for (let done = 0; done < into.byteLength; ) {
      const n = sys.pread(imageFd, into.subarray(done), offset + done);
      if (n === 0) throw new Error(`image ended at ${offset + done}`);
      done += n;
    }
  },
  write(from, offset) {
    for (let done = 0; done < from.byteLength; ) {
      const n = sys.pwrite(imageFd, from.subarray(done), offset + done);
      if (n === 0) throw new Error(`image refused bytes at ${offset + done}`);
      done += n;
    }
  },
  flush() {
    sys.fdatasync(imageFd);
  },
};

const mappings: Array<[bigint, number]> = [];
const regions: RegionInit[] = cfg.regions.map((r) => {
  const addr = sys.mmap(r.size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, FD_MEMFD, r.fdOffset);
  mappings.push([addr, r.size]);
  // Each view lives as long as its mapping: both end when this process exits.
  return { gpa: r.gpa, bytes: new Uint8Array(sys.view(addr, r.size)), fd: FD_MEMFD, fdOffset: r.fdOffset, hostAddr: addr };
});
const mem = new GuestMemory(regions);
const back = new Blkback({
  mem,
  ringGpa: cfg.ringGpa,
  disk,
  control: page,
  readOnly: cfg.readOnly ?? false,
  domid: cfg.domid ?? 0,
  notify: () => signal(FD_IRQ),
});

const cpu = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
page.set("cpuMicros", cpu());
Atomics.store(page.ints, C_READY, 1);
const counter = new Uint8Array(8);
for (;;) {
  sys.read(FD_NOTIFY, counter);
  if (Atomics.load(page.ints, C_STOP) !== 0) break;
  try {
    back.service();
  } catch (e) {
    // A back end that cannot go on says why; the VMM sees the process exit.
    process.stderr.write(`dom0 blkback: ${(e as Error).message}\n`);
    process.exitCode = 1;
    break;
  }
  page.set("cpuMicros", cpu());
}
page.set("cpuMicros", cpu());
for (const [addr, size] of mappings) sys.munmap(addr, size);
closeSync(imageFd);
control.unmap();
