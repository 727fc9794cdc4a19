// The embeddable microVM: one object that builds a VM from plain config, runs it, and hands back
// its console as a stream, its counters and how it ended. The REST server (src/api) is a façade
// over this class, so the lifecycle rules live in one place. `attest()` signs a Nitro-format
// attestation document over the VM's locked PCRs with the host's security chip (src/security).
// Every failure a user meets is one of the typed errors of errors.ts, each one sentence, with the
// lower layer's error as its cause.

import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { Vm, type ThreadKind, type VcpuThreadKind, type VmConfig, type VmExit, type VmState } from "../vmm/vm.js";
import type { KernelSource } from "../vmm/builder.js";
import type { DriveConfig, EntropyConfig, NsmConfig } from "../vmm/drives.js";
import type { NetConfig } from "../devices/virtio/net/kind.js";
import type { VsockConfig } from "../devices/virtio/vsock/kind.js";
import type { Socket } from "node:net";
import { connectVsock } from "./vsock.js";
import { DEFAULT_LINUX_CMDLINE, DEFAULT_PROBE_CMDLINE } from "./defaults.js";
import type { CardMetricsSnapshot, RateLimiterConfig } from "../cards/index.js";
import { CHIP_FILES, ChipError, chipLoad, type Chip } from "../security/chip.js";
import { createAttestationDocument, chipDocumentSource } from "../security/attestation.js";
import { defaultChipDir } from "../security/chip-dir.js";
import { verifyBootSignature, type BootSignature } from "../security/image.js";
import { packageRoot, PROBE_ELF_RELATIVE } from "../probe/path.js";
import { openConsolePipe, type ConsolePipe, DEFAULT_CONSOLE_BUFFER } from "./console-pipe.js";
import {
  AttestationUnavailableError, HostError, KernelImageError, MicroVMConfigError, MicroVMStateError, ProbeNotBuiltError, toMicroVMError,
} from "./errors.js";

export { AttestationUnavailableError };

/** Builds the VM for a validated config. Tests pass a factory over a fake machine. */
export type VmFactory = (config: VmConfig) => Vm;

/** The KVM-backed factory. */
export const defaultVmFactory: VmFactory = (config) => Vm.create(config);

/** The built-in probe guest (guest/build/probe.elf) as a kernel choice. */
export const PROBE_KERNEL = "probe" as const;

/** The command line a kernel choice gets when the config names none: the probe's demo, else a Linux kernel's. */
export function defaultCmdline(kernel: string | KernelSource): string {
  return kernel === PROBE_KERNEL ? DEFAULT_PROBE_CMDLINE : DEFAULT_LINUX_CMDLINE;
}

