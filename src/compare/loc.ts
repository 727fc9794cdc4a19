// The privileged code on each I/O path: which processes touch a request, what they may do, and
// how many lines of our source they run for it. Lines are counted from the real files at report
// time (non-blank lines that are not only a comment), so the figure follows the code.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { IoPath } from "./run.js";

export interface PathProcess {
  /** What runs the code. */
  process: string;
  /** What it is allowed to do, in words. */
  privileges: string;
  /** Source files (relative to the package root) on the request path in that process. */
  files: string[];
}

export interface PathAnatomy {
  path: IoPath;
  /** In Xen / Nitro terms. */
  model: string;
  processes: PathProcess[];
  /** Payload copies per request, by construction of the code (each measured by its unit tests). */
  copiesPerRequest: number;
  copiesHow: string;
  notes: string;
}

const VMM_PRIV = "root-equivalent: /dev/kvm, every guest page mapped, every image fd, the API socket";

export const PATH_ANATOMY: Record<IoPath, PathAnatomy> = {
  emulated: {
    path: "emulated",
    model: "full emulation (Xen HVM + qemu-dm without PV drivers)",
    processes: [
      {
        process: "VMM, on the vCPU thread that took the exit",
        privileges: VMM_PRIV,
        files: ["src/kvm/run.ts", "src/vmm/exit-loop.ts", "src/devices/bus.ts", "src/devices/shared-state.ts", "src/devices/ata/device.ts", "src/devices/ata/file-backend.ts", "src/sys/libc.ts"],
      },
    ],
    copiesPerRequest: 2,
    copiesHow: "pread into the device's sector buffer, then buffer -> kvm_run I/O data on every Data-register exit (src/devices/ata metrics.copiedBytes)",
    notes: "every register access is a VM exit; the vCPU waits for the disk",
  },
  dom0: {
    path: "dom0",
    model: "Xen split driver: blkfront -> shared ring + grants -> Dom0 blkback",
    processes: [
      {
        process: "VMM (doorbell + xenbus port; no code per request once the doorbell is an ioeventfd)",
        privileges: VMM_PRIV,
        files: ["src/dom0/doorbell.ts", "src/dom0/control-page.ts"],
      },
      {
        process: "Dom0 back-end process (child of the VMM)",
        privileges: "owns the image file; maps ALL guest RAM (as Dom0 may map any guest page) and restricts itself to granted frames",
        files: ["src/dom0/backend-main.ts", "src/dom0/backend.ts", "src/dom0/blkif.ts", "src/dom0/control-page.ts", "src/memory/guest-memory.ts", "src/sys/libc.ts"],
      },
    ],
    copiesPerRequest: 2,
    copiesHow: "pread/pwrite through Dom0's bounce buffer, plus the grant copy between that buffer and the granted guest frame (src/dom0 metrics.copiedBytes = 2 x bytes)",
    notes: "a real Dom0 is a whole Linux kernel + toolstack; here it is one process, so its line count is a floor, not Xen's",
  },
  card: {
    path: "card",
    model: "Nitro-style card: virtio-blk backend off the vCPU, ioeventfd/irqfd",
    processes: [
      {
        process: "VMM card worker thread (same process as the VMM)",
        privileges: VMM_PRIV,
        files: ["src/cards/card-worker.ts", "src/cards/card-loop.ts", "src/cards/notify.ts", "src/cards/blk-file.ts", "src/devices/virtio/queue.ts", "src/devices/virtio/blk/kind.ts", "src/devices/virtio/blk/device.ts", "src/memory/guest-memory.ts", "src/sys/libc.ts"],
      },
    ],
    copiesPerRequest: 1,
    copiesHow: "pread/pwrite straight between the image and guest RAM (zero-copy view of the memfd)",
    notes: "the card is a thread of the VMM today (src/cards/README.md: no process isolation yet)",
  },
};

/** Lines that are code: not blank, not only a // or block-comment line. */
export function countCodeLines(text: string): number {
  let n = 0;
  let inBlock = false;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (inBlock) {
      if (line.includes("*/")) {
        inBlock = false;
        if (line.slice(line.indexOf("*/") + 2).trim().length > 0) n++;
      }
      continue;
    }
    if (line === "" || line.startsWith("//")) continue;
    if (line.startsWith("/*")) {
      if (!line.includes("*/")) inBlock = true;
      else if (line.slice(line.indexOf("*/") + 2).trim().length > 0) n++;
      continue;
    }
    n++;
  }
  return n;
}

export interface LocCount {
  file: string;
  lines: number | null; // null: the file is not in this checkout
}

/** Counts each file under `root`; files named twice (in two processes) are counted once in `total`. */
export function countPathLines(root: string, anatomy: PathAnatomy): { perProcess: Array<{ process: string; files: LocCount[]; lines: number }>; total: number } {
  const seen = new Map<string, number>();
  const perProcess = anatomy.processes.map((p) => {
    const files = p.files.map((f) => {
      const abs = join(root, f);
      const lines = existsSync(abs) ? countCodeLines(readFileSync(abs, "utf8")) : null;
      if (lines !== null) seen.set(f, lines);
      return { file: f, lines };
    });
    return { process: p.process, files, lines: files.reduce((s, f) => s + (f.lines ?? 0), 0) };
  });
  return { perProcess, total: [...seen.values()].reduce((a, b) => a + b, 0) };
}
