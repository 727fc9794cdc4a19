// A KVM vCPU as the exit loop's thread opens it (vcpu-thread.ts OpenedVcpu), whichever thread that
// is: a vCPU worker (vcpu-worker.ts, from the handles' numbers) or the VMM's own, pooled (builder.ts).

import type { VcpuFd, VmFd } from "../kvm/index.js";
import type { OpenedVcpu } from "./vcpu-thread.js";

export function openedKvmVcpu(vm: VmFd, vcpu: VcpuFd): OpenedVcpu {
  return {
    vcpu,
    irqLine: (line, level) => vm.irqLine(line, level),
    dumpState: () => ({ regs: vcpu.getRegs(), sregs: vcpu.getSregs() }),
    clearImmediateExit: () => {
      vcpu.kvmRun.immediateExit = 0;
    },
  };
}
