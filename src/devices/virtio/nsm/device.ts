// virtio-nsm, the Nitro Secure Module (device ID 33; DESIGN.md §5): one request queue carrying CBOR
// requests and responses. This model only moves bytes: the request handler (src/security/nsm.ts
// handleNsmRequest, wired by the card) is injected, so this file knows nothing of PCRs or keys.
//
// Framing, as the two drivers and the one device that exist do it:
// - Linux drivers/misc/nsm.c nsm_sendrecv_msg_locked: the request is added with
//   virtqueue_add_outbuf (one device-readable buffer, its own chain), then the response buffer
//   with virtqueue_add_inbuf (one device-writable buffer of NSM_RESPONSE_MAX_SIZE, a second
//   chain), one kick; it then expects two used entries, the request's first, and takes the
//   response length from the second.
// - QEMU hw/virtio/virtio-nsm.c handle_input: pops the request element, then the response
//   element; pushes the request with used length 0 and the response with the response length.
//   (QEMU also insists on a response buffer of exactly 0x3000 and calls virtio_error otherwise.)
// We accept that two-chain form, and also one chain of readable request then writable response
// (what a driver writing one chain would send), answered with used length = response length.
// Every malformed request is answered with used length 0 and the device carries on; a request
// larger than NSM_REQUEST_MAX_SIZE is answered {"Error":"InputTooLarge"} without being copied;
// a response that does not fit the offered buffer becomes {"Error":"BufferTooSmall"}.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { VirtioDeviceInfo } from "../mmio.js";
import { VirtqueueError, type DescriptorChain, type Segment, type SplitQueue } from "../queue.js";
import { F_RING_INDIRECT_DESC, F_VERSION_1, bit } from "../spec.js";
import type { ProcessResult } from "../blk/device.js";

/** Linux include/uapi/linux/virtio_ids.h: VIRTIO_ID_NITRO_SEC_MOD 33 (QEMU uses the same header). */
export const DEVICE_ID_NSM = 33;
/** Linux include/uapi/linux/nsm.h NSM_REQUEST_MAX_SIZE; QEMU virtio-nsm.c the same. */
export const NSM_REQUEST_MAX_SIZE = 0x1000;
/** Linux include/uapi/linux/nsm.h NSM_RESPONSE_MAX_SIZE: the response buffer Linux offers (QEMU: NSM_RESPONSE_BUF_SIZE). */
export const NSM_RESPONSE_MAX_SIZE = 0x3000;
/** QEMU virtio-nsm.c: virtio_add_queue(vdev, 2, ...) — one request pair. We offer more so a driver may queue several. */
export const NSM_QUEUE_SIZE_DEFAULT = 64;
/** No device-specific configuration (QEMU virtio-nsm.c realizes with config size 0). */
export const NSM_CONFIG_SIZE = 0;

/** CBOR request bytes in, CBOR response bytes out (handleNsmRequest). May throw; the device answers InternalError. */
export type NsmHandler = (request: Uint8Array) => Uint8Array;

/** The errors this model produces itself (aws-nitro-enclaves-nsm-api api::ErrorCode names). */
export type NsmDeviceError = "InputTooLarge" | "BufferTooSmall" | "InternalError";

export interface NsmStats {
  /** A request answered; `bytes` = response length. */
  request(bytes: number): void;
  /** A malformed request answered with used length 0 (or a response that fits nowhere). */
  error(): void;
}

export interface NsmOptions {
  queueSize?: number;
}

/**
 * Ring features only. No EVENT_IDX: a request waiting for its response chain must be kicked again
 * when the driver adds that chain, which a plain (non-EVENT_IDX) ring always does.
 */
export function nsmFeatures(): bigint {
  return bit(F_VERSION_1) | bit(F_RING_INDIRECT_DESC);
}

export function nsmDeviceInfo(opts: NsmOptions = {}): VirtioDeviceInfo {
  return {
    deviceId: DEVICE_ID_NSM,
    features: nsmFeatures(),
    numQueues: 1,
    queueNumMax: opts.queueSize ?? NSM_QUEUE_SIZE_DEFAULT,
    config: new Uint8Array(NSM_CONFIG_SIZE),
  };
}

