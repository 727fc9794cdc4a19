// The embeddable SDK: `MicroVM` (microvm.ts), and the client side of a running VM's API socket
// that the `typervisor` CLI uses (`ps`, `attest --vm`): the runtime registry and the requests.
export {
  MicroVM, PROBE_KERNEL, AttestationUnavailableError, defaultVmFactory,
  type MicroVMConfig, type MicroVMMetrics, type MicroVMState, type MicroVMEvents, type VmFactory, type AttestOptions,
} from "./microvm.js";
export {
  MicroVMError, MicroVMConfigError, KernelImageError, ProbeNotBuiltError, KvmUnavailableError, HostError, MicroVMStateError,
} from "./errors.js";
export { AttestationInputError } from "../security/attestation.js";
export { connectVsock, VsockConnectError } from "./vsock.js";
export type { NetConfig } from "../devices/virtio/net/kind.js";
export type { VsockConfig } from "../devices/virtio/vsock/kind.js";
export type { DriveConfig } from "../vmm/drives.js";
export { ImageSignatureError, type BootSignature } from "../security/image.js";
export type { RateLimiterConfig, TokenBucketConfig, CardMetricsSnapshot } from "../cards/index.js";
export { fetchAttestation, apiRequest, faultOf, type FetchAttestationOptions, type ApiResponse } from "../api/client.js";
export { listRunningVms, findRunningVm, defaultRuntimeDir, type RunningVm } from "../api/registry.js";
