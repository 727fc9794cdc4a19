// The microVM's configuration as the API builds it (Firecracker's resource shapes, so GET
// /vm/config can answer with them), the checks of what this Typervisor build can actually do,
// and the Firecracker `--config-file` format mapped onto the same resources.
//
// What this build refuses, and why (each refusal is a 400 naming the field, never a fake 204):
// - drives: the virtio-blk card exists but is not wired into the VM. PUT /drives is validated
//   against the spec, then refused, so a client learns at the step that cannot work.
// - entropy: there is no virtio-rng device yet. Same rule.
// - machine-config: smt, track_dirty_pages (no snapshots), CPU templates and huge pages; more
//   than MAX_VCPUS vCPUs (the spec allows 32), less than MIN_MEM_MIB of memory.
// - serial.rate_limiter: the UART has no rate limiter.

import { MAX_VCPUS, MIN_MEM_MIB, MAX_MEM_MIB } from "../vmm/vm.js";
import type { MicroVMConfig } from "../sdk/microvm.js";
import {
  FaultError, bootSource, drive, entropy, logger, machineConfig, metrics, serial,
  type BootSource, type Drive, type LoggerConfig, type MachineConfiguration, type MetricsConfig, type SerialConfig,
} from "./schema.js";

/** Firecracker's defaults: 1 vCPU, 128 MiB, no SMT, no template. */
export const DEFAULT_MACHINE: MachineConfiguration = {
  vcpu_count: 1,
  mem_size_mib: 128,
  smt: false,
  track_dirty_pages: false,
  huge_pages: "None",
};

/** Everything configured before InstanceStart. */
export interface VmResources {
  bootSource?: BootSource;
  machine: MachineConfiguration;
  logger?: LoggerConfig;
  metrics?: MetricsConfig;
  serial?: SerialConfig;
}

export const DRIVES_REFUSED =
  "drives are not supported yet by this Typervisor build: the virtio-blk card is not wired into the VM";
export const ENTROPY_REFUSED =
  "entropy devices are not supported yet by this Typervisor build: there is no virtio-rng device";

/** Checks a complete machine configuration against what this build runs; `where` names the resource. */
export function checkMachineSupported(m: MachineConfiguration, where = "machine-config"): MachineConfiguration {
  if (m.vcpu_count > MAX_VCPUS) {
    throw new FaultError(`${where}.vcpu_count must be from 1 to ${MAX_VCPUS} in this Typervisor build, got ${m.vcpu_count}`);
  }
  if (m.mem_size_mib < MIN_MEM_MIB || m.mem_size_mib > MAX_MEM_MIB) {
    throw new FaultError(`${where}.mem_size_mib must be from ${MIN_MEM_MIB} to ${MAX_MEM_MIB} in this Typervisor build, got ${m.mem_size_mib}`);
  }
  if (m.smt === true) throw new FaultError(`${where}.smt: simultaneous multithreading is not supported by this Typervisor build`);
  if (m.track_dirty_pages === true) {
    throw new FaultError(`${where}.track_dirty_pages: dirty page tracking is not supported by this Typervisor build (it has no snapshots)`);
  }
  if (m.cpu_template !== undefined && m.cpu_template !== "None") {
    throw new FaultError(`${where}.cpu_template: CPU templates are not supported by this Typervisor build, got "${m.cpu_template}"`);
  }
  if (m.huge_pages !== undefined && m.huge_pages !== "None") {
    throw new FaultError(`${where}.huge_pages: only "None" is supported by this Typervisor build, got "${m.huge_pages}"`);
  }
  return m;
}

export function checkSerialSupported(s: SerialConfig, where = "serial"): SerialConfig {
  if (s.rate_limiter !== undefined) {
    throw new FaultError(`${where}.rate_limiter: the serial console has no rate limiter in this Typervisor build`);
  }
  return s;
}

/** Validates a drive against the spec, then refuses it (see the file comment). */
export function refuseDrive(body: unknown, where: string): never {
  const d: Drive = drive(body, where);
  throw new FaultError(`${where} "${d.drive_id}": ${DRIVES_REFUSED}`);
}

