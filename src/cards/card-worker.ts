// The card worker: one per device, off the vCPU threads (see card.ts). Blocks in read(2) on the
// queue-notify eventfd, so a guest kick costs no exit and no main-thread work.

import { parentPort, workerData } from "node:worker_threads";
import * as sys from "../sys/index.js";
import { GuestMemory, type RegionInit } from "../memory/guest-memory.js";
import { TransportState } from "../devices/virtio/mmio.js";
import { SplitQueue, VirtqueueError } from "../devices/virtio/queue.js";
import type { CreateModel, ModelContext } from "../devices/virtio/device-kind.js";
import {
  F_RING_EVENT_IDX,
  F_RING_INDIRECT_DESC,
  INT_USED_BUFFER,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER_OK,
  bit,
} from "../devices/virtio/spec.js";
import { signalEventfd, type CardWorkerData } from "./card.js";
import { CTL_LIMITER_GEN, CTL_STOP, CTL_WORDS, readLimiterConfig } from "./control-block.js";
import { CardMetrics } from "./metrics.js";
import { RateLimiter } from "./rate-limiter.js";

/** How often the worker refreshes its cpuMicros metric at most, ms. */
const CPU_SAMPLE_MS = 5;
/** Longest sleep while throttled, so stop and limiter updates are seen promptly. */
const THROTTLE_POLL_MS = 20;
/** FailureCode stored in the transport when the device breaks (for logs; not guest-visible). */
const FAILURE_RING = 2;
const FAILURE_INTERNAL = 3;

const d = workerData as CardWorkerData;
const ctl = new Int32Array(d.control, 0, CTL_WORDS);
const transport = new TransportState(d.transportState);
const metrics = new CardMetrics(d.metrics);

// Map guest RAM from the memfd: this thread's own mappings of the same pages the vCPUs use.
const mappings: Array<[bigint, number]> = [];
const regions: RegionInit[] = d.regions.map((r) => {
  const addr = sys.mmap(r.size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, d.memfd, r.fdOffset);
  mappings.push([addr, r.size]);
  // The view lives exactly as long as the mapping: both end when this worker finishes below.
  return { gpa: r.gpa, bytes: new Uint8Array(sys.view(addr, r.size)), fd: d.memfd, fdOffset: r.fdOffset, hostAddr: addr };
});
const mem = new GuestMemory(regions);

const limiter = new RateLimiter(readLimiterConfig(d.control));
let limiterGen = Atomics.load(ctl, CTL_LIMITER_GEN);
const stats: ModelContext<unknown>["stats"] = {
  request: (bytes) => {
    metrics.add("requests");
    metrics.add("bytes", bytes);
  },
  error: () => metrics.add("errors"),
  throttled: () => metrics.add("throttled"),
};

// The device model of this card's kind (device-kind.ts): its module names itself in workerData.
const { createModel } = (await import(d.model)) as { createModel: CreateModel<unknown> };
const device = createModel({
  mem,
  data: d.data,
  stats,
  limiter,
  control: d.control,
  driverFeatures: () => transport.driverFeatures,
  resetCount: () => transport.resetCount,
});

/** The device broke during the pass that saw reset generation `gen` (unless the driver reset it since). */
function fail(code: number, gen: number): void {
  if (!transport.markNeedsReset(code, gen)) return;
  metrics.add("needsReset");
  metrics.add("interrupts");
  signalEventfd(d.irqFd);
}

/**
 * Answers every queue inside the transport's service bracket (a reset waits for it to end).
 * Returns ms to wait before the next pass when throttled, 0 to wait for the next event, or -1
 * when a queue stopped at its bound with work left (the next pass comes at once).
 */
function service(): number {
  transport.beginService();
  try {
    let wait = 0;
    let more = false;
    let interrupt = false;
    for (let index = 0; index < d.numQueues; index++) {
      const r = servicePass(index);
      if (r.waitMs > 0) wait = wait === 0 ? r.waitMs : Math.min(wait, r.waitMs);
      more ||= r.more;
      interrupt ||= r.interrupt;
    }
    // One interrupt for the whole pass, however many queues used buffers.
    if (interrupt) {
      metrics.add("interrupts");
      signalEventfd(d.irqFd);
    }
    return more ? -1 : wait;
  } finally {
    transport.endService();
  }
}