/** What a microVM is made of. Every field but `kernel` has a default. */
export interface MicroVMConfig {
  /** A kernel image path, its bytes, or `"probe"` for the built-in probe guest. */
  kernel: string | KernelSource;
  /** An initrd path or its bytes. */
  initrd?: string | KernelSource;
  /** Kernel command line. Default: `probe.run=demo` for the probe, DEFAULT_LINUX_CMDLINE (`console=ttyS0 reboot=k panic=1 pci=off`) otherwise. */
  cmdline?: string;
  /** vCPUs, 1 to 8. Default 1. */
  vcpus?: number;
  /** Guest memory in MiB. Default 128 (Firecracker's default). */
  memMiB?: number;
  /**
   * Where the vCPUs' exits are handled. "dedicated" (default): a worker thread per vCPU, the fastest
   * exits. "pooled": KVM_RUN on a thread of libuv's pool and the exits on this process's event
   * loop, with no V8 isolate per vCPU (less memory and a faster start per VM: many small VMs in
   * one process); each running pooled vCPU holds a pool thread, so start the process with
   * UV_THREADPOOL_SIZE above the number of pooled vCPUs you run at once. "main" (one vCPU only):
   * KVM_RUN blocks this thread and the exits are handled here, as fast as on a thread of their own
   * and with no isolate either, but this process's event loop then runs only between exits and
   * at a periodic signal (every few ms): for a process that runs one VM and little else.
   */
  vcpuThreads?: VcpuThreadKind;
  /**
   * Where the device cards run. "dedicated" (default): a worker thread each. "pooled": on this
   * process's event loop, each idle card waiting on a thread of libuv's pool (no V8 isolate per
   * card; counted against UV_THREADPOOL_SIZE as pooled vCPUs are).
   */
  cardThreads?: ThreadKind;
  /** Boot entry. Default: the Linux 64-bit protocol. */
  bootProtocol?: "linux64" | "pvh";
  /**
   * Where guest serial output goes. Omitted: into {@link MicroVM.console}. A file descriptor of
   * this process: written there directly (then `console` ends at once and stays empty); -1
   * discards it. The descriptor stays the caller's to close, after the VM has ended.
   */
  consoleFd?: number;
  /** Unread console bytes kept before output is dropped (counted in metrics). Default 1 MiB. */
  consoleBufferBytes?: number;
  /** Builds the VM (default: KVM). Inject a fake-machine factory to test without /dev/kvm. */
  vmFactory?: VmFactory;
  /**
   * virtio-blk drives, in guest order (the first is /dev/vda). Each image is checked when the VM
   * is built (it exists, is at least one sector, opens read-write unless `readOnly`).
   */
  drives?: DriveConfig[];
  /**
   * A virtio-rng device fed from the host CSPRNG (card `virtio-rng`), optionally rate limited
   * (`{ rateLimiter: { bandwidth?, ops? } }`, token buckets as for drives). Omitted: none.
   */
  entropy?: EntropyConfig;
  /**
   * The guest's Nitro Secure Module (virtio-nsm, card `virtio-nsm`): DescribeNSM, PCR extend/lock
   * over the VM's PCR bank, attestation documents signed by the security chip in `chipDir`.
   * `true` or `{ moduleId? }` (module_id; default `typervisor-<VM id>`). The chip identity is
   * checked when the VM is built: a missing or unusable one throws a MicroVMConfigError ("nsm: ...").
   */
  nsm?: boolean | { moduleId?: string };
  /**
   * Network interfaces: virtio-net on a host TAP each (`{ id, tap, mac?, txRateLimiter?, rxRateLimiter? }`,
   * Firecracker's network-interfaces). The TAP is opened (created if missing) when the VM starts,
   * which needs CAP_NET_ADMIN.
   */
  net?: NetConfig[];
  /**
   * A virtio-vsock device in Firecracker's hybrid model (`{ guestCid, udsPath }`): the VMM listens
   * on `udsPath` for host-initiated connections (see {@link MicroVM.vsock}); a guest connecting to
   * host port P reaches a listener on `${udsPath}_${P}`.
   */
  vsock?: VsockConfig;
  /** The VM's identity, measured into PCR4. Default: a random UUID. */
  id?: string;
  /**
   * The security chip identity `attest()` and the NSM device sign with (`typervisor chip init
   * --dir D`). Default: `$TYPERVISOR_CHIP_DIR`, else `~/.typervisor/chip` (as the `typervisor
   * chip` command).
   */
  chipDir?: string;
  /**
   * A `typervisor sign` signature over this boot's PCR0 (kernel ‖ cmdline ‖ initrd) and the
   * certificate trusted to have made it (PEM or DER). Checked in `create()`, before anything is
   * built: one that does not verify throws ImageSignatureError naming the failed check; one that
   * does has its certificate measured into PCR8.
   */
  imageSignature?: BootSignature;
}

/** What `attest()` puts in the document besides the PCRs (Nitro bounds: ≤ 512 B each, public key 1..1024 B). */
export interface AttestOptions {
  nonce?: Uint8Array;
  userData?: Uint8Array;
  publicKey?: Uint8Array;
}

/** Where the VM is in its life: the Vm's lifecycle state (vmm/vm.ts VM_TRANSITIONS). */
export type MicroVMState = VmState;

/** A snapshot of the counters of a running (or finished) microVM. */
export interface MicroVMMetrics {
  /** Milliseconds since the vCPUs were released; 0 before start. */
  uptimeMs: number;
  /** Exits by reason, one record per vCPU (index = vCPU id). */
  vcpus: ReturnType<Vm["exitCounters"]>;
  /** Console bytes read from the guest and bytes dropped because `console` was not read (stream mode only). */
  console: { bytes: number; droppedBytes: number };
  /** Per drive id: requests, bytes, errors, throttled (requests held back by the rate limiter), kicks, interrupts, needsReset. */
  drives: Record<string, CardMetricsSnapshot>;
  /**
   * Per running card, by card name (`virtio-blk-<drive id>`, `virtio-rng`, `virtio-nsm`): the same
   * counters. For virtio-rng, requests = buffers filled and bytes = entropy bytes given; for
   * virtio-nsm, requests = NSM requests answered. Empty before start.
   */
  devices: Record<string, CardMetricsSnapshot>;
  /** Firecracker-style metric groups of the non-block devices (entropy, nsm), as each device kind names them. */
  groups: Record<string, Record<string, number>>;
}