/** What a MicroVM needs from the resources; the kernel must be configured. */
export function microVmConfigFrom(r: VmResources): Omit<MicroVMConfig, "vmFactory" | "consoleFd"> {
  if (r.bootSource === undefined) {
    throw new FaultError("InstanceStart: cannot start the microVM without a boot source: PUT /boot-source first");
  }
  return {
    kernel: r.bootSource.kernel_image_path,
    ...(r.bootSource.initrd_path !== undefined ? { initrd: r.bootSource.initrd_path } : {}),
    cmdline: r.bootSource.boot_args ?? "console=ttyS0 reboot=k panic=1",
    vcpus: r.machine.vcpu_count,
    memMiB: r.machine.mem_size_mib,
  };
}

/** Top-level sections of Firecracker's config file that this build has no device for. */
const UNSUPPORTED_SECTIONS: Record<string, string> = {
  "network-interfaces": "network interfaces are not supported yet by this Typervisor build: there is no virtio-net device",
  vsock: "vsock is not supported yet by this Typervisor build: there is no virtio-vsock device",
  balloon: "the balloon device is not supported by this Typervisor build",
  "mmds-config": "MMDS is not supported by this Typervisor build",
  "cpu-config": "custom CPU configuration is not supported by this Typervisor build",
  pmem: "pmem devices are not supported by this Typervisor build",
  "memory-hotplug": "memory hotplug is not supported by this Typervisor build",
};
const SECTIONS = ["boot-source", "machine-config", "drives", "logger", "metrics", "entropy", "serial", ...Object.keys(UNSUPPORTED_SECTIONS)];

function isEmptySection(v: unknown): boolean {
  return v === null || (Array.isArray(v) && v.length === 0);
}

/**
 * Maps Firecracker's `--config-file` JSON onto our resources, with the same field-level errors
 * as the API (the message names the section and field). The file boots at once, so a boot
 * source is required. Empty sections (`null`, `[]`) of devices we lack are accepted.
 */
export function configFromFirecrackerJson(obj: unknown): VmResources {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new FaultError("config file: the top level must be a JSON object");
  }
  const o = obj as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!SECTIONS.includes(k)) throw new FaultError(`config file: unknown section "${k}", expected one of: ${SECTIONS.join(", ")}`);
    if (k in UNSUPPORTED_SECTIONS && !isEmptySection(o[k])) throw new FaultError(`config file: "${k}": ${UNSUPPORTED_SECTIONS[k]}`);
  }
  if (!("boot-source" in o)) throw new FaultError('config file: missing required section "boot-source"');
  const r: VmResources = { bootSource: bootSource(o["boot-source"], "boot-source"), machine: DEFAULT_MACHINE };
  if (o["machine-config"] !== undefined) {
    r.machine = checkMachineSupported({ ...DEFAULT_MACHINE, ...machineConfig(o["machine-config"], "machine-config") });
  }
  if (o["drives"] !== undefined && !isEmptySection(o["drives"])) {
    if (!Array.isArray(o["drives"])) throw new FaultError("config file: \"drives\" must be an array");
    o["drives"].forEach((d, i) => refuseDrive(d, `drives[${i}]`));
  }
  if (o["entropy"] !== undefined && o["entropy"] !== null) {
    entropy(o["entropy"], "entropy");
    throw new FaultError(`entropy: ${ENTROPY_REFUSED}`);
  }
  if (o["logger"] !== undefined && o["logger"] !== null) r.logger = logger(o["logger"], "logger");
  if (o["metrics"] !== undefined && o["metrics"] !== null) r.metrics = metrics(o["metrics"], "metrics");
  if (o["serial"] !== undefined && o["serial"] !== null) r.serial = checkSerialSupported(serial(o["serial"], "serial"));
  return r;
}

/** Parses the text of a config file (JSON) and maps it; JSON syntax errors name the file. */
export function parseFirecrackerConfigFile(text: string, name = "config file"): VmResources {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new FaultError(`${name}: malformed JSON: ${(e as Error).message}`);
  }
  return configFromFirecrackerJson(obj);
}