/** Answers queue `index`: ms to wait when throttled (else 0), whether work is left, whether to interrupt. */
function servicePass(index: number): { waitMs: number; more: boolean; interrupt: boolean } {
  const none = { waitMs: 0, more: false, interrupt: false };
  if ((transport.status & (STATUS_DRIVER_OK | STATUS_DEVICE_NEEDS_RESET)) !== STATUS_DRIVER_OK) return none;
  const snap = transport.lock.with(() => ({ gen: transport.resetCount, q: transport.queue(index), features: transport.driverFeatures }));
  if (!snap.q.ready) return none;
  let result;
  let queue: SplitQueue;
  try {
    queue = new SplitQueue(
      mem,
      {
        size: snap.q.num,
        desc: snap.q.desc,
        avail: snap.q.driver,
        used: snap.q.device,
        eventIdx: (snap.features & bit(F_RING_EVENT_IDX)) !== 0n,
        indirect: (snap.features & bit(F_RING_INDIRECT_DESC)) !== 0n,
      },
      { lastAvail: snap.q.lastAvail, nextUsed: snap.q.nextUsed },
      () => transport.resetCount !== snap.gen,
    );
    result = device.process(queue, index);
  } catch (e) {
    fail(e instanceof VirtqueueError ? FAILURE_RING : FAILURE_INTERNAL, snap.gen);
    return none;
  }
  // Keep the position and raise the interrupt unless the driver reset the device meanwhile (then it
  // starts from 0 with nothing pending).
  const raised = transport.finishPass(snap.gen, index, queue.pos.lastAvail, queue.pos.nextUsed, result.interrupt ? INT_USED_BUFFER : 0);
  return { waitMs: result.kind === "throttled" ? result.waitMs : 0, more: result.kind === "more", interrupt: raised && result.interrupt };
}

/**
 * Sleeps while throttled. poll(2) is never restarted after a signal handler (signal(7)), so a
 * process-directed signal this thread happens to take (SIGCHLD from a Dom0 back end, SIGWINCH)
 * ends it early with EINTR: that is only a shorter sleep, not a failure of the card.
 */
function throttleSleep(ms: number): void {
  try {
    sys.sleepInterruptible(ms);
  } catch (e) {
    if (!(e instanceof sys.SysError && e.code === "EINTR")) throw e;
  }
}

/** What of `interests` is ready within `ms` (-1: no limit); nothing after a signal (EINTR). */
function waitReady(interests: readonly sys.PollInterest[], ms: number): sys.PollReady[] {
  try {
    return sys.pollReady(interests, ms);
  } catch (e) {
    if (e instanceof sys.SysError && e.code === "EINTR") return [];
    throw e;
  }
}

// cpuMicros counts from here, as the Dom0 back end's does from its ready: the worker's start-up
// (loading modules, mapping memory) is a fixed cost of the VM, not of its I/O.
const cpuAtReady = sys.threadCpuMicros();
parentPort!.postMessage({ ready: true, tid: sys.gettid() });
const counter = new Uint8Array(8);
let waitMs = 0;
let cpuSampledAt = -Infinity;
for (;;) {
  const own = device.pollFds?.() ?? [];
  if (own.length > 0 || waitMs < 0) {
    // The model waits on host descriptors of its own too (a TAP, sockets): poll them with the kicks
    // (without waiting when a queue has work left).
    const timeout = waitMs < 0 ? 0 : waitMs > 0 ? Math.min(waitMs, THROTTLE_POLL_MS) : -1;
    for (const r of waitReady([{ fd: d.notifyFd, read: true }, ...own], timeout)) {
      if (r.fd === d.notifyFd) {
        sys.read(d.notifyFd, counter);
        metrics.add("kicks");
      } else device.onReady?.(r);
    }
  } else if (waitMs > 0) throttleSleep(Math.min(waitMs, THROTTLE_POLL_MS));
  else {
    sys.read(d.notifyFd, counter);
    metrics.add("kicks");
  }
  if (Atomics.load(ctl, CTL_STOP) !== 0) break;
  const gen = Atomics.load(ctl, CTL_LIMITER_GEN);
  if (gen !== limiterGen) {
    limiterGen = gen;
    limiter.update(readLimiterConfig(d.control));
  }
  // The kind's own updates (blk: a new image), between two passes, so no request straddles them.
  device.beforePass?.();
  waitMs = service();
  // The thread's CPU time is a system call: refreshed at most every CPU_SAMPLE_MS (and at exit),
  // not on every kick.
  const now = performance.now();
  if (now - cpuSampledAt >= CPU_SAMPLE_MS) {
    cpuSampledAt = now;
    metrics.set("cpuMicros", sys.threadCpuMicros() - cpuAtReady);
  }
}
metrics.set("cpuMicros", sys.threadCpuMicros() - cpuAtReady);
for (const [addr, size] of mappings) sys.munmap(addr, size);
