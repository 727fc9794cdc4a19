// Starts the Dom0 back-end process for one xenblk drive and hands the VMM a handle.
//
//   const dom0 = await spawnDom0({ memfd, regions, ringGpa, imagePath, notifyFd, irqFd });
//   // vCPU workers: pio.insert(XENBLK_DOORBELL_PORT, XENBLK_DOORBELL_LEN, "xenblk",
//   //   createXenblkDoorbell(mapControl(dom0.controlFd).page, notifyFd));
//   // production: vm.ioeventfd({ addr: XENBLK_DOORBELL_PORT, len: 4, fd: notifyFd, pio: true })
//   //             vm.irqfd({ fd: irqFd, gsi: irq })
//   // cmdline:    xenblkCmdline(ringGpa, XENBLK_DOORBELL_PORT, irq, dom0.sectors)
//   dom0.metrics(); dom0.cpuSeconds(); await dom0.stop();
//
// The child gets the descriptors at fixed numbers (backend-main.ts) through spawn's stdio array;
// it opens the image itself: the disk belongs to Dom0, not to the VMM.

import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { BLKIF_SECTOR_SIZE, XENBLK_SHARED_BYTES } from "./blkif.js";
import { C_READY, C_STOP, C_XENBUS_BACK, C_LAST_GNTST, C_BROKEN, createControlFd, mapControl, signal, type Dom0Metrics } from "./control-page.js";

export interface Dom0Region {
  gpa: number;
  size: number;
  fdOffset: number;
}

export interface Dom0Config {
  regions: Dom0Region[];
  ringGpa: number;
  imagePath: string;
  readOnly?: boolean;
  domid?: number;
}

export interface Dom0Options extends Dom0Config {
  memfd: number;
  /** eventfd the doorbell signals (blocking: the child blocks in read). */
  notifyFd: number;
  /** eventfd the child writes to raise the guest interrupt (an irqfd). */
  irqFd: number;
  /** How long to wait for the child to map memory (default 10 s). */
  readyTimeoutMs?: number;
}

export interface Dom0Handle {
  readonly pid: number;
  /** The control page memfd: the doorbell devices map it (mapControl). */
  readonly controlFd: number;
  /** 512-byte sectors of the image (what the command line advertises). */
  readonly sectors: number;
  metrics(): Dom0Metrics;
  /** The child's own CPU time (user + system) since it became ready, seconds. */
  cpuSeconds(): number;
  /** xenbus state of the back end (blkif.ts XenbusState*). */
  backendState(): number;
  /** GNTST_* of the last grant refused. */
  lastGrantStatus(): number;
  /** True while the ring is given up (bogus producer index) until the front end reconnects. */
  broken(): boolean;
  /** Whether the process is still running. */
  alive(): boolean;
  /** Anything the child wrote to stderr. */
  stderr(): string;
  /** Asks the child to exit and waits; kills it after `timeoutMs` (default 5 s). Idempotent. */
  stop(timeoutMs?: number): Promise<void>;
}

export class Dom0Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Dom0Error";
  }
}

export async function spawnDom0(opts: Dom0Options): Promise<Dom0Handle> {
  let size: number;
  try {
    size = statSync(opts.imagePath).size;
  } catch (e) {
    throw new Dom0Error(`dom0 image ${opts.imagePath} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
  if (size < BLKIF_SECTOR_SIZE) throw new Dom0Error(`dom0 image ${opts.imagePath} is ${size} bytes, smaller than one sector`);
  const inRam = opts.regions.some((r) => opts.ringGpa >= r.gpa && opts.ringGpa + XENBLK_SHARED_BYTES <= r.gpa + r.size);
  if (!inRam || opts.ringGpa % 4096 !== 0) throw new Dom0Error(`dom0 ring 0x${opts.ringGpa.toString(16)} is not page-aligned guest RAM`);
  const controlFd = createControlFd();
  const control = mapControl(controlFd);
  const cfg: Dom0Config = { regions: opts.regions, ringGpa: opts.ringGpa, imagePath: opts.imagePath, readOnly: opts.readOnly ?? false, domid: opts.domid ?? 0 };
  const main = fileURLToPath(new URL("./backend-main.js", import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [main, JSON.stringify(cfg)], {
    stdio: ["ignore", "inherit", "pipe", opts.memfd, opts.notifyFd, opts.irqFd, controlFd],
  });
  const errText: Buffer[] = [];
  child.stderr!.on("data", (b: Buffer) => errText.push(b));
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));
  // A VMM that exits takes its Dom0 with it (the child blocks in read(2) and would never notice).
  const killOnExit = (): void => {
    if (!exited) child.kill("SIGKILL");
  };
  process.once("exit", killOnExit);

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  while (Atomics.load(control.page.ints, C_READY) === 0) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      await exit;
      control.unmap();
      closeSync(controlFd);
      throw new Dom0Error(`dom0 back end ${exited ? "exited" : "did not become ready"}: ${Buffer.concat(errText).toString().trim()}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const cpu0 = control.page.metrics().cpuMicros;
  let stopped: Promise<void> | undefined;
  return {
    pid: child.pid!,
    controlFd,
    sectors: Math.floor(size / BLKIF_SECTOR_SIZE),
    metrics: () => control.page.metrics(),
    cpuSeconds: () => (control.page.metrics().cpuMicros - cpu0) / 1e6,
    backendState: () => Atomics.load(control.page.ints, C_XENBUS_BACK),
    lastGrantStatus: () => Atomics.load(control.page.ints, C_LAST_GNTST),
    broken: () => Atomics.load(control.page.ints, C_BROKEN) !== 0,
    alive: () => !exited,
    stderr: () => Buffer.concat(errText).toString(),
    stop(timeoutMs = 5000) {
      stopped ??= (async () => {
        if (!exited) {
          Atomics.store(control.page.ints, C_STOP, 1);
          signal(opts.notifyFd);
          const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
          await exit;
          clearTimeout(timer);
        }
        process.off("exit", killOnExit);
        control.unmap();
        closeSync(controlFd);
      })();
      return stopped;
    },
  };
}
