// virtio-net as a device kind (device-kind.ts): Firecracker's network interface — a TAP on the
// host (host_dev_name), opened once with IFF_VNET_HDR so frames pass header and all between the
// ring and the TAP; the card serves receiveq1 from the TAP and transmitq1 into it, off the vCPU
// threads, and tells the TAP which offloads the guest accepted (TUNSETOFFLOAD).

import * as sys from "../../../sys/index.js";
import { RateLimiter, type RateLimiterConfig } from "../../../cards/rate-limiter.js";
import { CTL_KIND_BYTES, CTL_KIND_OFFSET, LIMITER_BYTES, readLimiterAt, writeLimiterAt } from "../../../cards/control-block.js";
import { DriveConfigError } from "../../../cards/blk-file.js";
import type { CardModel, ModelContext, VirtioDeviceKind } from "../device-kind.js";
import type { ProcessResult } from "../blk/device.js";
import type { SplitQueue } from "../queue.js";
import { NetDevice, netDeviceInfo, tapOffloadFlags, type NetStats } from "./device.js";
import { MacError, defaultMac, formatMac, parseMac } from "./mac.js";
import { NET_FRAME_MAX, NET_HDR_SIZE, NET_RX_QUEUE, NET_TX_QUEUE } from "./spec.js";

/** One network interface (Firecracker's network-interfaces entry). */
export interface NetConfig {
  /** iface_id: the interface's id in the API (letters, digits, '_', '-'; at most 64). */
  id: string;
  /** host_dev_name: the TAP on the host (created if missing; needs CAP_NET_ADMIN). */
  tap: string;
  /** guest_mac ("06:00:ac:10:00:02"); default: a locally administered address derived from the id. */
  mac?: string;
  /** tx_rate_limiter: bytes (bandwidth) and frames (ops) the guest may send. */
  txRateLimiter?: RateLimiterConfig;
  /** rx_rate_limiter: bytes (bandwidth) and frames (ops) the guest may receive; more waits in the TAP's queue. */
  rxRateLimiter?: RateLimiterConfig;
}

interface NetWorkerData {
  tapFd: number;
  /** The receive limiter the card starts with; later ones come through the control block. */
  rxRateLimiter?: RateLimiterConfig;
}

// The net card's area of the control block (cards/control-block.ts CTL_KIND_OFFSET): the receive
// limiter's generation word, then its parameters (8-byte aligned).
const RX_LIMITER_GEN_OFFSET = CTL_KIND_OFFSET;
const RX_LIMITER_OFFSET = CTL_KIND_OFFSET + 8;
if (RX_LIMITER_OFFSET + LIMITER_BYTES > CTL_KIND_OFFSET + CTL_KIND_BYTES) throw new Error("net: the receive limiter does not fit the card's control area");

/** Frames one pass moves from the TAP into the receive queue at most, so transmit gets its turn. */
const RX_FRAMES_PER_PASS = 256;
/** Firecracker's iface_id rule is a non-empty id; ours also keeps it printable and short. */
const IFACE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Worker side: the TAP, the receive buffer and the device model (made anew per negotiation). */
export function createModel(ctx: ModelContext<NetWorkerData>): CardModel {
  const tapFd = ctx.data.tapFd;
  const stats: NetStats = {
    txFrame: (bytes) => ctx.stats.request(bytes),
    rxFrame: (bytes) => ctx.stats.request(bytes),
    txError: () => ctx.stats.error(),
    rxError: () => ctx.stats.error(),
    rxDropped: () => ctx.stats.error(),
    txThrottled: () => ctx.stats.throttled(),
  };
  // One frame at a time from the TAP: header + the largest frame + 1, so an over-long frame shows
  // as a full buffer (tapRead: the kernel cuts it silently) and deliverRx drops it.
  const rxBuf = new Uint8Array(NET_HDR_SIZE + NET_FRAME_MAX + 1);
  const rxLimiter = new RateLimiter(ctx.data.rxRateLimiter ?? {});
  const rxGen = new Int32Array(ctx.control, RX_LIMITER_GEN_OFFSET, 1);
  let rxLimiterGen = Atomics.load(rxGen, 0);
  /** The pending frame has been charged to the receive limiter (a throttled frame is charged once). */
  let charged = false;
  /** Bytes of a frame read from the TAP that waits for receive buffers (0: none). */
  let pending = 0;
  /** The TAP may have frames (poll said so, or the last read was not EAGAIN). */
  let tapReadable = true;
  let device: NetDevice | undefined;
  let negotiated: { features: bigint; reset: number } | undefined;
  const sink = {
    writeFrame(segments: readonly Uint8Array[]) {
      return sys.tapWritev(tapFd, segments) === null ? ("busy" as const) : ("sent" as const);
    },
  };
  /** The model for the driver's current negotiation; the TAP's offloads follow what it accepted. */
  const current = (): NetDevice => {
    const features = ctx.driverFeatures();
    const reset = ctx.resetCount();
    if (device === undefined || negotiated?.features !== features || negotiated.reset !== reset) {
      sys.tapSetOffload(tapFd, tapOffloadFlags(features));
      device = new NetDevice(ctx.mem, features, sink, stats, { txThrottle: ctx.limiter });
      negotiated = { features, reset };
    }
    return device;
  };
  const receive = (q: SplitQueue): ProcessResult => {
    const dev = current();
    let interrupt = false;
    for (let n = 0; n < RX_FRAMES_PER_PASS; n++) {
      if (pending === 0) {
        if (!tapReadable) return { kind: "idle", interrupt };
        const got = sys.tapRead(tapFd, rxBuf);
        if (got === null) {
          tapReadable = false;
          return { kind: "idle", interrupt };
        }
        pending = got;
        charged = false;
      }
      if (!charged) {
        const wait = rxLimiter.consume(Math.max(0, pending - NET_HDR_SIZE), 1);
        if (wait > 0) {
          ctx.stats.throttled();
          // The frame waits here (and the rest in the TAP's queue) until the limiter allows it.
          return { kind: "throttled", interrupt, waitMs: wait };
        }
        charged = true;
      }
      const r = dev.deliverRx(q, rxBuf.subarray(0, pending));
      interrupt ||= r.interrupt;
      // No buffers: the frame waits for the driver's next receive kick; the TAP is not polled meanwhile.
      if (r.kind === "no-buffers") return { kind: "idle", interrupt };
      pending = 0;
    }
    return { kind: "more", interrupt };
  };
  const transmit = (q: SplitQueue): ProcessResult => {
    const r = current().processTx(q);
    // The TAP's queue is full: try again shortly (a TAP that is up drains on its own).
    if (r.kind === "blocked") return { kind: "throttled", interrupt: r.interrupt, waitMs: 1 };
    return r;
  };
  return {
    beforePass() {
      const gen = Atomics.load(rxGen, 0);
      if (gen !== rxLimiterGen) {
        rxLimiterGen = gen;
        rxLimiter.update(readLimiterAt(ctx.control, RX_LIMITER_OFFSET));
      }
    },
    // The TAP is polled only while a frame can move: the driver has set the device up since its last
    // reset (a pass ran) and no frame waits for receive buffers. Otherwise a readable TAP would wake
    // the worker again and again with nothing it may do (a guest still booting, a full ring).
    pollFds: () => (pending === 0 && negotiated !== undefined && negotiated.reset === ctx.resetCount() ? [{ fd: tapFd, read: true }] : []),
    onReady({ fd }) {
      if (fd === tapFd) tapReadable = true;
    },
    process(q, index) {
      if (index === NET_RX_QUEUE) return receive(q);
      if (index === NET_TX_QUEUE) return transmit(q);
      return { kind: "idle", interrupt: false };
    },
  };
}

