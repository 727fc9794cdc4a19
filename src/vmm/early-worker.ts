// A vCPU's worker thread started before its VM is built. A worker's own start-up — a V8 isolate,
// Node.js's bootstrap, the exit loop's modules: ~40 ms on a PVM host — needs nothing of the VM, so
// Vm.create starts it first and it runs beside the measured boot, the machine's construction and
// the cards' start instead of after them. It waits for its VcpuWorkerData as its first message
// (vcpu-thread.ts) and holds nothing of the VM until then.

import { Worker } from "node:worker_threads";
import type { VcpuWorkerData } from "./vcpu-thread.js";

export class EarlyVcpuWorker {
  private readonly worker: Worker;
  private failure: Error | undefined;
  private taken = false;
  /** Resolves once the thread has ended, whoever ended it. */
  readonly ended: Promise<void>;

  constructor(readonly url: URL) {
    // workerData null: the thread waits for its data as a message (vcpu-thread.ts).
    this.worker = new Worker(url, { workerData: null });
    // Until a VM takes it, it must not keep the process alive (a VM made and never started).
    this.worker.unref();
    // Kept for take(): a thread that failed while nobody listened would otherwise be an uncaught error.
    this.worker.on("error", (e) => (this.failure ??= e));
    this.ended = new Promise((resolve) =>
      this.worker.once("exit", (code) => {
        this.failure ??= new Error(`the vCPU thread ended (exit code ${code}) before its VM started`);
        resolve();
      }),
    );
  }

  /**
   * Gives the thread its data and returns it, for the VM to listen to (its messages come on a later
   * turn of the event loop); throws why it cannot run if it failed or ended while it waited.
   */
  take(data: VcpuWorkerData): Worker {
    if (this.taken) throw new Error("this vCPU thread has been taken already");
    if (this.failure !== undefined) throw this.failure;
    this.taken = true;
    this.worker.ref();
    this.worker.postMessage(data);
    return this.worker;
  }

  /** Ends the thread if no VM took it. */
  discard(): void {
    if (this.taken) return;
    this.taken = true;
    void this.worker.terminate();
  }
}
