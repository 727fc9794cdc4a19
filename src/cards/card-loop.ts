// A card's loop, whatever thread runs it: the device model of the card's kind over guest RAM the
// card maps itself, the queues answered pass by pass, kicks and interrupts by eventfd, the adaptive
// polling after work, throttling, metrics. A card's own worker (card-worker.ts) runs it blocking in
// read(2)/poll(2) on the queue-notify eventfd, so a guest kick costs no exit and no main-thread
// work; a pooled card (card.ts, CardBase.pooled) runs it on the event loop of the thread that
// started it, each wait a poll(2) on a thread of libuv's pool.
import * as sys from "../sys/index.js";
import { GuestMemory, type RegionInit } from "../memory/guest-memory.js";
import { TransportState, type QueueSnapshot } from "../devices/virtio/mmio.js";
import { SplitQueue, VirtqueueError } from "../devices/virtio/queue.js";
import type { ModelContext, ModelModule } from "../devices/virtio/device-kind.js";
import {
  F_RING_EVENT_IDX,
  F_RING_INDIRECT_DESC,
  INT_USED_BUFFER,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER_OK,
  bit,
} from "../devices/virtio/spec.js";
import { signalEventfd } from "./notify.js";
import type { CardWorkerData } from "./card.js";
import { CTL_LIMITER_GEN, CTL_STOP, CTL_WORDS, readLimiterConfig } from "./control-block.js";
import { CardMetrics } from "./metrics.js";
import { RateLimiter } from "./rate-limiter.js";

/** How often the worker refreshes its cpuMicros metric at most, ms. */
const CPU_SAMPLE_MS = 5;
/** Longest sleep while throttled, so stop and limiter updates are seen promptly. */
const THROTTLE_POLL_MS = 20;
/**
 * After a pass that found work, the worker keeps watching the driver's rings this long (ms) before
 * it sleeps in read(2), with kicks turned off meanwhile (virtio 1.2 §2.7.10): a driver that sends
 * its next request within the window costs neither a kick (a VM exit with ioeventfd) nor a thread
 * wake-up. The polling is counted in the card's CPU time. Adaptive as SPDK's and Nitro's cards:
 * busy while work comes, asleep once it stops. Cards whose model waits on host descriptors of its
 * own (net, vsock) do not poll. CardBase.pollMs sets another window (0: never poll).
 */
const POLL_MS = 0.05;
/** FailureCode stored in the transport when the device breaks (for logs; not guest-visible). */
const FAILURE_RING = 2;
const FAILURE_INTERNAL = 3;

export interface CardLoop {
  runBlocking(): void;
  runAsync(): Promise<void>;
  finish(): void;
}

/**
 * Sets a card up from its worker data: maps guest RAM, loads its kind's model (`model` if given,
 * else the module `d.model` names). `pooled`: it will run on a shared event loop (runAsync): no
 * polling phase, its own CPU time summed per wake-up.
 */