/**
 * Events: `start` (); `exit` ({@link VmExit}) once, however the VM ended; `crash` ({@link VmExit})
 * as well when it ended by a guest crash or a vCPU error; `pause` (); `resume` ().
 */
export interface MicroVMEvents {
  start: [];
  exit: [VmExit];
  crash: [VmExit];
  pause: [];
  resume: [];
}

/** Loads the chip identity for one document (so a re-initialised chip is picked up at once). */
function loadChip(dir: string): Chip {
  // No identity at all is what `chip init` fixes; a partial or corrupt one needs a person.
  if (!existsSync(dir) || !Object.values(CHIP_FILES).some((f) => existsSync(join(dir, f)))) {
    throw new AttestationUnavailableError(
      `no security chip identity at ${dir}: run "typervisor chip init" (or set chipDir / $TYPERVISOR_CHIP_DIR to where one is)`,
    );
  }
  try {
    return chipLoad(dir);
  } catch (e) {
    if (e instanceof ChipError) throw new AttestationUnavailableError(`the security chip identity at ${dir} is unusable: ${e.message}`);
    throw e;
  }
}

/** `nsm: true | { moduleId? }` → the VM layer's NsmConfig over `chipDir`; false/undefined → none. */
function resolveNsm(nsm: MicroVMConfig["nsm"], chipDir: string): NsmConfig | undefined {
  if (nsm === undefined || nsm === false) return undefined;
  if (nsm === true) return { chipDir };
  if (typeof nsm !== "object" || nsm === null) throw new MicroVMConfigError(`nsm must be true, false or { moduleId? }, got ${String(nsm)}`);
  const { moduleId } = nsm;
  if (moduleId !== undefined && (typeof moduleId !== "string" || moduleId.length === 0)) {
    throw new MicroVMConfigError("nsm.moduleId must be a non-empty string");
  }
  return moduleId === undefined ? { chipDir } : { chipDir, moduleId };
}

/** What an errno from reading an image means, for the one sentence. */
const READ_FAILURES: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "it is a directory",
  ENOTDIR: "a part of the path is not a directory",
  ELOOP: "too many symbolic links",
  ENAMETOOLONG: "the path is too long",
};

/** The probe guest's path in the package at `root` (this one); ProbeNotBuiltError when it has not been built. */
export function probeKernelPath(root = packageRoot()): string {
  const guest = join(root, "guest");
  const path = join(root, PROBE_ELF_RELATIVE);
  if (!existsSync(path)) {
    throw new ProbeNotBuiltError(`the probe guest is not built (${path} is missing): build it with "make -C ${guest} build/probe.elf" (needs gcc and make)`, path);
  }
  return path;
}

/**
 * Reads a kernel/initrd choice (a path, `"probe"` for the kernel, or `{ name, bytes }`) into bytes.
 * Throws KernelImageError naming the path and why it cannot be read, ProbeNotBuiltError, or
 * MicroVMConfigError for a value that is none of these.
 */
export function loadSource(src: string | KernelSource, what: "kernel" | "initrd"): KernelSource {
  if (typeof src !== "string") {
    if (typeof src !== "object" || src === null || !(src.bytes instanceof Uint8Array) || typeof src.name !== "string") {
      throw new MicroVMConfigError(`${what} must be a path${what === "kernel" ? `, "${PROBE_KERNEL}"` : ""} or { name, bytes: Uint8Array }, got ${describe(src)}`);
    }
    return src;
  }
  if (src === "") throw new MicroVMConfigError(`${what} must be a path${what === "kernel" ? ` or "${PROBE_KERNEL}"` : ""}, got an empty string`);
  const path = src === PROBE_KERNEL && what === "kernel" ? probeKernelPath() : src;
  try {
    return { name: path, bytes: new Uint8Array(readFileSync(path)) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "EIO";
    const why = READ_FAILURES[code] ?? (e as Error).message;
    throw new KernelImageError(`cannot read the ${what} image "${path}": ${code} (${why})`, what, path, { cause: e });
  }
}

/** A value as a message shows it: its type, and the value itself when short. */
function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return Array.isArray(v) ? "an array" : "an object without name and bytes";
  const s = String(v);
  return `${typeof v} ${s.length > 40 ? `${s.slice(0, 40)}...` : s}`;
}

