// `typervisor run`: one VM from the command line, through the SDK's MicroVM. Loaded by main.ts
// only for `run` (and by serve for the exit status), so `typervisor --version` loads none of it.

import { openSync, closeSync, fstatSync } from "node:fs";
import { UsageError, type RunOptions, type DriveOption } from "./args.js";
import type { DriveConfig } from "../vmm/drives.js";
import type { VmExit } from "../vmm/vm.js";
import { KernelFormatError } from "../arch/x86_64/index.js";
import type { KernelSource } from "../vmm/builder.js";
import { MicroVM, PROBE_KERNEL, defaultCmdline } from "../sdk/microvm.js";
import {
  HostError, KernelImageError, KvmUnavailableError, MicroVMConfigError, MicroVMError, ProbeNotBuiltError,
} from "../sdk/errors.js";
import { formatCrash } from "../vmm/exit-report.js";
import { ImageSignatureError, type BootSignature } from "../security/image.js";
import { readBootSignature, readInputFile } from "./input.js";
import { checkDriveSupported, rootDeviceArgs } from "../api/config.js";
import { EXIT_OK, EXIT_GUEST_FAILURE, EXIT_USAGE, EXIT_CRASH, EXIT_HOST } from "./exit-codes.js";

/** Ctrl-A then x, as in QEMU, stops the VM from a raw-mode terminal. */
const CTRL_A = 0x01;

function fail(code: number, message: string): number {
  process.stderr.write(`typervisor: ${message}\n`);
  return code;
}

/**
 * `typervisor run`: the VM is a MicroVM (src/sdk), built and driven as an SDK user would, so the
 * defaults, the image-signature check and the lifecycle are the SDK's. What is the CLI's own: the
 * files it reads for the user (one-line errors naming them), the root drive's command-line
 * arguments, the console target, stdin, signals, and the exit status.
 */
export async function run(opts: RunOptions): Promise<number> {
  let kernel: KernelSource | typeof PROBE_KERNEL = PROBE_KERNEL;
  let initrd: KernelSource | undefined;
  let imageSignature: BootSignature | undefined;
  let cmdline: string;
  try {
    if (opts.kernel !== undefined) kernel = readInputFile("kernel", opts.kernel);
    if (opts.initrd !== undefined) initrd = readInputFile("initrd", opts.initrd);
    cmdline = withRootArgs(opts.cmdline ?? defaultCmdline(kernel), opts.drives);
    if (opts.signature !== undefined && opts.trust !== undefined) imageSignature = readBootSignature(opts.signature, opts.trust);
  } catch (e) {
    if (e instanceof UsageError || (e as Error).name === "FaultError") return fail(EXIT_USAGE, (e as Error).message);
    throw e;
  }

  let consoleFd = -1;
  let ownFd = false;
  if (opts.console.kind === "stdio") consoleFd = 1;
  else if (opts.console.kind === "file") {
    try {
      consoleFd = openSync(opts.console.path, "w");
      ownFd = true;
    } catch (e) {
      return fail(EXIT_USAGE, `cannot open console file ${opts.console.path}: ${(e as NodeJS.ErrnoException).code}`);
    }
  }

  let vm: MicroVM;
  try {
    vm = MicroVM.create({
      kernel,
      ...(initrd !== undefined ? { initrd } : {}),
      cmdline,
      vcpus: opts.vcpus,
      vcpuThreads: opts.vcpuThreads,
      cardThreads: opts.cardThreads,
      memMiB: opts.memMiB,
      consoleFd,
      bootProtocol: opts.bootProtocol,
      drives: opts.drives.map(toDriveConfig),
      ...(opts.entropy ? { entropy: {} } : {}),
      ...(opts.nets.length > 0 ? { net: opts.nets.map((n) => ({ ...n })) } : {}),
      ...(opts.vsock !== undefined ? { vsock: { ...opts.vsock } } : {}),
      ...(opts.nsmChipDir !== undefined ? { nsm: true, chipDir: opts.nsmChipDir } : {}),
      ...(imageSignature !== undefined ? { imageSignature } : {}),
    });
  } catch (e) {
    if (ownFd) closeSync(consoleFd);
    return fail(createExitStatus(e), createFailureMessage(e, opts.kernel ?? "probe guest"));
  }

  const onSignal = (sig: NodeJS.Signals) => void vm.stop(`signal ${sig}`);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const restoreInput = opts.console.kind === "stdio" ? attachConsoleInput(vm) : () => {};
  let exit: VmExit;
  try {
    try {
      await vm.start();
    } catch (e) {
      await vm.stop("start failed");
      return fail(EXIT_HOST, `cannot start the VM: ${causeMessage(e)}`);
    }
    exit = await vm.exited;
  } finally {
    restoreInput();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (ownFd) closeSync(consoleFd);
  }
  return exitStatus(exit);
}

/**
 * The exit status (HELP) of an error MicroVM.create threw: 2 for what the user gave (bad config,
 * a file that is not a kernel, a signature that does not verify), 4 for what the host lacks (KVM,
 * memory, descriptors, the built probe guest). Anything else is a bug and is thrown again.
 */