export async function openCardLoop(d: CardWorkerData, pooled: boolean, model?: ModelModule): Promise<CardLoop> {
  // A pooled card never spins: its event loop is shared (every VM of the process, the API).
  const pollMs = pooled ? 0 : (d.pollMs ?? POLL_MS);
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

  let unflushedRequests = 0;
  let unflushedBytes = 0;
  /** Adds the requests the pass counted to the shared metrics (before its interrupt: a reader woken by it sees them). */
  function flushStats(): void {
    if (unflushedRequests === 0) return;
    metrics.add("requests", unflushedRequests);
    metrics.add("bytes", unflushedBytes);
    unflushedRequests = 0;
    unflushedBytes = 0;
  }

  const limiter = new RateLimiter(readLimiterConfig(d.control));
  let limiterGen = Atomics.load(ctl, CTL_LIMITER_GEN);
  const stats: ModelContext<unknown>["stats"] = {
    // Counted here and added to the shared metrics once per pass (flushStats): an Atomics.add of a
    // BigInt per request was a measurable share of a request's cost.
    request: (bytes) => {
      unflushedRequests++;
      unflushedBytes += bytes;
    },
    error: () => metrics.add("errors"),
    throttled: () => metrics.add("throttled"),
  };

  // The device model of this card's kind (device-kind.ts): the module it names in workerData, or
  // the one the caller holds (a pooled card: VirtioDeviceKind.loadModel).
  const { createModel } = model ?? ((await import(d.model)) as ModelModule);
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

  /** Each queue as the last pass left it (undefined: not ready then), for the polling phase. */
  const watched: Array<{ queue: SplitQueue | undefined; gen: number }> = Array.from({ length: d.numQueues }, () => ({ queue: undefined, gen: 0 }));
  /** Whether the last pass consumed any available buffer. */
  let progressed = false;
  /** True while the worker polls: passes keep kicks off (SplitQueue.holdKicks). */
  let polling = false;
  /** The polling window now, ms: pollMs, shrunk while windows catch nothing (pollPhase). */
  let pollWindow = pollMs;

  /**
   * Answers every queue inside the transport's service bracket (a reset waits for it to end).
   * Returns ms to wait before the next pass when throttled, 0 to wait for the next event, or -1
   * when a queue stopped at its bound with work left (the next pass comes at once).
   */
  function service(): number {
    transport.beginService();
    progressed = false;
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
      flushStats();
      // One interrupt for the whole pass, however many queues used buffers.
      if (interrupt) {
        metrics.add("interrupts");
        signalEventfd(d.irqFd);
      }
      return more ? -1 : wait;
    } finally {
      flushStats();
      transport.endService();
    }
  }

  /** What servicePass answers: one object, overwritten by each call (read before the next). */
  const passResult = { waitMs: 0, more: false, interrupt: false };
  /** Each queue's set-up as the last pass read it (TransportState.snapshotQueue fills it in place). */
  const snaps: QueueSnapshot[] = Array.from({ length: d.numQueues }, () => ({
    gen: 0, featLo: 0, featHi: 0, num: 0, ready: false, desc: 0, driver: 0, device: 0, lastAvail: 0, nextUsed: 0,
  }));
  /** Whether snaps[i] was taken under DRIVER_OK in its generation (so it holds while that lasts). */
  const snapHeld: boolean[] = snaps.map(() => false);

  /** Answers queue `index`: ms to wait when throttled (else 0), whether work is left, whether to interrupt. */
  function servicePass(index: number): typeof passResult {
    const out = passResult;
    out.waitMs = 0;
    out.more = false;
    out.interrupt = false;
    const w = watched[index]!;
    const gen = transport.resetCount;
    if ((transport.status & (STATUS_DRIVER_OK | STATUS_DEVICE_NEEDS_RESET)) !== STATUS_DRIVER_OK) {
      w.queue = undefined; // nothing to poll until the driver sets the device up again
      return out;
    }
    const snap = snaps[index]!;
    // The queue's set-up and the driver's features cannot change while DRIVER_OK stands: queue
    // registers are written between FEATURES_OK and DRIVER_OK only, and the driver clears a status
    // bit by reset alone (virtio 1.2 §3.1.1, §2.1.1; VirtioMmioTransport.writeRegister). So a
    // snapshot taken in the generation that showed DRIVER_OK holds until the reset count moves,
    // with the position in it the card's own (kept after finishPass below): the lock and the words
    // are read once per generation, not once per pass.
    if (!snapHeld[index] || snap.gen !== gen) {
      transport.snapshotQueue(index, snap);
      snapHeld[index] = snap.gen === gen;
    }
    if (!snap.ready) {
      w.queue = undefined;
      return out;
    }
    let result;
    let queue: SplitQueue;
    try {
      queue = queueFor(index, snap);
      queue.holdKicks = polling;
      result = device.process(queue, index);
    } catch (e) {
      w.queue = undefined;
      fail(e instanceof VirtqueueError ? FAILURE_RING : FAILURE_INTERNAL, snap.gen);
      return out;
    }
    w.queue = queue;
    w.gen = snap.gen;
    if (queue.pos.lastAvail !== snap.lastAvail) progressed = true;
    // Keep the position and raise the interrupt unless the driver reset the device meanwhile (then it
    // starts from 0 with nothing pending).
    const raised = transport.finishPass(snap.gen, index, queue.pos.lastAvail, queue.pos.nextUsed, result.interrupt ? INT_USED_BUFFER : 0);
    snap.lastAvail = queue.pos.lastAvail;
    snap.nextUsed = queue.pos.nextUsed;
    out.waitMs = result.kind === "throttled" ? result.waitMs : 0;
    out.more = result.kind === "more";
    out.interrupt = raised && result.interrupt;
    return out;
  }

  /** Each queue's SplitQueue and what it was built from: a pass reuses it while none of that changed. */
  const built: Array<{ queue: SplitQueue; gen: number; num: number; desc: number; avail: number; used: number; featLo: number; featHi: number } | undefined> = [];

  /**
   * Queue `index` as the driver set it up (`q`: its reset generation, set-up and features), at the
   * position `q` holds. Built (and its rings checked) when any of that changed since the last pass,
   * so a pass does not pay for the checks and closures again. Throws a fatal VirtqueueError as the
   * constructor does.
   */
  function queueFor(index: number, q: QueueSnapshot): SplitQueue {
    let b = built[index];
    if (
      b === undefined || b.gen !== q.gen || b.num !== q.num || b.desc !== q.desc || b.avail !== q.driver || b.used !== q.device ||
      b.featLo !== q.featLo || b.featHi !== q.featHi
    ) {
      built[index] = undefined;
      const features = BigInt(q.featLo) | (BigInt(q.featHi) << 32n);
      const gen = q.gen;
      const queue = new SplitQueue(
        mem,
        { size: q.num, desc: q.desc, avail: q.driver, used: q.device, eventIdx: (features & bit(F_RING_EVENT_IDX)) !== 0n, indirect: (features & bit(F_RING_INDIRECT_DESC)) !== 0n },
        { lastAvail: q.lastAvail, nextUsed: q.nextUsed },
        () => transport.resetCount !== gen,
      );
      b = { queue, gen, num: q.num, desc: q.desc, avail: q.driver, used: q.device, featLo: q.featLo, featHi: q.featHi };
      built[index] = b;
    }
    b.queue.pos.lastAvail = q.lastAvail;
    b.queue.pos.nextUsed = q.nextUsed;
    return b.queue;
  }

  /**
   * Whether a watched queue has buffers the last pass has not taken, or the device was reset since.
   * A look outside the service bracket: it only reads a ring index in guest RAM (mapped for the
   * card's whole life, whatever the driver does with it), so a reset meanwhile costs at most a pass
   * that finds nothing, and the pass takes the bracket. Two full-barrier stores fewer per look: a
   * quicker answer to the driver's next request.
   */
  function workPending(): boolean {
    const gen = transport.resetCount;
    for (const w of watched) {
      if (w.queue === undefined) continue;
      if (w.gen !== gen) return true; // a pass sorts out what the reset left
      if (w.queue.availIdx() !== w.queue.pos.lastAvail) return true;
    }
    return false;
  }

  /** Kicks off (while polling) or back on, on every queue the last pass saw, unless reset since (in the service bracket: it writes the rings). */
  function setKicks(on: boolean): void {
    transport.beginService();
    try {
      const gen = transport.resetCount;
      for (const w of watched) if (w.queue !== undefined && w.gen === gen) w.queue.setKicks(on);
    } finally {
      transport.endService();
    }
  }

  /**
   * The polling phase after a pass that found work: with kicks off, serves what the driver makes
   * available until pollWindow (up to pollMs: POLL_MS unless CardBase.pollMs says) passes with nothing new (or throttling, a stop or a limiter update ends
   * it); then turns kicks back on and looks once more, since a buffer made available just before
   * that could have gone unkicked. Returns what service() returns: -1 when work is waiting.
   */
  function pollPhase(): number {
    polling = true;
    let wait = 0;
    let caught = false;
    try {
      setKicks(false);
      let until = performance.now() + pollWindow;
      for (let idle = 0; ; ) {
        if (workPending()) {
          device.beforePass?.();
          wait = service();
          if (wait !== 0 || Atomics.load(ctl, CTL_STOP) !== 0 || Atomics.load(ctl, CTL_LIMITER_GEN) !== limiterGen) break;
          if (progressed) {
            caught = true;
            until = performance.now() + pollWindow;
            idle = 0;
            continue;
          }
          // Buffers the model leaves where they are (none of its work yet): not work, so the
          // window runs on.
        }
        // The clock and the control words every 32 looks that found nothing: each is a call.
        if ((++idle & 31) === 0 && (performance.now() > until || Atomics.load(ctl, CTL_STOP) !== 0 || Atomics.load(ctl, CTL_LIMITER_GEN) !== limiterGen)) break;
      }
    } finally {
      polling = false;
      setKicks(true);
    }
    // Adaptive: a window that caught nothing was CPU spent for nothing (the driver is slow, or this
    // host has no core to spare and the driver did not run meanwhile): the next one is half as long,
    // down to an eighth; a window that caught work is worth its full length again.
    pollWindow = caught ? pollMs : Math.max(pollWindow / 2, pollMs / 8);
    return wait === 0 && workPending() ? -1 : wait;
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

  /**
   * The thread's CPU time is a system call: refreshed at most every CPU_SAMPLE_MS (and at exit), not
   * on every kick. A pooled card counts its own wake-ups instead (runAsync).
   */
  function sampleCpu(): void {
    if (pooled) return;
    const now = performance.now();
    if (now - cpuSampledAt >= CPU_SAMPLE_MS) {
      cpuSampledAt = now;
      metrics.set("cpuMicros", sys.threadCpuMicros() - cpuAtReady);
    }
  }

  // cpuMicros counts from here, as the Dom0 back end's does from its ready: the card's start-up
  // (loading modules, mapping memory) is a fixed cost of the VM, not of its I/O. A pooled card
  // shares its thread: it adds up the CPU time of its own work instead.
  const cpuAtReady = sys.threadCpuMicros();
  let pooledCpuMicros = 0;
  const counter = new Uint8Array(8);
  let cpuSampledAt = -Infinity;

  /** Takes the kick(s) the notify eventfd holds. */
  function takeKick(): void {
    sys.read(d.notifyFd, counter);
    metrics.add("kicks");
  }

  /** After a wait: the kick and the model's own descriptors that are ready. */
  function onReady(ready: readonly sys.PollReady[]): void {
    for (const r of ready) {
      if (r.fd === d.notifyFd) takeKick();
      else device.onReady?.(r);
    }
  }

  /** After a wake-up: undefined once stopped, else serves (picking up a limiter update first) and returns the next wait (service()). */
  function afterWake(): number | undefined {
    if (Atomics.load(ctl, CTL_STOP) !== 0) return undefined;
    const gen = Atomics.load(ctl, CTL_LIMITER_GEN);
    if (gen !== limiterGen) {
      limiterGen = gen;
      limiter.update(readLimiterConfig(d.control));
    }
    // The kind's own updates (blk: a new image), between two passes, so no request straddles them.
    device.beforePass?.();
    let waitMs = service();
    sampleCpu();
    if (waitMs === 0 && progressed && pollMs > 0 && (device.pollFds?.() ?? []).length === 0) {
      waitMs = pollPhase();
      sampleCpu();
    }
    return waitMs;
  }

  /** The interests (the kick and the model's own descriptors `own`) and timeout of the next wait, after service() said `waitMs`. */
  function nextWait(waitMs: number, own: readonly sys.PollInterest[]): { interests: sys.PollInterest[]; timeout: number } {
    return {
      interests: [{ fd: d.notifyFd, read: true }, ...own],
      timeout: waitMs < 0 ? 0 : waitMs > 0 ? Math.min(waitMs, THROTTLE_POLL_MS) : -1,
    };
  }

  return {
    /** The card's own thread: blocks between wake-ups; returns once stopped. */
    runBlocking(): void {
      let waitMs = 0;
      for (;;) {
        const own = device.pollFds?.() ?? [];
        if (own.length > 0 || waitMs < 0) {
          // The model waits on host descriptors of its own too (a TAP, sockets): poll them with the kicks
          // (without waiting when a queue has work left).
          const w = nextWait(waitMs, own);
          onReady(waitReady(w.interests, w.timeout));
        } else if (waitMs > 0) throttleSleep(Math.min(waitMs, THROTTLE_POLL_MS));
        else takeKick();
        const next = afterWake();
        if (next === undefined) return;
        waitMs = next;
      }
    },
    /** A pooled card: each wait a poll(2) on libuv's pool, the work on this thread; resolves once stopped. */
    async runAsync(): Promise<void> {
      let waitMs = 0;
      for (;;) {
        const w = nextWait(waitMs, device.pollFds?.() ?? []);
        let ready: sys.PollReady[];
        try {
          ready = await sys.pollReadyAsync(w.interests, w.timeout);
        } catch (e) {
          if (!(e instanceof sys.SysError && e.code === "EINTR")) throw e;
          ready = []; // a signal ended the wait early: look again
        }
        const t0 = sys.threadCpuMicros();
        let next: number | undefined;
        try {
          onReady(ready);
          next = afterWake();
        } finally {
          pooledCpuMicros += sys.threadCpuMicros() - t0;
          metrics.set("cpuMicros", pooledCpuMicros);
        }
        if (next === undefined) return;
        waitMs = next;
      }
    },
    /** The last CPU figure, and guest RAM unmapped: after the run has returned. */
    finish(): void {
      metrics.set("cpuMicros", pooled ? pooledCpuMicros : sys.threadCpuMicros() - cpuAtReady);
      for (const [addr, size] of mappings) sys.munmap(addr, size);
    },
  };
}
