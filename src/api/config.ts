// The microVM's configuration as the API builds it (Firecracker's resource shapes, so GET
// /vm/config can answer with them), the checks of what this Typervisor build can actually do,
// and the Firecracker `--config-file` format mapped onto the same resources.
//
// Drives (virtio-blk, one card each) follow Firecracker's BlockBuilder: a PUT of an existing
// drive_id replaces it in place, at most one root device, and the root device is always first,
// so it is /dev/vda. Each image is checked at the edge (it exists, is a regular file or block
// device of at least one sector, and opens read-write unless the drive is read-only). A root
// device adds `root=/dev/vda` (or `root=PARTUUID=<partuuid>`) and `ro`/`rw` to the kernel command
// line, as Firecracker's builder does; these are part of the command line the guest gets, so they
// are measured into PCR0/PCR1 with it.
//
// What this build refuses, and why (each refusal is a 400 naming the field, never a fake 204):
// - drives[].socket: no vhost-user-block backend; drives[].io_engine "Async": no io_uring engine
//   (every request is served by a synchronous pread/pwrite card).
// - drives[].cache_type: both values are accepted. "Writeback" is exactly what the card does
//   (VIRTIO_BLK_F_FLUSH offered, FLUSH = fdatasync). "Unsafe" (Firecracker's default, which
//   ignores flushes) is served the same way: flushes are still honoured, never weaker than asked.
// - entropy: served by a virtio-rng card fed from the host CSPRNG; its rate_limiter maps onto
//   the card's (a bucket with size or refill_time 0 is no limit, as Firecracker).
// - machine-config: smt, track_dirty_pages (no snapshots), CPU templates and huge pages; more
//   than MAX_VCPUS vCPUs (the spec allows 32), less than MIN_MEM_MIB of memory.
// - serial.rate_limiter: the UART has no rate limiter.
// - network-interfaces[].mtu (VIRTIO_NET_F_MTU is not offered); tx_rate_limiter and
//   rx_rate_limiter are served by the interface's card.
// - vsock: served (Firecracker's hybrid Unix-socket model); the card listens on uds_path at
//   InstanceStart.

import { MAX_VCPUS, MIN_MEM_MIB, MAX_MEM_MIB } from "../vmm/vm.js";
import { assignDeviceSlots, assignDriveSlots, DriveConfigError, type DriveConfig, type EntropyConfig } from "../vmm/drives.js";
import type { NetConfig } from "../devices/virtio/net/kind.js";
import type { VsockConfig } from "../devices/virtio/vsock/kind.js";
import { openImage, type RateLimiterConfig, type TokenBucketConfig } from "../cards/index.js";
import type { MicroVMConfig } from "../sdk/microvm.js";
import { DEFAULT_LINUX_CMDLINE } from "../sdk/defaults.js";
import {
  FaultError, bootSource, checkResourceId, drive, entropy, logger, machineConfig, metrics, networkInterface, serial, vsock,
  type BootSource, type Drive, type EntropyDevice, type NetworkInterface, type Vsock, type LoggerConfig, type MachineConfiguration, type MetricsConfig, type SerialConfig,
  type RateLimiter, type TokenBucket,
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
  /** Block drives in guest order: the root device (if any) first. */
  drives?: Drive[];
  /** The entropy device (virtio-rng), as PUT /entropy gave it. */
  entropy?: EntropyDevice;
  /** Network interfaces (virtio-net on a TAP each), in the order they were first put. */
  networkInterfaces?: NetworkInterface[];
  /** The vsock device, as PUT /vsock gave it. */
  vsock?: Vsock;
}

/** Firecracker's Vsock → the VM layer's, checked as the VM will check it (guest_cid, uds_path). */
export function vsockConfigFrom(v: Vsock, where = "vsock"): VsockConfig {
  const config: VsockConfig = { guestCid: v.guest_cid, udsPath: v.uds_path, ...(v.vsock_id !== undefined ? { id: v.vsock_id } : {}) };
  try {
    assignDeviceSlots({ vsock: config });
  } catch (e) {
    if (e instanceof DriveConfigError) throw new FaultError(`${where}: ${e.message}`);
    throw e;
  }
  return config;
}

/**
 * Checks a spec-valid network interface against what this build serves; `where` names it. The
 * TAP itself is opened when the VM starts (creating it needs CAP_NET_ADMIN).
 */
