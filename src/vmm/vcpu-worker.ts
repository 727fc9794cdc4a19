// Worker entry for a KVM vCPU: rebuilds the handles from plain numbers (file descriptors and
// the kvm_run address are process-wide) and runs the vCPU thread body.

import { VcpuFd, VmFd } from "../kvm/index.js";
import { runVcpuThread } from "./vcpu-thread.js";
import { openedKvmVcpu } from "./kvm-vcpu.js";

/** MachineVcpu.backend of a KVM vCPU. */
export interface KvmVcpuBackend {
  vmFd: number;
  vcpuFd: number;
  runAddress: bigint;
  runSize: number;
}

await runVcpuThread((backend, vcpuId) => {
  const b = backend as KvmVcpuBackend;
  // This handle shares the main thread's kvm_run mapping; only the main thread closes it.
  return openedKvmVcpu(VmFd.fromRaw(b.vmFd), VcpuFd.fromRaw(vcpuId, b.vcpuFd, b.runAddress, b.runSize));
});