export function createExitStatus(e: unknown): number {
  if (e instanceof MicroVMConfigError || e instanceof KernelImageError || e instanceof ImageSignatureError) return EXIT_USAGE;
  if (e instanceof KvmUnavailableError || e instanceof HostError || e instanceof ProbeNotBuiltError) return EXIT_HOST;
  throw e;
}

/** The one line for an error of MicroVM.create: a kernel that is not one is named as the user gave it (`FILE: why`). */
export function createFailureMessage(e: unknown, kernelName: string): string {
  if (e instanceof KernelImageError && e.cause instanceof KernelFormatError) return `${kernelName}: ${e.cause.message}`;
  return (e as Error).message;
}

/** The lower layer's sentence of an SDK error that wraps one (for "cannot start the VM: ..."), else its own. */
function causeMessage(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  return e instanceof MicroVMError && e.cause instanceof Error ? e.cause.message : e.message;
}

/**
 * The command line with the root drive's `root=/dev/vda rw|ro` (or `root=PARTUUID=<id>`)
 * appended, exactly as the API's config path adds it for is_root_device (src/api/config.ts
 * rootDeviceArgs, which also measures it into PCR0/1 with the rest). The partuuid is checked as
 * the API checks it; a FaultError names it.
 */
export function withRootArgs(cmdline: string, drives: readonly DriveOption[]): string {
  const root = drives.find((d) => d.root === true);
  if (root === undefined) return cmdline;
  const drive = checkDriveSupported(
    { drive_id: "root", is_root_device: true, is_read_only: root.readOnly, path_on_host: root.path, ...(root.partuuid !== undefined ? { partuuid: root.partuuid } : {}) },
    "--drive",
  );
  return `${cmdline} ${rootDeviceArgs([drive])}`.trim();
}

/** A --drive option as the VM takes it: rates become token buckets that refill each second (Firecracker's semantics). */
export function toDriveConfig(d: DriveOption): DriveConfig {
  const bucket = (r: { perSecond: number; burst?: number } | undefined) =>
    r === undefined ? undefined : { size: r.perSecond, refillTime: 1000, ...(r.burst !== undefined ? { oneTimeBurst: r.burst } : {}) };
  const bandwidth = bucket(d.bandwidth);
  const ops = bucket(d.ops);
  return {
    id: d.id,
    path: d.path,
    readOnly: d.readOnly,
    ...(d.ioPath !== undefined ? { ioPath: d.ioPath } : {}),
    ...(bandwidth !== undefined || ops !== undefined ? { rateLimiter: { ...(bandwidth ? { bandwidth } : {}), ...(ops ? { ops } : {}) } } : {}),
  };
}

export function exitStatus(exit: VmExit): number {
  switch (exit.kind) {
    case "reset":
    case "poweroff":
    case "halted":
      return EXIT_OK;
    case "debug-exit":
      if (exit.status === 0) return EXIT_OK;
      process.stderr.write(`typervisor: the guest reported failure (status ${exit.status})\n`);
      return EXIT_GUEST_FAILURE;
    case "stopped":
      if (exit.by === "signal SIGINT") return 130;
      if (exit.by === "signal SIGTERM") return 143;
      return EXIT_OK;
    case "crash":
      process.stderr.write(formatCrash(exit));
      return EXIT_CRASH;
    case "error":
      process.stderr.write(`typervisor: vCPU ${exit.vcpu} failed: ${exit.message}\n`);
      return EXIT_HOST;
  }
}

/**
 * Forwards stdin to the guest UART through MicroVM.write; raw mode on a terminal, where Ctrl-A x
 * stops the VM (`stop("console escape")`) and Ctrl-A Ctrl-A sends one Ctrl-A. Returns the undo.
 */
export function attachConsoleInput(vm: Pick<MicroVM, "write" | "stop">, stdin: NodeJS.ReadStream = process.stdin): () => void {
  const tty = stdin.isTTY === true;
  if (!tty) {
    // Piped or redirected stdin is forwarded as it is; no stdin at all (CI) forwards nothing.
    let kind: string;
    try {
      const st = fstatSync(0);
      kind = st.isFIFO() || st.isSocket() ? "stream" : st.isFile() ? "file" : "other";
    } catch {
      return () => {};
    }
    if (kind === "other") return () => {};
    const onPiped = (chunk: Buffer) => void vm.write(chunk);
    stdin.on("data", onPiped);
    stdin.on("error", () => {});
    return () => {
      stdin.off("data", onPiped);
      stdin.destroy();
    };
  }
  stdin.setRawMode(true);
  let sawCtrlA = false;
  const onData = (chunk: Buffer) => {
    for (const b of chunk) {
      if (sawCtrlA) {
        sawCtrlA = false;
        if (b === 0x78 /* x */) {
          void vm.stop("console escape");
          return;
        }
        if (b !== CTRL_A) vm.write(Uint8Array.of(CTRL_A));
      } else if (b === CTRL_A) {
        sawCtrlA = true;
        continue;
      }
      vm.write(Uint8Array.of(b));
    }
  };
  stdin.on("data", onData);
  stdin.resume();
  return () => {
    stdin.off("data", onData);
    stdin.setRawMode(false);
    stdin.pause();
  };
}
