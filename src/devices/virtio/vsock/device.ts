// virtio-vsock device loop (virtio 1.2 §5.10): moves packets between the three queues and the
// muxer. TX chains are consumed at once (used length 0: the device writes nothing into them);
// RX chains are filled with what the muxer has for the guest; the event queue carries
// TRANSPORT_RESET. A malformed chain gets used length 0 and a "malformed" stat; only a fatal
// VirtqueueError (a broken ring) leaves these methods, and the card marks the device NEEDS_RESET.
//
// Card wiring (later): a kick on TX -> processTx; a kick on RX, or any host stream event, or a
// muxer sweep -> fillRx; processTx again after fillRx while processTx reported `stalled`.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { DescriptorChain, SplitQueue } from "../queue.js";
import type { VsockMuxer, VsockStats } from "./muxer.js";
import { VsockPacketError, readTxPacket, rxChainProblem, rxPayloadRoom, writeRxPacket, writeTransportResetEvent } from "./packet.js";

export interface VsockPassResult {
  /** The driver wants an interrupt for this queue. */
  interrupt: boolean;
  /**
   * processTx: TX chains were left in the ring because the RX backlog is full — call again after
   * fillRx. fillRx: the muxer has packets but the guest gave no RX buffer — the next RX kick.
   */
  stalled: boolean;
}

const noStats: VsockStats = { add: () => {} };

export class VsockDevice {
  constructor(
    private readonly mem: GuestMemory,
    readonly muxer: VsockMuxer,
    private readonly stats: VsockStats = noStats,
  ) {}

  /** Takes every available TX packet to the muxer. */
  processTx(q: SplitQueue): VsockPassResult {
    const oldUsed = q.pos.nextUsed;
    const onMalformed = (): void => this.stats.add("malformed", 1);
    for (;;) {
      for (;;) {
        // §5.10.6.1: the device stops taking TX when the resources for replies are used up.
        if (this.muxer.rxBacklogFull()) return { interrupt: q.needsInterrupt(oldUsed), stalled: true };
        const chain = q.peekChain(onMalformed);
        if (chain === undefined) break;
        q.advance();
        this.txChain(chain);
        // TX buffers are read-only: nothing was written. §5.10.6.4
        q.pushUsed(chain.head, 0);
      }
      q.publishAvailEvent();
      // With EVENT_IDX a buffer made available before avail_event was published sent no kick: look again.
      if (q.pending() === 0) break;
    }
    return { interrupt: q.needsInterrupt(oldUsed), stalled: false };
  }

  private txChain(chain: DescriptorChain): void {
    let pkt;
    try {
      pkt = readTxPacket(this.mem, chain);
    } catch (e) {
      if (e instanceof VsockPacketError) {
        this.stats.add("malformed", 1);
        return;
      }
      throw e;
    }
    this.muxer.sendPkt(pkt);
  }

  /** Fills RX buffers with what the muxer has for the guest. */
  fillRx(q: SplitQueue): VsockPassResult {
    const oldUsed = q.pos.nextUsed;
    const onMalformed = (): void => this.stats.add("malformed", 1);
    for (;;) {
      let stalled = false;
      while (this.muxer.hasPendingRx()) {
        const chain = q.peekChain(onMalformed);
        if (chain === undefined) {
          stalled = true;
          break;
        }
        if (rxChainProblem(chain) !== undefined) {
          q.advance();
          q.pushUsed(chain.head, 0);
          this.stats.add("malformed", 1);
          continue;
        }
        const pkt = this.muxer.recvPkt(rxPayloadRoom(chain));
        if (pkt === undefined) break; // what was pending produced nothing now (a drained host stream)
        q.advance();
        // Cannot fail: the chain was checked and the payload fits the room asked for.
        q.pushUsed(chain.head, writeRxPacket(this.mem, chain, pkt));
      }
      if (!stalled) return { interrupt: q.needsInterrupt(oldUsed), stalled: false };
      // Ask for a kick when the driver adds RX buffers, then look once more (§2.7.10 race).
      q.publishAvailEvent();
      if (q.pending() === 0) return { interrupt: q.needsInterrupt(oldUsed), stalled: true };
    }
  }

  /**
   * Sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (virtio 1.2 §5.10.6.7) and drops every connection
   * (the driver resets its sockets on this event): for snapshots, whose restored VM has no host
   * streams. `sent` is false when the driver gave no event buffer (malformed ones are skipped).
   */
  sendTransportReset(q: SplitQueue): { sent: boolean; interrupt: boolean } {
    const oldUsed = q.pos.nextUsed;
    this.muxer.reset();
    for (let chain; (chain = q.peekChain(() => this.stats.add("malformed", 1))) !== undefined; ) {
      q.advance();
      try {
        q.pushUsed(chain.head, writeTransportResetEvent(this.mem, chain));
        return { sent: true, interrupt: q.needsInterrupt(oldUsed) };
      } catch (e) {
        if (!(e instanceof VsockPacketError)) throw e;
        q.pushUsed(chain.head, 0);
        this.stats.add("malformed", 1);
      }
    }
    return { sent: false, interrupt: q.needsInterrupt(oldUsed) };
  }
}
