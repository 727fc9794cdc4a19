// src/kvm: typed KVM handles (the rust-vmm kvm-ioctls shape). The only layer that issues KVM ioctls.
export * from "./types.js";
export { KvmError } from "./errors.js";
export { Kvm } from "./kvm.js";
export { VmFd } from "./vm-fd.js";
export { VcpuFd } from "./vcpu-fd.js";
export { KvmRun } from "./run.js";
export type { VcpuHandle } from "./hypervisor.js";
export * from "./structs.js";