/**
 * A microVM.
 *
 * ```ts
 * const vm = MicroVM.create({ kernel: "probe", cmdline: "probe.run=demo" });
 * vm.console.pipe(process.stdout);
 * await vm.start();
 * const exit = await vm.exited;
 * ```
 */
export class MicroVM extends EventEmitter<MicroVMEvents> {
  /** The VM underneath (for the API server and tests). */
  readonly vm: Vm;
  /** The resolved configuration. */
  readonly config: Readonly<Required<Omit<MicroVMConfig, "initrd" | "consoleFd" | "vmFactory" | "kernel" | "drives" | "entropy" | "nsm" | "net" | "vsock" | "imageSignature">>> & {
    kernel: string;
    initrd?: string;
    drives: readonly DriveConfig[];
    /** The network interfaces. */
    net: readonly NetConfig[];
    /** The vsock device, when configured. */
    vsock?: VsockConfig;
    /** The entropy device, when configured. */
    entropy?: EntropyConfig;
    /** The NSM device as the VM got it (chip directory and module id), when configured. */
    nsm?: NsmConfig;
  };
  /** Resolves with how the VM ended (after `stop()`, a guest exit or a crash). */
  readonly exited: Promise<VmExit>;
  private readonly pipe: ConsolePipe | undefined;
  private readonly emptyConsole: Readable | undefined;

  private constructor(vm: Vm, config: MicroVM["config"], pipe: ConsolePipe | undefined, empty: Readable | undefined) {
    super();
    this.vm = vm;
    this.config = config;
    this.pipe = pipe;
    this.emptyConsole = empty;
    // The lifecycle is the Vm's (VM_TRANSITIONS): its transitions are this object's events, and
    // `state` reads its state, so the two cannot disagree however the VM is driven.
    for (const event of ["start", "pause", "resume"] as const) vm.on(event, () => this.emit(event));
    this.exited = vm.wait().then((exit) => {
      // Every vCPU thread has stopped: no more console writes, so the stream may end.
      this.pipe?.closeWriteEnd();
      try {
        vm.close();
      } catch {
        // Closing can only fail while vCPUs run, and they have all stopped.
      }
      this.emit("exit", exit);
      if (exit.kind === "crash" || exit.kind === "error") this.emit("crash", exit);
      return exit;
    });
  }

  /**
   * Builds a microVM (KVM objects, guest memory, the loaded kernel) ready to `start()`.
   * Throws MicroVMConfigError naming the field for bad config, KernelImageError naming the path
   * for an unreadable image or one that is not a kernel, ProbeNotBuiltError, KvmUnavailableError
   * when this host has no usable KVM, HostError when the host refuses memory or descriptors, and
   * ImageSignatureError for an `imageSignature` that does not verify.
   */
  static create(config: MicroVMConfig): MicroVM {
    if (typeof config !== "object" || config === null) throw new MicroVMConfigError(`MicroVM.create needs a config object ({ kernel, ... }), got ${String(config)}`);
    if (config.kernel === undefined) throw new MicroVMConfigError(`kernel is required: a path, "${PROBE_KERNEL}" or { name, bytes }`);
    for (const list of ["drives", "net"] as const) {
      if (config[list] !== undefined && !Array.isArray(config[list])) throw new MicroVMConfigError(`${list} must be an array, got ${typeof config[list]}`);
    }
    const kernel = loadSource(config.kernel, "kernel");
    const initrd = config.initrd === undefined ? undefined : loadSource(config.initrd, "initrd");
    const drives = (config.drives ?? []).map((d) => ({ ...d }));
    const net = (config.net ?? []).map((n) => ({ ...n }));
    const vsock = config.vsock === undefined ? undefined : { ...config.vsock };
    const chipDir = config.chipDir ?? defaultChipDir();
    const entropy = config.entropy === undefined ? undefined : { ...config.entropy };
    const nsm = resolveNsm(config.nsm, chipDir);
    const resolved = {
      kernel: kernel.name,
      initrd: initrd?.name,
      cmdline: config.cmdline ?? defaultCmdline(config.kernel),
      vcpus: config.vcpus ?? 1,
      memMiB: config.memMiB ?? 128,
      vcpuThreads: config.vcpuThreads ?? "dedicated",
      cardThreads: config.cardThreads ?? "dedicated",
      bootProtocol: config.bootProtocol ?? "linux64",
      consoleBufferBytes: config.consoleBufferBytes ?? DEFAULT_CONSOLE_BUFFER,
      drives,
      net,
      ...(vsock !== undefined ? { vsock } : {}),
      chipDir,
      ...(entropy !== undefined ? { entropy } : {}),
      ...(nsm !== undefined ? { nsm } : {}),
    };
    const signingCert =
      config.imageSignature === undefined
        ? undefined
        : verifyBootSignature(config.imageSignature, { kernel: kernel.bytes, initrd: initrd?.bytes, cmdline: resolved.cmdline });
    let pipe: ConsolePipe | undefined;
    try {
      pipe = config.consoleFd === undefined ? openConsolePipe(resolved.consoleBufferBytes) : undefined;
    } catch (e) {
      throw new HostError(`the console pipe cannot be made: ${(e as Error).message}`, (e as NodeJS.ErrnoException).code, { cause: e });
    }
    try {
      const vm = (config.vmFactory ?? defaultVmFactory)({
        kernel,
        initrd,
        cmdline: resolved.cmdline,
        vcpus: resolved.vcpus,
        memMiB: resolved.memMiB,
        vcpuThreads: resolved.vcpuThreads,
        cardThreads: resolved.cardThreads,
        bootProtocol: resolved.bootProtocol,
        consoleFd: pipe?.writeFd ?? config.consoleFd!,
        ...(drives.length > 0 ? { drives } : {}),
        ...(entropy !== undefined ? { entropy } : {}),
        ...(nsm !== undefined ? { nsm } : {}),
        ...(net.length > 0 ? { net } : {}),
        ...(vsock !== undefined ? { vsock } : {}),
        ...(config.id !== undefined ? { id: config.id } : {}),
        ...(signingCert !== undefined ? { signingCert } : {}),
      });
      let empty: Readable | undefined;
      if (pipe === undefined) {
        empty = new PassThrough();
        empty.push(null);
      }
      return new MicroVM(vm, { ...resolved, id: vm.id }, pipe, empty);
    } catch (e) {
      pipe?.destroy();
      throw toMicroVMError(e, { during: "create", kernel: kernel.name });
    }
  }