export function checkNetworkInterfaceSupported(n: NetworkInterface, where = "network-interface"): NetworkInterface {
  const at = `${where} "${n.iface_id}"`;
  checkResourceId(n.iface_id, `${at}: iface_id`);
  if (n.host_dev_name === "") throw new FaultError(`${at}: host_dev_name must name a TAP device`);
  if (n.mtu !== undefined) throw new FaultError(`${at}: mtu: VIRTIO_NET_F_MTU is not offered by this Typervisor build; leave mtu out (the guest uses 1500)`);
  return n;
}

/**
 * Firecracker's NetBuilder: an interface with a known iface_id is replaced in place; a host
 * device or guest MAC used by another interface is refused; the whole list is checked as the VM
 * will check it.
 */
export function insertNetworkInterface(list: readonly NetworkInterface[], n: NetworkInterface, where = "network-interface"): NetworkInterface[] {
  const next = [...list];
  const at = next.findIndex((x) => x.iface_id === n.iface_id);
  const clash = (k: "host_dev_name" | "guest_mac") => next.find((x, i) => i !== at && n[k] !== undefined && x[k] === n[k]);
  const tap = clash("host_dev_name");
  if (tap !== undefined) throw new FaultError(`${where} "${n.iface_id}": host_dev_name "${n.host_dev_name}" is already used by "${tap.iface_id}"`);
  const mac = clash("guest_mac");
  if (mac !== undefined) throw new FaultError(`${where} "${n.iface_id}": guest_mac ${n.guest_mac} is already used by "${mac.iface_id}"`);
  if (at === -1) next.push(n);
  else next[at] = n;
  try {
    assignDeviceSlots({ net: netConfigsFrom(next) });
  } catch (e) {
    if (e instanceof DriveConfigError) throw new FaultError(`${where} "${n.iface_id}": ${e.message}`);
    throw e;
  }
  return next;
}

/** The VM layer's network interface configs. */
export function netConfigsFrom(list: readonly NetworkInterface[]): NetConfig[] {
  return list.map((n) => ({
    id: n.iface_id,
    tap: n.host_dev_name,
    ...(n.guest_mac !== undefined ? { mac: n.guest_mac } : {}),
    ...(n.tx_rate_limiter !== undefined ? { txRateLimiter: rateLimiterFrom(n.tx_rate_limiter) } : {}),
    ...(n.rx_rate_limiter !== undefined ? { rxRateLimiter: rateLimiterFrom(n.rx_rate_limiter) } : {}),
  }));
}

/** Firecracker's EntropyDeviceConfig → the VM layer's: the rate limiter as for drives. */
export function entropyConfigFrom(e: EntropyDevice): EntropyConfig {
  return e.rate_limiter === undefined ? {} : { rateLimiter: rateLimiterFrom(e.rate_limiter) };
}

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

/** The kernel's PARTUUID forms: a GPT UUID or an MBR "SSSSSSSS-PP", optionally `/PARTNROFF=N`. No spaces: it goes on the command line. */
const PARTUUID_RE = /^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{2}|[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})(?:\/PARTNROFF=-?[0-9]{1,3})?$/;
/** The drive id is also the virtio-blk serial (GET_ID), which holds at most 20 bytes (virtio 1.2 §5.2.6). */
export const MAX_DRIVE_ID_BYTES = 20;

/**
 * Checks a spec-valid drive against what this build can serve and fills Firecracker's defaults
 * (`is_read_only` false, `cache_type` "Unsafe", `io_engine` "Sync"). Does not touch the image.
 */
