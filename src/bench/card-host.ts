// npm run bench:cards — where should a card run: in a worker thread of the VMM, or in a child
// process of its own (crosvm's model)? Both host the same hot loop (card-host-backend.ts): wait on
// a notify eventfd, pread a 4 KiB block from an image on tmpfs into memfd-backed "guest memory",
// signal an irq eventfd. This side plays the guest and KVM: it names a block, writes the notify
// eventfd (what KVM's ioeventfd does on a QueueNotify write), blocks on the irq eventfd (what
// KVM's irqfd consumes) and checks that the right block arrived. KVM itself is not needed: its part
// of the path is the same whichever host the card has, so what differs is measured here.
//
// Per host: start-up (spawn to ready, descriptors handed over), memory (the worker's RSS added to
// the VMM; the child's whole RSS), round-trip latency p50/p99 and kicks/s. Alternating runs,
// median of BENCH_RUNS (default 5). Prints progress on stderr, a table, then one JSON object as the
// last line on stdout, with the process/worker ratios. It needs no KVM, but refuses to run inside
// the box all the same (guard.ts): under QEMU TCG the syscalls, futexes and context switches it
// times are translated code, and the ratios would describe the emulator, not a host.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import * as sys from "../sys/index.js";
import { BLOCK, CTL_BLOCK, CTL_STOP, DATA_OFFSET, type BackendFds } from "./card-host-backend.js";
import { benchEntry, elapsed } from "./guard.js";

const HELP = `npm run bench:cards — where a device card runs best: a worker thread of the VMM or a child process

Measures the card's hot loop hosted both ways: per kick the back end waits on a notify eventfd (KVM's
ioeventfd in a VM), preads the 4 KiB block named in shared memory from an image on tmpfs into
memfd-backed guest memory, and signals an irq eventfd (KVM's irqfd); this process plays the guest.
Per host: start-up time, memory added, round-trip latency p50/p99, kicks/s; runs alternate which
host goes first; the result is the process/worker ratios (docs/benchmarks.md).

Needs no /dev/kvm (KVM's part of the path is the same for both hosts), but it needs a real host:
inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses, as every instruction timed there is translated.

Environment: BENCH_CARDS_KICKS (timed kicks per run, default 20000), BENCH_RUNS (runs per host, 5).
Output: progress on stderr; a table, then one JSON object as the last line, on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (the box).
`;

const progress = benchEntry({
  name: "bench:cards",
  what: "worker-thread vs child-process card hosting",
  runOn: "a real machine, not an emulator (it needs no KVM)",
  help: HELP,
});

const KICKS = Number(process.env["BENCH_CARDS_KICKS"] ?? 20_000);
const RUNS = Number(process.env["BENCH_RUNS"] ?? 5);
const IMAGE_BLOCKS = 4096; // 16 MiB image
const MEM_BYTES = 2 * 1024 * 1024;
const backendUrl = new URL("./card-host-backend.js", import.meta.url);

type Host = "worker" | "process";

interface Started {
  stop(): Promise<void>;
  /** Resident memory this host adds, KiB. */
  rssKiB(): number;
}

interface RunResult {
  startMs: number;
  rssMiB: number;
  p50Us: number;
  p99Us: number;
  kicksPerS: number;
}

function vmRssKiB(pid: number | "self"): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

async function startWorker(fds: BackendFds): Promise<Started> {
  const before = vmRssKiB("self");
  const w = new Worker(backendUrl, { workerData: fds, name: "bench-card" });
  await new Promise<void>((resolve, reject) => {
    w.once("message", () => resolve());
    w.once("error", reject);
    w.once("exit", (code) => reject(new Error(`worker exited (${code}) before it was ready`)));
  });
  const exited = new Promise<void>((resolve) => w.once("exit", () => resolve()));
  return { stop: () => exited, rssKiB: () => vmRssKiB("self") - before };
}

async function startProcess(fds: BackendFds): Promise<Started> {
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(backendUrl), "--process", String(fds.memBytes)], {
    // Child fd 3 = IPC, 4 = memfd, 5 = notify, 6 = irq, 7 = image (card-host-backend.ts).
    stdio: ["ignore", "inherit", "inherit", "ipc", fds.memfd, fds.notifyFd, fds.irqFd, fds.imageFd],
  });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`card process exited (${code}) before it was ready`)));
  });
  const exited = new Promise<void>((resolve, reject) =>
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`card process exited with ${code}`)))),
  );
  return { stop: () => exited, rssKiB: () => vmRssKiB(child.pid!) };
}

