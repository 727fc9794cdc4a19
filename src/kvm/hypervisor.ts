// The narrow interfaces the VMM depends on, so exit dispatch can run against a fake vCPU
// (a KvmRun over a plain ArrayBuffer) as well as a real VcpuFd.
import type { KvmRun } from "./run.js";

/** One vCPU as the exit loop sees it. VcpuFd implements it. */
export interface VcpuHandle {
  readonly id: number;
  readonly kvmRun: KvmRun;
  /** KVM_RUN until the next exit; an interrupted run throws SysError with code "EINTR". */
  run(): void;
  /**
   * The same on a thread of libuv's pool, the caller's event loop running meanwhile (a pooled
   * vCPU); it rejects as run() throws. Handles that can only run on their own thread omit it.
   */
  runAsync?(): Promise<void>;
}