export function checkDriveSupported(d: Drive, where = "drive"): Drive {
  const at = `${where} "${d.drive_id}"`;
  checkResourceId(d.drive_id, `${at}: drive_id`);
  if (Buffer.byteLength(d.drive_id) > MAX_DRIVE_ID_BYTES) {
    throw new FaultError(`${at}: drive_id must be at most ${MAX_DRIVE_ID_BYTES} bytes in this Typervisor build (it is the virtio-blk serial the guest reads), got ${Buffer.byteLength(d.drive_id)}`);
  }
  if (d.socket !== undefined) {
    throw new FaultError(`${at}: socket: vhost-user-block drives are not supported by this Typervisor build; give path_on_host for a virtio-blk drive`);
  }
  if (d.path_on_host === undefined) throw new FaultError(`${at}: missing field "path_on_host" (a virtio-blk drive needs a backing file)`);
  if (d.path_on_host === "") throw new FaultError(`${at}: path_on_host must not be empty`);
  if (d.io_engine === "Async") {
    throw new FaultError(`${at}: io_engine "Async" (io_uring) is not supported by this Typervisor build; use "Sync"`);
  }
  if (d.partuuid !== undefined && !PARTUUID_RE.test(d.partuuid)) {
    throw new FaultError(
      `${at}: partuuid must be a partition UUID (e.g. 6c7bc2a0-4e6f-4a08-9d1d-9b0d1f2d6e01, or an MBR id such as 1a2b3c4d-01), got ${JSON.stringify(d.partuuid.slice(0, 60))}`,
    );
  }
  return {
    drive_id: d.drive_id,
    ...(d.partuuid !== undefined ? { partuuid: d.partuuid } : {}),
    is_root_device: d.is_root_device,
    cache_type: d.cache_type ?? "Unsafe",
    is_read_only: d.is_read_only ?? false,
    path_on_host: d.path_on_host,
    ...(d.rate_limiter !== undefined ? { rate_limiter: d.rate_limiter } : {}),
    io_engine: "Sync",
  };
}

/** Opens the image the way the card will (same checks) and closes it; the message names the field. */
export function checkDriveImage(d: Drive, where = "drive"): void {
  try {
    openImage(d.path_on_host!, d.is_read_only === true).close();
  } catch (e) {
    if (e instanceof DriveConfigError) throw new FaultError(`${where} "${d.drive_id}": path_on_host: ${e.message}`);
    throw e;
  }
}

/**
 * Firecracker's BlockBuilder.insert: a drive with a known id replaces it in place, a second root
 * device is refused, the root device moves to the front. The image is checked at the edge, then
 * the whole list is given slots as the VM will (so a list that cannot boot is refused now).
 * Returns the new list; `list` is not changed.
 */
export function insertDrive(list: readonly Drive[], d: Drive, where = "drive"): Drive[] {
  const next = [...list];
  const at = next.findIndex((x) => x.drive_id === d.drive_id);
  const root = next.findIndex((x) => x.is_root_device);
  if (d.is_root_device && root !== -1 && root !== at) {
    throw new FaultError(`${where} "${d.drive_id}": is_root_device: a root block device already exists ("${next[root]!.drive_id}"); only one drive may be the root device`);
  }
  checkDriveImage(d, where);
  if (at === -1) {
    if (d.is_root_device) next.unshift(d);
    else next.push(d);
  } else {
    next[at] = d;
    if (d.is_root_device && at !== 0) {
      next.splice(at, 1);
      next.unshift(d);
    }
  }
  try {
    assignDriveSlots(driveConfigsFrom(next));
  } catch (e) {
    if (e instanceof DriveConfigError) throw new FaultError(`${where} "${d.drive_id}": ${e.message}`);
    throw e;
  }
  return next;
}

/** Firecracker's TokenBucket → ours. A size or refill_time of 0 means "no limit" there (TokenBucket::new gives None). */
export function tokenBucketFrom(b: TokenBucket): TokenBucketConfig | null {
  if (b.size === 0 || b.refill_time === 0) return null;
  return { size: b.size, refillTime: b.refill_time, ...(b.one_time_burst ? { oneTimeBurst: b.one_time_burst } : {}) };
}

/** Firecracker's RateLimiter → ours: an absent or disabled bucket is unlimited. */
export function rateLimiterFrom(r: RateLimiter): RateLimiterConfig {
  return {
    bandwidth: r.bandwidth === undefined ? null : tokenBucketFrom(r.bandwidth),
    ops: r.ops === undefined ? null : tokenBucketFrom(r.ops),
  };
}

/**
 * PATCH /drives semantics (Firecracker's BucketUpdate): a bucket absent from the patch is kept, a
 * bucket with size or refill_time 0 is removed, any other replaces the old one (full budget).
 */
export function mergeRateLimiter(current: RateLimiter | undefined, patch: RateLimiter): RateLimiter {
  const out: RateLimiter = {};
  for (const k of ["bandwidth", "ops"] as const) {
    const b = patch[k] !== undefined ? patch[k] : current?.[k];
    if (b !== undefined && tokenBucketFrom(b) !== null) out[k] = b;
  }
  return out;
}

