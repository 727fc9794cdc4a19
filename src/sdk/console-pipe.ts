// Guest serial output as a Node stream. vCPU worker threads write console bytes to a file
// descriptor with writeSync (vmm/vcpu-thread.ts), so the stream needs a kernel pipe (pipe2(2),
// through src/sys: Node has no pipe(2)). The write end stays blocking for the workers; the read
// end is owned by the event loop (a net.Socket over the fd, as process.stdin is for a pipe; libuv
// makes that end, a file description of its own, non-blocking). We drain it continuously, so a
// guest never stalls on a reader that does not read: past `maxBufferedBytes` unread bytes, output
// is dropped and counted instead.

import { closeSync } from "node:fs";
import { Socket } from "node:net";
import { PassThrough, type Readable } from "node:stream";
import * as sys from "../sys/index.js";

export interface ConsolePipe {
  /** Give this to the VM as `consoleFd`. */
  readonly writeFd: number;
  /** Guest output; ends after `closeWriteEnd()` once everything written has been read. */
  readonly stream: Readable;
  /** Bytes read from the guest so far, and bytes dropped because nobody read the stream. */
  counters(): { bytes: number; droppedBytes: number };
  /** Call once no vCPU thread writes any more: the stream then ends. Idempotent. */
  closeWriteEnd(): void;
  /** Keeps the process alive until the guest's output has been read to the end (call at start). */
  hold(): void;
  /** Tears everything down at once (stream destroyed). Idempotent. */
  destroy(): void;
}

export const DEFAULT_CONSOLE_BUFFER = 1024 * 1024;

export function openConsolePipe(maxBufferedBytes = DEFAULT_CONSOLE_BUFFER): ConsolePipe {
  let readFd: number;
  let writeFd: number;
  try {
    [readFd, writeFd] = sys.pipe2(sys.O_CLOEXEC);
  } catch (e) {
    throw new Error(`cannot make the console pipe: ${(e as Error).message}`);
  }
  const source = new Socket({ fd: readFd, readable: true, writable: false });
  // A pipe of a VM that never starts must not keep the process alive; `hold()` at start makes it
  // do so until the end of the output (it must be read even after the vCPU threads are gone).
  source.unref();
  const out = new PassThrough();
  let bytes = 0;
  let droppedBytes = 0;
  source.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
    if (out.readableLength + out.writableLength + chunk.length > maxBufferedBytes) {
      droppedBytes += chunk.length;
      return;
    }
    out.write(chunk);
  });
  source.on("end", () => out.end());
  source.on("error", (e) => out.destroy(e));
  let writeOpen = true;
  return {
    writeFd,
    stream: out,
    counters: () => ({ bytes, droppedBytes }),
    hold() {
      source.ref();
    },
    closeWriteEnd() {
      if (!writeOpen) return;
      writeOpen = false;
      closeSync(writeFd);
    },
    destroy() {
      this.closeWriteEnd();
      source.destroy();
      out.destroy();
    },
  };
}
