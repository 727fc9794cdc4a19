// `typervisor` command-line entry. Every failure is one line on stderr and a documented exit
// status (see HELP); stack traces are for bugs only.

import { readFileSync, openSync, closeSync, fstatSync } from "node:fs";
import { parseCommand, HELP, UsageError, type RunOptions, type DriveOption } from "./args.js";
import { DriveConfigError, type DriveConfig } from "../vmm/drives.js";
import { Vm, MAX_VCPUS, MIN_MEM_MIB, MAX_MEM_MIB, VmConfigError, type VmExit } from "../vmm/vm.js";
import { probePath } from "../probe/path.js";
import { parseKernelImage, KernelFormatError } from "../arch/x86_64/index.js";
import type { KernelSource } from "../vmm/builder.js";
import { SysError } from "../sys/index.js";
import { KvmError } from "../kvm/index.js";
import { formatCrash } from "../vmm/exit-report.js";
import { chipCommand, measureCommand, attestCommand, signCommand } from "../security/cli.js";
import { psCommand, stopCommand, vmStateCommand, attestVmCommand, consoleCommand } from "./instances.js";
import { serve, runOptionsToResources } from "./serve.js";
import { ImageSignatureError, verifyBootSignature } from "../security/image.js";
import { readBootSignature, readInputFile } from "./input.js";
import { checkDriveSupported, rootDeviceArgs } from "../api/config.js";

import { EXIT_OK, EXIT_GUEST_FAILURE, EXIT_USAGE, EXIT_CRASH, EXIT_HOST } from "./exit-codes.js";
import { COMPARE_HELP, compareCommand } from "./compare.js";

export { EXIT_OK, EXIT_GUEST_FAILURE, EXIT_USAGE, EXIT_CRASH, EXIT_HOST };

export { DEFAULT_PROBE_CMDLINE, DEFAULT_LINUX_CMDLINE } from "../sdk/defaults.js";
import { DEFAULT_PROBE_CMDLINE, DEFAULT_LINUX_CMDLINE } from "../sdk/defaults.js";

/** Ctrl-A then x, as in QEMU, stops the VM from a raw-mode terminal. */
const CTRL_A = 0x01;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

function fail(code: number, message: string): number {
  process.stderr.write(`typervisor: ${message}\n`);
  return code;
}

export async function main(argv: string[]): Promise<number> {
  let command;
  try {
    command = parseCommand(argv, { maxVcpus: MAX_VCPUS, minMem: MIN_MEM_MIB, maxMem: MAX_MEM_MIB });
  } catch (e) {
    if (e instanceof UsageError) return fail(EXIT_USAGE, e.message);
    throw e;
  }
  switch (command.cmd) {
    case "help":
      if (command.topic === "image") {
        process.stdout.write((await import("../image/cli.js")).IMAGE_HELP);
        return EXIT_OK;
      }
      process.stdout.write(command.topic === "compare" ? COMPARE_HELP : HELP);
      return EXIT_OK;
    case "image": {
      // Loaded only here: the image builder (apt, mke2fs) is no part of booting a VM.
      const { imageCommand } = await import("../image/cli.js");
      return imageCommand(command.argv, process);
    }
    case "version":
      process.stdout.write(`typervisor ${version()}\n`);
      return EXIT_OK;
    case "probe-path":
      try {
        process.stdout.write(`${probePath()}\n`);
        return EXIT_OK;
      } catch (e) {
        return fail(EXIT_HOST, (e as Error).message);
      }
    case "run":
      return run(command.options);
    case "compare":
      return compareCommand(command.options, process);
    case "serve": {
      let resources;
      try {
        resources = command.run !== undefined ? runOptionsToResources(command.run) : undefined;
      } catch (e) {
        if (e instanceof UsageError || (e as Error).name === "FaultError") return fail(EXIT_USAGE, (e as Error).message);
        throw e;
      }
      const nsmChipDir = command.run?.nsmChipDir;
      return serve(
        { ...command.serve, ...(resources !== undefined ? { resources } : {}), ...(nsmChipDir !== undefined ? { nsmChipDir } : {}) },
        { stderr: process.stderr, exitStatus },
      );
    }
    case "ps":
    case "pause":
    case "resume":
    case "stop":
    case "console":
      return control(command.cmd, command.argv);
    case "chip":
      return chipCommand(command.argv, process);
    case "measure":
      return measureCommand(command.argv, process);
    case "attest":
      if (command.argv[0] === "verify") return attestCommand(command.argv, process);
      try {
        return await attestVmCommand(command.argv, process);
      } catch (e) {
        if (e instanceof UsageError) return fail(EXIT_USAGE, `attest: ${e.message}`);
        throw e;
      }
    case "sign":
      return signCommand(command.argv, process);
  }
}

