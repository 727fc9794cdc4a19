// The package entry (`import { Vm } from "typervisor"`). The SDK's MicroVM class will live here;
// for now the VM lifecycle itself is exported.
export { Vm, VmConfigError, MAX_VCPUS, type VmConfig, type VmExit } from "./vmm/vm.js";
export type { BootSummary, KernelSource } from "./vmm/builder.js";
export { probePath } from "./probe/path.js";
export { parseProbeLines, findLine, type ProbeLine } from "./probe/report.js";
