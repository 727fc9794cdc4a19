// The embeddable microVM: one object that builds a VM from plain config, runs it, and hands back
// its console as a stream, its counters and how it ended. The REST server (src/api) is a façade
// over this class, so the lifecycle rules live in one place.

import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { PassThrough, type Readable } from "node:stream";
import { Vm, type VmConfig, type VmExit } from "../vmm/vm.js";
import type { KernelSource } from "../vmm/builder.js";
import { probePath } from "../probe/path.js";
import { openConsolePipe, type ConsolePipe, DEFAULT_CONSOLE_BUFFER } from "./console-pipe.js";

/** Builds the VM for a validated config. Tests pass a factory over a fake machine. */
export type VmFactory = (config: VmConfig) => Vm;

/** The KVM-backed factory. */
export const defaultVmFactory: VmFactory = (config) => Vm.create(config);

/** The built-in probe guest (guest/build/probe.elf) as a kernel choice. */
export const PROBE_KERNEL = "probe" as const;

/** What a microVM is made of. Every field but `kernel` has a default. */
export interface MicroVMConfig {
  /** A kernel image path, its bytes, or `"probe"` for the built-in probe guest. */
  kernel: string | KernelSource;
  /** An initrd path or its bytes. */
  initrd?: string | KernelSource;
  /** Kernel command line. Default: `probe.run=demo` for the probe, `console=ttyS0 reboot=k panic=1` otherwise. */
  cmdline?: string;
  /** vCPUs, 1 to 8. Default 1. */
  vcpus?: number;
  /** Guest memory in MiB. Default 128 (Firecracker's default). */
  memMiB?: number;
  /** Boot entry. Default: the Linux 64-bit protocol. */
  bootProtocol?: "linux64" | "pvh";
  /**
   * Where guest serial output goes. Omitted: into {@link MicroVM.console}. A file descriptor of
   * this process: written there directly (then `console` ends at once and stays empty).
   */
  consoleFd?: number;
  /** Unread console bytes kept before output is dropped (counted in metrics). Default 1 MiB. */
  consoleBufferBytes?: number;
  /** Builds the VM (default: KVM). Inject a fake-machine factory to test without /dev/kvm. */
  vmFactory?: VmFactory;
}

/** Where the VM is in its life. */
export type MicroVMState = "created" | "running" | "paused" | "stopped";

