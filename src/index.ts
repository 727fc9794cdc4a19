// The package entry (`import { MicroVM } from "typervisor"`): the embeddable SDK with its typed
// errors (MicroVMError and its kinds, sdk/errors.ts), and below it the VM lifecycle for programs
// that want the lower layer.
export * from "./sdk/index.js";
export { Vm, VmConfigError, MAX_VCPUS, type VmConfig, type VmExit } from "./vmm/vm.js";
export type { BootSummary, KernelSource } from "./vmm/builder.js";
export { probePath } from "./probe/path.js";
export { parseProbeLines, findLine, type ProbeLine } from "./probe/probe-lines.js";
