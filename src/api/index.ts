// The control plane's public surface: the REST server, its config file, metrics, logs, the
// runtime registry and a small client. The CLI (src/cli) wires these; see README.md here.

export {
  startApiServer, attestationQuery, ATTESTATION_PATH, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_INSTANCE_ID, APP_NAME,
  type ApiServerOptions, type ApiServerHandle, type InstanceState,
} from "./server.js";
export {
  configFromFirecrackerJson, parseFirecrackerConfigFile, microVmConfigFrom, DEFAULT_MACHINE, DEFAULT_BOOT_ARGS, rootDeviceArgs,
  type VmResources,
} from "./config.js";
export { FaultError } from "./schema.js";
export { apiRequest, faultOf, fetchAttestation, type ApiResponse, type FetchAttestationOptions } from "./client.js";
export { registerRunningVm, listRunningVms, findRunningVm, defaultRuntimeDir, processAlive, type RunningVm } from "./registry.js";
export {
  startPrometheusServer, prometheusText, metricsLine, parseHostPort, type MetricsSnapshot, type PrometheusServerHandle,
} from "./metrics.js";
export { JsonLogger, type LogSink } from "./logger.js";
