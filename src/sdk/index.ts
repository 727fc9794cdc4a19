// The embeddable SDK: `MicroVM`. See microvm.ts.
export {
  MicroVM, PROBE_KERNEL, defaultVmFactory,
  type MicroVMConfig, type MicroVMMetrics, type MicroVMState, type MicroVMEvents, type VmFactory,
} from "./microvm.js";