/**
 * {"Error": code} in CBOR (RFC 8949 §3.1: map(1) = 0xa1, text(n) = 0x60 + n for n < 24), the
 * shape nsm-api's serde gives Response::Error(ErrorCode) and QEMU's error_response writes.
 */
export function nsmErrorResponse(code: NsmDeviceError): Uint8Array {
  const key = new TextEncoder().encode("Error");
  const val = new TextEncoder().encode(code);
  return new Uint8Array([0xa1, 0x60 + key.length, ...key, 0x60 + val.length, ...val]);
}

function gather(mem: GuestMemory, segs: readonly Segment[], len: number): Uint8Array {
  const out = new Uint8Array(len);
  let o = 0;
  for (const s of segs) {
    out.set(mem.slice(s.addr, s.len), o);
    o += s.len;
  }
  return out;
}

function scatter(mem: GuestMemory, segs: readonly Segment[], data: Uint8Array): void {
  let o = 0;
  for (const s of segs) {
    if (o >= data.length) break;
    const n = Math.min(s.len, data.length - o);
    mem.write(s.addr, data.subarray(o, o + n));
    o += n;
  }
}

type Taken = { head: number; chain?: DescriptorChain };

/** The virtio-nsm request machine for one device. */
export class NsmDevice {
  constructor(
    private readonly mem: GuestMemory,
    private readonly handler: NsmHandler,
    private readonly stats: NsmStats,
  ) {}

  /** Answers every complete request available. A fatal VirtqueueError propagates (NEEDS_RESET). */
  process(q: SplitQueue): ProcessResult {
    const oldUsed = q.pos.nextUsed;
    const take = (): Taken => {
      const head = q.peekHead();
      q.advance();
      try {
        return { head, chain: q.parseChain(head) };
      } catch (e) {
        if (!(e instanceof VirtqueueError) || e.fatal) throw e;
        return { head };
      }
    };
    const refuse = (...heads: number[]): void => {
      for (const h of heads) q.pushUsed(h, 0);
      this.stats.error();
    };
    // Peek first: a request whose response chain has not been made available yet stays put.
    for (let first: DescriptorChain | undefined; (first = q.peekChain(() => this.stats.error())) !== undefined; ) {
      const head = first.head;
      if (first.readableBytes > 0 && first.writableBytes > 0) {
        // One chain: request then response buffer.
        q.advance();
        q.pushUsed(head, this.answer(first.readable, first.readableBytes, first.writable, first.writableBytes));
        continue;
      }
      if (first.readableBytes === 0) {
        // A response buffer (or an empty chain) with no request before it.
        q.advance();
        refuse(head);
        continue;
      }
      // Linux's form: this request chain, then the response chain. Wait for the latter.
      if (q.pending(2) < 2) break;
      q.advance();
      const second = take();
      const resp = second.chain;
      if (resp === undefined || resp.readableBytes > 0 || resp.writableBytes === 0) {
        refuse(head, second.head);
        continue;
      }
      const len = this.answer(first.readable, first.readableBytes, resp.writable, resp.writableBytes);
      // The request first, with nothing written into it; then the response. (QEMU handle_input, Linux nsm.c)
      q.pushUsed(head, 0);
      q.pushUsed(second.head, len);
    }
    return { kind: "idle", interrupt: q.needsInterrupt(oldUsed) };
  }

  /** Runs one request; returns the bytes written into the response buffers (0: nothing fits). */
  private answer(req: readonly Segment[], reqLen: number, resp: readonly Segment[], respLen: number): number {
    let out: Uint8Array;
    if (reqLen > NSM_REQUEST_MAX_SIZE) {
      out = nsmErrorResponse("InputTooLarge"); // not copied: a chain may claim up to 4 GiB
    } else {
      const request = gather(this.mem, req, reqLen);
      try {
        out = this.handler(request);
      } catch {
        out = nsmErrorResponse("InternalError");
      }
    }
    if (out.length > respLen) out = nsmErrorResponse("BufferTooSmall");
    if (out.length > respLen) {
      this.stats.error();
      return 0;
    }
    scatter(this.mem, resp, out);
    this.stats.request(out.length);
    return out.length;
  }
}
