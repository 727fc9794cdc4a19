// The probe's drivers run hosted (guest/src/hosted.c through src/sys/probe-hosted.ts) against
// Typervisor's own back ends, without KVM: virtio devices served by cards, the emulated ATA disk,
// a Dom0-served xenblk drive. Their register and port accesses take the path a vCPU thread's buses
// take in a VM; their DMA memory is a memfd that each card and the Dom0 process map themselves, at
// the addresses the drivers use. KVM's own part (trapping the accesses, ioeventfd, irqfd) is absent.
// Used by src/probe/hosted.test.ts and `npm run bench:backends`.

import * as sys from "../sys/index.js";
import { loadHostedProbe, type HostedProbe } from "../sys/probe-hosted.js";
import { createTransportState, createVirtioMmioDevice, startCard, type CardHandle, type CardOptions, type CardKindOptions } from "../cards/index.js";
import { parseProbeLines, type ProbeLine } from "./probe-lines.js";
import { probeHostedPath } from "./path.js";
import { Bus } from "../devices/bus.js";
import { openImage } from "../cards/blk-file.js";
import { createAtaBusDevices, createAtaState, FileAtaBackend, ATA_COMMAND_BLOCK_LEN, ATA_CONTROL_BLOCK_LEN, ATA_PRIMARY_CONTROL_BASE, type AtaDevice, type AtaMetrics } from "../devices/ata/index.js";
import { MMIO_QUEUE_NOTIFY } from "../devices/virtio/spec.js";
import { spawnDom0, type Dom0Handle } from "../dom0/spawn.js";
import { mapControl } from "../dom0/control-page.js";
import { createXenblkDoorbell } from "../dom0/doorbell.js";
import { XENBLK_DOORBELL_LEN, xenblkCmdline } from "../dom0/blkif.js";

const MiB = 1 << 20;
/** virtio.c 4 MiB, rng.c +4 MiB, nsm.c +5 MiB; ata.c/xenblk.c's scratch +4..16 MiB (ata.h). */
const DMA_BYTES = 16 * MiB;
const MMIO_BASE = 0xd0000000;
const SLOT = 0x1000;
const ATA_PORT = 0x1f0;
const XENBLK_PORT = 0x610;
/** The xenblk ring and grant pages: the last two pages of virtio.c's 4 MiB (unused by the xenblk tests). */
const XENBLK_RING_OFF = 0x3fe000;

/** A card of any kind with its config; the rig supplies the wiring. */
export type HostedDevice = CardKindOptions;
export interface HostedRig {
  /** virtio devices, one card each, in slots at MMIO_BASE + i * 4 KiB. */
  devices?: HostedDevice[];
  /** An emulated ATA disk on this image (the port I/O of the probe's ata.c goes to our AtaDevice). */
  ata?: string;
  /** A Dom0-served xenblk drive on this image (a real Dom0 process; the doorbell on the port bus). */
  dom0?: string;
}

let probe: HostedProbe | undefined;

/**
 * Maps the DMA memory where a Xen grant frame number (32 bits of page number) can name it, below
 * 2^44: the front end grants frames of its own addresses, as a guest grants guest-physical ones.
 */
function mapLow(memfd: number): bigint {
  for (let at = 0x2_0000_0000n; at < 0x800_0000_0000n; at += 0x1_0000_0000n) {
    try {
      return sys.mmap(DMA_BYTES, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED | sys.MAP_FIXED_NOREPLACE, memfd, 0, at);
    } catch (e) {
      if (!(e instanceof sys.SysError && e.code === "EEXIST")) throw e;
    }
  }
  throw new Error("no free 16 MiB below 2^43 for the hosted probe's DMA memory");
}

export interface HostedRun {
  /** The test's status (0 ok). */
  status: number;
  lines: ProbeLine[];
  /** The cards of rig.devices, in order, still running (metrics readable) until close(). */
  cards: CardHandle[];
  dom0?: Dom0Handle;
  /** The emulated ATA disk's counters (rig.ata). */
  ata?: AtaMetrics;
  /**
   * Register and port accesses that would each be a VM exit: every MMIO and port access the
   * drivers made, less the notifications a VM serves with an ioeventfd (virtio QueueNotify, the
   * xenblk doorbell), which never leave the kernel.
   */
  exits: number;
  /** This process's CPU time (every thread) while the test ran, set-up excluded, µs. */
  cpuMicros: number;
  /** Stops the cards and Dom0 and releases the memory. */
  close(): Promise<void>;
}

/**
 * Builds the devices of `rig` over one memfd of DMA memory and runs the probe test `testName`
 * hosted, on this thread (it blocks until the test ends; the cards and Dom0 run meanwhile in their
 * own threads and process). `options` are appended to the command line.
 */