  /** Guest serial output. Ends when the VM has stopped and all output has been read. */
  get console(): Readable {
    return this.pipe?.stream ?? this.emptyConsole!;
  }

  /** Where the VM is in its life: the Vm's own state (vmm/vm.ts VM_TRANSITIONS), never a copy. */
  get state(): MicroVMState {
    return this.vm.state;
  }

  /** How the VM ended, once it has. */
  get exit(): VmExit | undefined {
    return this.vm.exit;
  }

  /** Starts every vCPU; resolves once they run. Rejects with MicroVMStateError unless created, HostError or MicroVMConfigError when a device or thread cannot start. */
  async start(): Promise<void> {
    this.requireState("start", "created");
    this.pipe?.hold();
    try {
      await this.vm.start();
    } catch (e) {
      throw toMicroVMError(e, { during: "start", kernel: this.config.kernel });
    }
  }

  /** Parks every vCPU (guest time stops); resolves once all are parked. Throws unless running. */
  async pause(): Promise<void> {
    this.requireState("pause", "running");
    try {
      await this.vm.pause();
    } catch (e) {
      throw toMicroVMError(e, { during: "pause" });
    }
  }

  /** Resumes a paused VM. */
  resume(): void {
    this.requireState("resume", "paused");
    this.vm.resume();
  }

  /** Stops the VM (if it has not stopped already) and resolves with how it ended. */
  stop(by = "sdk"): Promise<VmExit> {
    if (this.vm.state !== "stopped") this.vm.stop(by);
    return this.exited;
  }

  /**
   * Changes a drive of the running VM (Firecracker's PATCH /drives): `path` puts another image under
   * it — the guest is told the new capacity by a config change, and a missing or unusable file
   * rejects with nothing changed; `rateLimiter` replaces its limits (a null bucket removes one).
   * Card drives only (the emulated and dom0 paths have neither). Rejects with MicroVMConfigError
   * for an unknown drive, a missing or unusable image or bad limits, and MicroVMStateError unless
   * the VM is running or paused.
   */
  async updateDrive(driveId: string, update: { path?: string; rateLimiter?: RateLimiterConfig }): Promise<{ sizeBytes?: number }> {
    this.requireState("update a drive of", "running", "paused");
    try {
      const swapped = update.path !== undefined ? await this.vm.updateDrivePath(driveId, update.path) : {};
      if (update.rateLimiter !== undefined) this.vm.updateDriveRateLimiter(driveId, update.rateLimiter);
      return swapped;
    } catch (e) {
      throw toMicroVMError(e, { during: "update" });
    }
  }