/** A snapshot of the counters of a running (or finished) microVM. */
export interface MicroVMMetrics {
  /** Milliseconds since the vCPUs were released; 0 before start. */
  uptimeMs: number;
  /** Exits by reason, one record per vCPU (index = vCPU id). */
  vcpus: ReturnType<Vm["exitCounters"]>;
  /** Console bytes read from the guest and bytes dropped because `console` was not read (stream mode only). */
  console: { bytes: number; droppedBytes: number };
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

/** Reads a kernel/initrd choice into bytes, with a message naming the path on failure. */
export function loadSource(src: string | KernelSource, what: string): KernelSource {
  if (typeof src !== "string") return src;
  const path = src === PROBE_KERNEL && what === "kernel" ? probePath() : src;
  try {
    return { name: path, bytes: new Uint8Array(readFileSync(path)) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new Error(`cannot read the ${what} image "${path}": ${code}`);
  }
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
  readonly config: Readonly<Required<Omit<MicroVMConfig, "initrd" | "consoleFd" | "vmFactory" | "kernel">>> & { kernel: string; initrd?: string };
  /** Resolves with how the VM ended (after `stop()`, a guest exit or a crash). */
  readonly exited: Promise<VmExit>;
  private readonly pipe: ConsolePipe | undefined;
  private readonly emptyConsole: Readable | undefined;
  private stateValue: MicroVMState = "created";
  private exitValue: VmExit | undefined;

  private constructor(vm: Vm, config: MicroVM["config"], pipe: ConsolePipe | undefined, empty: Readable | undefined) {
    super();
    this.vm = vm;
    this.config = config;
    this.pipe = pipe;
    this.emptyConsole = empty;
    this.exited = vm.wait().then((exit) => {
      this.exitValue = exit;
      this.stateValue = "stopped";
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
   * Throws with a message naming the field for bad config and the path for unreadable images.
   */
  static create(config: MicroVMConfig): MicroVM {
    const isProbe = config.kernel === PROBE_KERNEL;
    const kernel = loadSource(config.kernel, "kernel");
    const initrd = config.initrd === undefined ? undefined : loadSource(config.initrd, "initrd");
    const resolved = {
      kernel: kernel.name,
      initrd: initrd?.name,
      cmdline: config.cmdline ?? (isProbe ? "probe.run=demo" : "console=ttyS0 reboot=k panic=1"),
      vcpus: config.vcpus ?? 1,
      memMiB: config.memMiB ?? 128,
      bootProtocol: config.bootProtocol ?? "linux64",
      consoleBufferBytes: config.consoleBufferBytes ?? DEFAULT_CONSOLE_BUFFER,
    };
    const pipe = config.consoleFd === undefined ? openConsolePipe(resolved.consoleBufferBytes) : undefined;
    try {
      const vm = (config.vmFactory ?? defaultVmFactory)({
        kernel,
        initrd,
        cmdline: resolved.cmdline,
        vcpus: resolved.vcpus,
        memMiB: resolved.memMiB,
        bootProtocol: resolved.bootProtocol,
        consoleFd: pipe?.writeFd ?? config.consoleFd!,
      });
      let empty: Readable | undefined;
      if (pipe === undefined) {
        empty = new PassThrough();
        empty.push(null);
      }
      return new MicroVM(vm, resolved, pipe, empty);
    } catch (e) {
      pipe?.destroy();
      throw e;
    }
  }

  /** Guest serial output. Ends when the VM has stopped and all output has been read. */
  get console(): Readable {
    return this.pipe?.stream ?? this.emptyConsole!;
  }

  get state(): MicroVMState {
    return this.stateValue;
  }

  /** How the VM ended, once it has. */
  get exit(): VmExit | undefined {
    return this.exitValue;
  }

  /** Starts every vCPU; resolves once they run. */
  async start(): Promise<void> {
    if (this.stateValue !== "created") throw new Error(`cannot start a microVM that is ${this.stateValue}`);
    this.pipe?.hold();
    await this.vm.start();
    if (this.exitValue === undefined && this.stateValue === "created") {
      this.stateValue = "running";
      this.emit("start");
    }
  }

  /** Parks every vCPU (guest time stops); resolves once all are parked. Throws unless running. */
  async pause(): Promise<void> {
    if (this.stateValue !== "running") throw new Error(`cannot pause a microVM that is ${this.stateValue}`);
    await this.vm.pause();
    if (this.exitValue === undefined) {
      this.stateValue = "paused";
      this.emit("pause");
    }
  }

  /** Resumes a paused VM. */
  resume(): void {
    if (this.stateValue !== "paused") throw new Error(`cannot resume a microVM that is ${this.stateValue}`);
    this.vm.resume();
    this.stateValue = "running";
    this.emit("resume");
  }

  /** Stops the VM (if it has not stopped already) and resolves with how it ended. */
  stop(by = "sdk"): Promise<VmExit> {
    if (this.stateValue !== "stopped") this.vm.stop(by);
    return this.exited;
  }

  /** Counters: per-vCPU exits by reason, uptime and console bytes. */
  metrics(): MicroVMMetrics {
    const startedAt = this.vm.startedAt;
    return {
      uptimeMs: startedAt === undefined ? 0 : Date.now() - startedAt,
      vcpus: this.vm.exitCounters(),
      console: this.pipe?.counters() ?? { bytes: 0, droppedBytes: 0 },
    };
  }

  /** Console input for the guest's UART; returns the bytes accepted. */
  write(bytes: Uint8Array | string): number {
    return this.vm.sendConsoleInput(typeof bytes === "string" ? Buffer.from(bytes) : bytes);
  }
}