export async function runHostedProbe(testName: string, rig: HostedRig, options = ""): Promise<HostedRun> {
  probe ??= loadHostedProbe(probeHostedPath());
  const memfd = sys.memfdCreate("hosted-probe", sys.MFD_CLOEXEC);
  let addr: bigint;
  try {
    sys.ftruncate(memfd, DMA_BYTES);
    addr = mapLow(memfd);
  } catch (e) {
    sys.close(memfd);
    throw e;
  }
  // "Guest-physical" = this thread's address of the memory: the drivers use their pointers as DMA
  // addresses, and each card (and Dom0) maps the memfd itself and places it at this same address.
  const gpa = Number(addr);
  const regions = [{ gpa, size: DMA_BYTES, fdOffset: 0 }];
  const slots: Array<{ base: number; dev: ReturnType<typeof createVirtioMmioDevice> }> = [];
  const cards: CardHandle[] = [];
  const fds: number[] = [];
  const cleanups: Array<() => void | Promise<void>> = [];
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const c of cards) await c.stop();
    for (const f of cleanups.reverse()) await f();
    for (const fd of fds) sys.close(fd);
    sys.munmap(addr, DMA_BYTES);
    sys.close(memfd);
  };
  try {
    const eventfd = (flags = 0): number => {
      const fd = sys.eventfd(0, sys.EFD_CLOEXEC | flags);
      fds.push(fd);
      return fd;
    };
    const cmdline: string[] = [];
    for (const [i, d] of (rig.devices ?? []).entries()) {
      const transportState = createTransportState();
      const notifyFd = eventfd();
      const irqFd = eventfd(sys.EFD_NONBLOCK);
      const base = MMIO_BASE + i * SLOT;
      slots.push({ base, dev: createVirtioMmioDevice(transportState, notifyFd) });
      cards.push(await startCard({ ...d, memfd, regions, transportState, notifyFd, irqFd, name: `${d.kind}${i}` } as CardOptions));
      cmdline.push(`virtio_mmio.device=4K@0x${base.toString(16)}:${5 + i}`);
    }
    const pio = new Bus("pio");
    let ataDevice: AtaDevice | undefined;
    if (rig.ata !== undefined) {
      const img = openImage(rig.ata, false);
      cleanups.push(() => img.close());
      const ata = createAtaBusDevices(createAtaState(), new FileAtaBackend(img.fd, img.sizeBytes), { trigger: () => {} });
      pio.insert(ATA_PORT, ATA_COMMAND_BLOCK_LEN, "ata0", ata.commandBlock);
      pio.insert(ATA_PRIMARY_CONTROL_BASE, ATA_CONTROL_BLOCK_LEN, "ata0-ctl", ata.controlBlock);
      ataDevice = ata;
      cmdline.push(`typervisor_ata=0x${ATA_PORT.toString(16)}:14`);
    }
    let dom0: Dom0Handle | undefined;
    if (rig.dom0 !== undefined) {
      const notifyFd = eventfd();
      const irqFd = eventfd(sys.EFD_NONBLOCK);
      const ringGpa = gpa + XENBLK_RING_OFF;
      const handle = await spawnDom0({ memfd, regions, ringGpa, imagePath: rig.dom0, notifyFd, irqFd });
      dom0 = handle;
      cleanups.push(() => handle.stop()); // before anything else can fail
      const control = mapControl(handle.controlFd);
      cleanups.push(() => control.unmap()); // runs first (cleanups run in reverse), while Dom0 still lives
      pio.insert(XENBLK_PORT, XENBLK_DOORBELL_LEN, "xenblk", createXenblkDoorbell(control.page, notifyFd));
      cmdline.push(xenblkCmdline(ringGpa, XENBLK_PORT, 15, handle.sectors));
    }
    const slotOf = (a: number) => {
      const s = slots[Math.floor((a - MMIO_BASE) / SLOT)];
      if (s === undefined) throw new Error(`register access at 0x${a.toString(16)} outside every slot`);
      return { s, off: a - s.base };
    };
    const word = new Uint8Array(4);
    const view = new DataView(word.buffer);
    let accesses = 0;
    let ioeventfdServed = 0;
    const cpu0 = process.cpuUsage();
    const r = probe.run(
      testName,
      [...cmdline, options].join(" ").trim(),
      addr,
      DMA_BYTES,
      (a) => {
        accesses++;
        const { s, off } = slotOf(a);
        s.dev.read(off, word);
        return view.getUint32(0, true);
      },
      (a, v) => {
        accesses++;
        const { s, off } = slotOf(a);
        if (off === MMIO_QUEUE_NOTIFY) ioeventfdServed++;
        view.setUint32(0, v, true);
        s.dev.write(off, word);
      },
      // Port I/O as the vCPU thread's PIO bus takes it (little-endian, 1, 2 or 4 bytes).
      (port, size) => {
        accesses++;
        const d = word.subarray(0, size);
        pio.read(port, d);
        return size === 1 ? d[0]! : size === 2 ? view.getUint16(0, true) : view.getUint32(0, true);
      },
      (port, size, v) => {
        accesses++;
        if (dom0 !== undefined && port === XENBLK_PORT) ioeventfdServed++; // the doorbell's notify port
        view.setUint32(0, v, true);
        pio.write(port, word.subarray(0, size));
      },
    );
    const cpu = process.cpuUsage(cpu0);
    return {
      status: r.status,
      cpuMicros: cpu.user + cpu.system,
      lines: parseProbeLines(r.output),
      cards,
      exits: accesses - ioeventfdServed,
      ...(dom0 !== undefined ? { dom0 } : {}),
      ...(ataDevice !== undefined ? { ata: ataDevice.metrics() } : {}),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