  /**
   * Presses Ctrl+Alt+Del on the guest's keyboard (Firecracker's SendCtrlAltDel): a Linux guest
   * booted with `reboot=k` then reboots, which ends the VM.
   */
  sendCtrlAltDel(): void {
    this.requireState("send Ctrl+Alt+Del to", "running", "paused");
    try {
      this.vm.sendCtrlAltDel();
    } catch (e) {
      throw toMicroVMError(e, { during: "update" });
    }
  }

  /**
   * The host side of the guest's vsock listeners: `connect(port)` resolves with a Duplex (a
   * net.Socket) to the guest's listener on `port` (Firecracker's CONNECT/OK handshake on
   * `udsPath`). Rejects with VsockConnectError when the guest does not accept, and with
   * MicroVMConfigError when the VM has no vsock device.
   */
  get vsock(): { connect(port: number, opts?: { timeoutMs?: number }): Promise<Socket> } {
    const v = this.config.vsock;
    return {
      connect: async (port, opts) => {
        if (v === undefined) throw new MicroVMConfigError("this microVM has no vsock device: give vsock: { guestCid, udsPath } to MicroVM.create");
        this.requireState("connect to the vsock of", "running", "paused");
        return (await connectVsock(v.udsPath, port, opts)).socket;
      },
    };
  }

  /**
   * Changes a network interface of the running VM (Firecracker's PATCH /network-interfaces): its
   * transmit and receive rate limiters (null buckets: unlimited).
   */
  async updateNetworkInterface(id: string, update: { txRateLimiter?: RateLimiterConfig; rxRateLimiter?: RateLimiterConfig }): Promise<void> {
    this.requireState("update a network interface of", "running", "paused");
    try {
      if (update.txRateLimiter !== undefined) this.vm.updateDeviceRateLimiter("net", id, update.txRateLimiter);
      if (update.rxRateLimiter !== undefined) await this.vm.updateDevice("net", id, "rxRateLimiter", update.rxRateLimiter);
    } catch (e) {
      throw toMicroVMError(e, { during: "update" });
    }
  }

  /** Throws MicroVMStateError (`cannot <what> a microVM that is <state>`) unless the state is one of `allowed`. */
  private requireState(what: string, ...allowed: MicroVMState[]): void {
    const state = this.state;
    if (!allowed.includes(state)) throw new MicroVMStateError(`cannot ${what} a microVM that is ${state}`, state);
  }

  /** Counters: per-vCPU exits by reason, uptime, console bytes, per drive and per card. */
  metrics(): MicroVMMetrics {
    const startedAt = this.vm.startedAt;
    return {
      uptimeMs: startedAt === undefined ? 0 : Date.now() - startedAt,
      vcpus: this.vm.exitCounters(),
      console: this.pipe?.counters() ?? { bytes: 0, droppedBytes: 0 },
      drives: this.vm.driveMetrics(),
      devices: this.vm.deviceMetrics(),
      groups: this.vm.deviceMetricGroups(),
    };
  }

  /** The VM's identity (PCR4). */
  get id(): string {
    return this.vm.id;
  }

  /**
   * A Nitro-format attestation document (COSE_Sign1 bytes) for this VM: every locked PCR (the
   * boot measurements PCR0/1/2/4, and any PCR the guest has locked since), signed by the
   * security chip in `config.chipDir`; `module_id` is the VM's id. Verify it with
   * `verifyAttestation(doc, { root })` against the chip's root certificate.
   *
   * Throws {@link AttestationUnavailableError} when there is no chip identity ("run typervisor
   * chip init"), `AttestationInputError` for oversized fields, and MicroVMStateError for a stopped VM.
   */
  attest(opts: AttestOptions = {}): Uint8Array {
    this.requireState("attest", "created", "running", "paused");
    const chip = loadChip(this.config.chipDir);
    const src = chipDocumentSource(chip, this.vm.id, this.vm.pcrs.lockedValues());
    return createAttestationDocument(src, { nonce: opts.nonce, userData: opts.userData, publicKey: opts.publicKey });
  }

  /** Console input for the guest's UART; returns the bytes accepted. */
  write(bytes: Uint8Array | string): number {
    return this.vm.sendConsoleInput(typeof bytes === "string" ? Buffer.from(bytes) : bytes);
  }
}