/** The VM layer's drive configs, in guest order. */
export function driveConfigsFrom(list: readonly Drive[]): DriveConfig[] {
  return list.map((d) => ({
    id: d.drive_id,
    path: d.path_on_host!,
    readOnly: d.is_read_only === true,
    ...(d.rate_limiter !== undefined ? { rateLimiter: rateLimiterFrom(d.rate_limiter) } : {}),
  }));
}

/** What Firecracker's builder appends for the root device: `root=/dev/vda` or `root=PARTUUID=...`, then `ro`/`rw`. */
export function rootDeviceArgs(list: readonly Drive[]): string {
  const root = list.find((d) => d.is_root_device);
  if (root === undefined) return "";
  return `${root.partuuid !== undefined ? `root=PARTUUID=${root.partuuid}` : "root=/dev/vda"} ${root.is_read_only ? "ro" : "rw"}`;
}

/** Firecracker's default boot_args when PUT /boot-source gave none. */
export const DEFAULT_BOOT_ARGS = DEFAULT_LINUX_CMDLINE;

/** What a MicroVM needs from the resources; the kernel must be configured. */
export function microVmConfigFrom(r: VmResources): Omit<MicroVMConfig, "vmFactory" | "consoleFd"> {
  if (r.bootSource === undefined) {
    throw new FaultError("InstanceStart: cannot start the microVM without a boot source: PUT /boot-source first");
  }
  const drives = r.drives ?? [];
  const root = rootDeviceArgs(drives);
  const args = r.bootSource.boot_args ?? DEFAULT_BOOT_ARGS;
  return {
    kernel: r.bootSource.kernel_image_path,
    ...(r.bootSource.initrd_path !== undefined ? { initrd: r.bootSource.initrd_path } : {}),
    cmdline: root === "" ? args : `${args} ${root}`.trim(),
    vcpus: r.machine.vcpu_count,
    memMiB: r.machine.mem_size_mib,
    ...(drives.length > 0 ? { drives: driveConfigsFrom(drives) } : {}),
    ...(r.entropy !== undefined ? { entropy: entropyConfigFrom(r.entropy) } : {}),
    ...(r.networkInterfaces !== undefined && r.networkInterfaces.length > 0 ? { net: netConfigsFrom(r.networkInterfaces) } : {}),
    ...(r.vsock !== undefined ? { vsock: vsockConfigFrom(r.vsock) } : {}),
  };
}

/** Top-level sections of Firecracker's config file that this build has no device for. */
const UNSUPPORTED_SECTIONS: Record<string, string> = {
  balloon: "the balloon device is not supported by this Typervisor build",
  "mmds-config": "MMDS is not supported by this Typervisor build",
  "cpu-config": "custom CPU configuration is not supported by this Typervisor build",
  pmem: "pmem devices are not supported by this Typervisor build",
  "memory-hotplug": "memory hotplug is not supported by this Typervisor build",
};
const SECTIONS = ["boot-source", "machine-config", "drives", "network-interfaces", "vsock", "logger", "metrics", "entropy", "serial", ...Object.keys(UNSUPPORTED_SECTIONS)];

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
    let list: Drive[] = [];
    o["drives"].forEach((d, i) => {
      list = insertDrive(list, checkDriveSupported(drive(d, `drives[${i}]`), `drives[${i}]`), `drives[${i}]`);
    });
    if (list.length > 0) r.drives = list;
  }
  if (o["network-interfaces"] !== undefined && !isEmptySection(o["network-interfaces"])) {
    if (!Array.isArray(o["network-interfaces"])) throw new FaultError('config file: "network-interfaces" must be an array');
    let list: NetworkInterface[] = [];
    o["network-interfaces"].forEach((n, i) => {
      const where = `network-interfaces[${i}]`;
      list = insertNetworkInterface(list, checkNetworkInterfaceSupported(networkInterface(n, where), where), where);
    });
    if (list.length > 0) r.networkInterfaces = list;
  }
  if (o["vsock"] !== undefined && o["vsock"] !== null) {
    r.vsock = vsock(o["vsock"], "vsock");
    vsockConfigFrom(r.vsock);
  }
  if (o["entropy"] !== undefined && o["entropy"] !== null) r.entropy = entropy(o["entropy"], "entropy");
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