export const netKind: VirtioDeviceKind<NetConfig> = {
  kind: "net",
  instances(config) {
    const ids = new Set<string>();
    const taps = new Set<string>();
    for (const n of config.net ?? []) {
      if (!IFACE_ID.test(n.id)) throw new DriveConfigError(`network interface id "${n.id}" must be 1-64 letters, digits, '_' or '-'`);
      if (ids.has(n.id)) throw new DriveConfigError(`network interface id "${n.id}" is used twice`);
      if (taps.has(n.tap)) throw new DriveConfigError(`network interface ${n.id}: TAP "${n.tap}" is already used by another interface`);
      ids.add(n.id);
      taps.add(n.tap);
      if (n.mac !== undefined) {
        try {
          parseMac(n.mac);
        } catch (e) {
          if (e instanceof MacError) throw new DriveConfigError(`network interface ${n.id}: ${e.message}`);
          throw e;
        }
      }
    }
    return [...(config.net ?? [])];
  },
  slotName: (n) => `virtio-net-${n.id}`,
  instanceId: (n) => n.id,
  cardConfig: (n) => n,
  open(n) {
    let tap: sys.Tap;
    try {
      tap = sys.openTap(n.tap, { vnetHdrSize: NET_HDR_SIZE });
    } catch (e) {
      throw new DriveConfigError(`network interface ${n.id}: ${(e as Error).message}`);
    }
    try {
      const mac = n.mac !== undefined ? parseMac(n.mac) : defaultMac(n.id);
      if (n.rxRateLimiter !== undefined) new RateLimiter(n.rxRateLimiter); // checks the buckets now (RateLimiterConfigError)
      const data: NetWorkerData = { tapFd: tap.fd, ...(n.rxRateLimiter !== undefined ? { rxRateLimiter: n.rxRateLimiter } : {}) };
      return {
        info: netDeviceInfo({ mac }),
        workerData: data,
        rateLimiter: n.txRateLimiter,
        state: { mac: formatMac(mac), tap: tap.name },
        release: () => sys.close(tap.fd),
      };
    } catch (e) {
      sys.close(tap.fd);
      throw e;
    }
  },
  model: new URL(import.meta.url),
  loadModel: async () => ({ createModel }),
  updates: {
    /** PATCH rx_rate_limiter: the card takes the new limiter at its next pass. */
    rxRateLimiter: async (card, arg) => {
      writeLimiterAt(card.control, arg as RateLimiterConfig, RX_LIMITER_OFFSET, RX_LIMITER_GEN_OFFSET);
      card.wake();
      return undefined;
    },
  },
  // Firecracker's per-interface group name; our card counts both directions together.
  metricGroups: (n, m) => ({
    [`net_${n.id}`]: {
      packets_count: m.requests,
      bytes_count: m.bytes,
      fails: m.errors,
      tx_rate_limiter_throttled: m.throttled,
      event_count: m.kicks,
      interrupt_count: m.interrupts,
      needs_reset: m.needsReset,
    },
  }),
};