async function runOnce(host: Host, imageFd: number, expected: Uint32Array): Promise<RunResult> {
  const memfd = sys.memfdCreate("bench-cards", sys.MFD_CLOEXEC);
  const notifyFd = sys.eventfd(0, sys.EFD_CLOEXEC);
  const irqFd = sys.eventfd(0, sys.EFD_CLOEXEC);
  sys.ftruncate(memfd, MEM_BYTES);
  const addr = sys.mmap(MEM_BYTES, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, memfd, 0);
  try {
    const mem = sys.view(addr, MEM_BYTES);
    const ctl = new Int32Array(mem, 0, 2);
    const head = new DataView(mem, DATA_OFFSET, 8);
    const fds: BackendFds = { memfd, memBytes: MEM_BYTES, notifyFd, irqFd, imageFd };
    const one = new Uint8Array(8);
    one[0] = 1;
    const t0 = process.hrtime.bigint();
    const started = host === "worker" ? await startWorker(fds) : await startProcess(fds);
    const startMs = Number(process.hrtime.bigint() - t0) / 1e6;
    let stopped = false;
    const stop = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      Atomics.store(ctl, CTL_STOP, 1);
      sys.write(notifyFd, one);
      await started.stop();
    };
    try {
      const counter = new Uint8Array(8);
      const lat = new Float64Array(KICKS);
      let rng = 0x9e3779b9;
      const kick = (block: number): void => {
        Atomics.store(ctl, CTL_BLOCK, block);
        sys.write(notifyFd, one);
        sys.read(irqFd, counter);
        // The block's first word is its index (the image is written so): the read really happened.
        const got = head.getUint32(0, true);
        if (got !== expected[block]) throw new Error(`${host}: block ${block} arrived as ${got}`);
      };
      for (let i = 0; i < 500; i++) kick(i % IMAGE_BLOCKS); // warm-up (JIT, page cache)
      const tRun = process.hrtime.bigint();
      for (let i = 0; i < KICKS; i++) {
        rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0;
        const block = rng % IMAGE_BLOCKS;
        const a = process.hrtime.bigint();
        kick(block);
        lat[i] = Number(process.hrtime.bigint() - a) / 1e3;
      }
      const seconds = Number(process.hrtime.bigint() - tRun) / 1e9;
      const rssMiB = started.rssKiB() / 1024;
      await stop();
      lat.sort();
      return {
        startMs,
        rssMiB,
        p50Us: lat[Math.floor(KICKS * 0.5)]!,
        p99Us: lat[Math.floor(KICKS * 0.99)]!,
        kicksPerS: KICKS / seconds,
      };
    } finally {
      // A failed run still ends its host: a child process would otherwise wait on its eventfd forever.
      await stop().catch(() => undefined);
    }
  } finally {
    sys.munmap(addr, MEM_BYTES);
    for (const fd of [memfd, notifyFd, irqFd]) sys.close(fd);
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];

async function main(): Promise<number> {
  const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
  const dir = mkdtempSync(join(base, "typervisor-bench-cards-"));
  try {
    const image = new Uint8Array(IMAGE_BLOCKS * BLOCK);
    const dv = new DataView(image.buffer);
    const expected = new Uint32Array(IMAGE_BLOCKS);
    for (let b = 0; b < IMAGE_BLOCKS; b++) {
      expected[b] = (b * 2654435761) >>> 0;
      dv.setUint32(b * BLOCK, expected[b]!, true);
    }
    const path = join(dir, "card.img");
    writeFileSync(path, image);
    const imageFd = sys.open(path, sys.O_RDONLY | sys.O_CLOEXEC);
    const results: Record<Host, RunResult[]> = { worker: [], process: [] };
    progress(`${RUNS} runs of each host, ${KICKS} kicks of 4 KiB each, image on ${dir}`);
    try {
      for (let r = 0; r < RUNS; r++) {
        // Alternate which host goes first, so drift on a noisy machine falls on both.
        const order: Host[] = r % 2 === 0 ? ["worker", "process"] : ["process", "worker"];
        for (const host of order) {
          const t0 = process.hrtime.bigint();
          progress(`run ${r + 1}/${RUNS}: ${host} (${KICKS} kicks)`);
          const x = await runOnce(host, imageFd, expected);
          results[host].push(x);
          progress(`run ${r + 1}/${RUNS}: ${host} done in ${elapsed(t0)}: p50 ${x.p50Us.toFixed(1)} µs, ${Math.round(x.kicksPerS)} kicks/s`);
        }
      }
    } finally {
      sys.close(imageFd);
    }
    const keys = ["startMs", "rssMiB", "p50Us", "p99Us", "kicksPerS"] as const;
    const label: Record<(typeof keys)[number], string> = {
      startMs: "start-up, ms",
      rssMiB: "memory added, MiB",
      p50Us: "round trip p50, µs",
      p99Us: "round trip p99, µs",
      kicksPerS: "kicks/s",
    };
    const out: Record<string, unknown> = { bench: "cards", kicks: KICKS, runs: RUNS, cpus: (await import("node:os")).cpus().length };
    const fmt = (xs: number[]): string => {
      const [lo, hi] = range(xs);
      const d = median(xs) >= 100 ? 0 : 1;
      return `${median(xs).toFixed(d)} (${lo.toFixed(d)}–${hi.toFixed(d)})`.padEnd(26);
    };
    const lines = [`card host: worker thread vs child process, median of ${RUNS} (min–max), ${KICKS} kicks of 4 KiB each`];
    lines.push(`${"".padEnd(20)} ${"worker".padEnd(26)} ${"process".padEnd(26)} process/worker`);
    for (const k of keys) {
      const w = results.worker.map((x) => x[k]);
      const p = results.process.map((x) => x[k]);
      const ratio = median(p) / median(w);
      out[`worker_${k}`] = Number(median(w).toFixed(2));
      out[`process_${k}`] = Number(median(p).toFixed(2));
      out[`${k}_ratio_process_vs_worker`] = Number(ratio.toFixed(3));
      lines.push(`${label[k].padEnd(20)} ${fmt(w)} ${fmt(p)} ${ratio.toFixed(3)}`);
    }
    process.stdout.write(lines.join("\n") + "\n" + JSON.stringify(out) + "\n");
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench:cards failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
