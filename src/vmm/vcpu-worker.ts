// Worker entry for a KVM vCPU: rebuilds the handles from plain numbers (file descriptors and
// the kvm_run address are process-wide) and runs the vCPU thread body.

import { VcpuFd, VmFd } from "../kvm/index.js";
import { runVcpuThread } from "./vcpu-thread.js";

/** MachineVcpu.backend of a KVM vCPU. */
export interface KvmVcpuBackend {
  vmFd: number;
  vcpuFd: number;
  runAddress: bigint;
  runSize: number;
}

await runVcpuThread((backend, vcpuId) => {
  const b = backend as KvmVcpuBackend;
  const vm = VmFd.fromRaw(b.vmFd);
  // This handle shares the main thread's kvm_run mapping; only the main thread closes it.
  const vcpu = VcpuFd.fromRaw(vcpuId, b.vcpuFd, b.runAddress, b.runSize);
  return {
    vcpu,
    irqLine: (line, level) => vm.irqLine(line, level),
    dumpState: () => ({ regs: vcpu.getRegs(), sregs: vcpu.getSregs() }),
    clearImmediateExit: () => {
      vcpu.kvmRun.immediateExit = 0;
    },
  };
});