async function control(verb: "ps" | "pause" | "resume" | "stop" | "console", argv: string[]): Promise<number> {
  try {
    if (verb === "ps") return await psCommand(argv, process);
    if (verb === "console") return await consoleCommand(argv, process);
    if (verb === "stop") return await stopCommand(argv, process);
    return await vmStateCommand(verb, argv, process);
  } catch (e) {
    if (e instanceof UsageError) return fail(EXIT_USAGE, `${verb}: ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ECONNREFUSED" || code === "ENOENT") return fail(EXIT_GUEST_FAILURE, `${verb}: the VM's API socket does not answer (${code})`);
    throw e;
  }
}

async function run(opts: RunOptions): Promise<number> {
  let kernel: KernelSource;
  let initrd: KernelSource | undefined;
  try {
    kernel = opts.kernel !== undefined ? readInputFile("kernel", opts.kernel) : readInputFile("probe guest", probePath());
    // Refuse a file that is not a kernel before touching KVM: the edge validates.
    parseKernelImage(kernel.bytes);
    if (opts.initrd !== undefined) initrd = readInputFile("initrd", opts.initrd);
  } catch (e) {
    if (e instanceof UsageError) return fail(EXIT_USAGE, e.message);
    if (e instanceof KernelFormatError) return fail(EXIT_USAGE, `${opts.kernel ?? "probe guest"}: ${e.message}`);
    if (e instanceof Error && /probe guest not built/.test(e.message)) return fail(EXIT_HOST, e.message);
    throw e;
  }
  let cmdline = opts.cmdline ?? (opts.kernel === undefined ? DEFAULT_PROBE_CMDLINE : DEFAULT_LINUX_CMDLINE);
  try {
    cmdline = withRootArgs(cmdline, opts.drives);
  } catch (e) {
    if ((e as Error).name === "FaultError") return fail(EXIT_USAGE, (e as Error).message);
    throw e;
  }
  let signingCert: Uint8Array | undefined;
  if (opts.signature !== undefined && opts.trust !== undefined) {
    try {
      signingCert = checkImageSignature(opts.signature, opts.trust, kernel.bytes, initrd?.bytes, cmdline);
    } catch (e) {
      if (e instanceof UsageError) return fail(EXIT_USAGE, e.message);
      throw e;
    }
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

  let vm: Vm;
  try {
    vm = Vm.create({
      kernel,
      initrd,
      cmdline,
      vcpus: opts.vcpus,
      memMiB: opts.memMiB,
      consoleFd,
      bootProtocol: opts.bootProtocol,
      drives: opts.drives.map(toDriveConfig),
      ...(opts.entropy ? { entropy: {} } : {}),
      ...(opts.nets.length > 0 ? { net: opts.nets.map((n) => ({ ...n })) } : {}),
      ...(opts.vsock !== undefined ? { vsock: { ...opts.vsock } } : {}),
      ...(opts.nsmChipDir !== undefined ? { nsm: { chipDir: opts.nsmChipDir } } : {}),
      ...(signingCert !== undefined ? { signingCert } : {}),
    });
  } catch (e) {
    if (ownFd) closeSync(consoleFd);
    if (e instanceof KernelFormatError || e instanceof VmConfigError || e instanceof DriveConfigError) return fail(EXIT_USAGE, e.message);
    if (e instanceof SysError || e instanceof KvmError) return fail(EXIT_HOST, e.message);
    if (e instanceof Error && /BootSetupError|GuestMemoryError/.test(e.name)) return fail(EXIT_USAGE, e.message);
    throw e;
  }

  const onSignal = (sig: NodeJS.Signals) => vm.stop(`signal ${sig}`);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const restoreInput = opts.console.kind === "stdio" ? attachConsoleInput(vm) : () => {};
  let exit: VmExit;
  try {
    try {
      await vm.start();
    } catch (e) {
      vm.stop("start failed");
      await vm.wait();
      return fail(EXIT_HOST, `cannot start the VM: ${(e as Error).message}`);
    }
    exit = await vm.wait();
  } finally {
    restoreInput();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    vm.close();
    if (ownFd) closeSync(consoleFd);
  }
  return exitStatus(exit);
}

/**
 * Verifies a `typervisor sign` signature over the PCR0 this boot will have (kernel ‖ cmdline ‖
 * initrd) against the trusted certificate. Returns the certificate's DER (measured into PCR8);
 * throws a one-line UsageError naming the failed check.
 */
export function checkImageSignature(sigPath: string, certPath: string, kernel: Uint8Array, initrd: Uint8Array | undefined, cmdline: string): Uint8Array {
  try {
    return verifyBootSignature(readBootSignature(sigPath, certPath), { kernel, initrd, cmdline });
  } catch (e) {
    if (e instanceof ImageSignatureError) throw new UsageError(e.message);
    throw e;
  }
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

/** Forwards stdin to the guest UART; raw mode on a terminal, Ctrl-A x stops the VM. */
function attachConsoleInput(vm: Vm): () => void {
  const stdin = process.stdin;
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
    const onPiped = (chunk: Buffer) => void vm.sendConsoleInput(chunk);
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
          vm.stop("console escape");
          return;
        }
        if (b !== CTRL_A) vm.sendConsoleInput(Uint8Array.of(CTRL_A));
      } else if (b === CTRL_A) {
        sawCtrlA = true;
        continue;
      }
      vm.sendConsoleInput(Uint8Array.of(b));
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
