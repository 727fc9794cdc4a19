// A device model for the card runtime's own tests (not shipped: package.json leaves dist/**/testing/
// out): two queues and a host descriptor of its own, the shape of virtio-net (a TAP) and vsock
// (sockets) without their protocols.
// - queue 0 (driver → host): each chain's readable bytes are appended to the file `outFd`; used length 0;
// - the eventfd `inFd` (its own poll descriptor): each count read becomes one token;
// - queue 1 (host → driver): each token fills the next chain's first writable buffer with its
//   sequence number (u32 LE); used length 4. Tokens wait while the driver has no buffers.

import * as sys from "../../sys/index.js";
import type { CardModel, ModelContext } from "../../devices/virtio/device-kind.js";
import type { DescriptorChain, SplitQueue } from "../../devices/virtio/queue.js";
import type { ProcessResult } from "../../devices/virtio/blk/device.js";

export interface TwoQueueData {
  outFd: number;
  inFd: number;
}

export function createModel(ctx: ModelContext<TwoQueueData>): CardModel {
  const { outFd, inFd } = ctx.data;
  let outAt = 0;
  let tokens = 0;
  let sequence = 0;
  const counter = new Uint8Array(8);
  const idle = (q: SplitQueue, oldUsed: number): ProcessResult => ({ kind: "idle", interrupt: q.needsInterrupt(oldUsed) });
  return {
    pollFds: () => [{ fd: inFd, read: true }],
    onReady({ fd }) {
      if (fd !== inFd) throw new Error(`onReady for ${fd}, which is not the model's`);
      sys.read(inFd, counter);
      tokens += Number(new DataView(counter.buffer).getBigUint64(0, true));
    },
    process(q, index) {
      const oldUsed = q.pos.nextUsed;
      for (let chain: DescriptorChain | undefined; (index === 0 || tokens > 0) && (chain = q.peekChain(() => ctx.stats.error())) !== undefined; ) {
        q.advance();
        if (index === 0) {
          for (const s of chain.readable) {
            outAt += sys.pwrite(outFd, ctx.mem.slice(s.addr, s.len), outAt);
          }
          q.pushUsed(chain.head, 0);
          ctx.stats.request(chain.readableBytes);
          continue;
        }
        const first = chain.writable[0];
        if (first === undefined || first.len < 4) {
          q.pushUsed(chain.head, 0);
          ctx.stats.error();
          continue;
        }
        ctx.mem.writeU32(first.addr, sequence++);
        tokens--;
        q.pushUsed(chain.head, 4);
        ctx.stats.request(4);
      }
      return idle(q, oldUsed);
    },
  };
}
