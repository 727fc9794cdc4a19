// `typervisor --api-sock PATH [--config-file F]`, `typervisor --config-file F --no-api`, and
// `typervisor run … --api-sock PATH`: the VMM driven through the Firecracker-compatible API (one
// VM per process, as Firecracker), registered in the runtime directory for `ps`/`pause`/`stop`.

import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import {
  startApiServer, parseFirecrackerConfigFile, configFromFirecrackerJson, microVmConfigFrom, registerRunningVm,
  startPrometheusServer, parseHostPort, FaultError, type VmResources, type ApiServerHandle, type PrometheusServerHandle,
} from "../api/index.js";
import { MicroVM, type VmFactory } from "../sdk/index.js";
import { PROBE_KERNEL, defaultCmdline } from "../sdk/microvm.js";
import { openConsolePipe } from "../sdk/console-pipe.js";
import { startConsoleRelay, consoleSocketPath } from "./console.js";
import { mkdirSync } from "node:fs";
import type { VmExit } from "../vmm/vm.js";
import { UsageError, type RunOptions, type ServeFlags } from "./args.js";
import { runtimeDir } from "./instances.js";
import { probePath } from "../probe/path.js";
import { chipLoad } from "../security/chip.js";
import type { BootSignature } from "../security/image.js";
import { readBootSignature } from "./input.js";

/** The command-line flags (args.ts) plus what `run` and tests add. */
export interface ServeOptions extends ServeFlags {
  /** From `run`: the VM to boot at once (instead of a config file). */
  resources?: VmResources;
  /** Give the guest the NSM device, signing with the chip in this directory. */
  nsmChipDir?: string;
  /** Tests: build VMs without KVM. */
  vmFactory?: VmFactory;
  /** Tests: called once the API and console listen, with a way to stop the VM. */
  onReady?: (ctl: { stop(): void; handle: ApiServerHandle }) => void;
}

export interface ServeIo {
  stderr: { write(s: string): unknown };
  exitStatus: (exit: VmExit) => number;
}

const EXIT_USAGE = 2;
/** Errors that mean the configuration is wrong (exit 2), as opposed to the host (exit 4). */
const USAGE_ERRORS = new Set([
  "FaultError", "DriveConfigError", "KernelFormatError", "VmConfigError", "BootSetupError", "ImageSignatureError",
  // The SDK's typed errors (src/sdk/errors.ts) for the same causes.
  "MicroVMConfigError", "KernelImageError",
]);
const EXIT_HOST = 4;

/** `run` options as a Firecracker config object, so they pass the same checks as a config file. */
export function runOptionsToResources(o: RunOptions): VmResources {
  if (o.console.kind !== "stdio") throw new UsageError("with --api-sock the console is stdout (or PUT /serial)");
  if (o.bootProtocol !== "linux64") throw new UsageError("--boot pvh is not available through the API");
  const bucket = (r: { perSecond: number; burst?: number } | undefined) =>
    r === undefined ? undefined : { size: r.perSecond, refill_time: 1000, ...(r.burst !== undefined ? { one_time_burst: r.burst } : {}) };
  const config: Record<string, unknown> = {
    "boot-source": {
      kernel_image_path: o.kernel ?? probePath(),
      ...(o.initrd !== undefined ? { initrd_path: o.initrd } : {}),
      boot_args: o.cmdline ?? defaultCmdline(o.kernel ?? PROBE_KERNEL),
    },
    "machine-config": { vcpu_count: o.vcpus, mem_size_mib: o.memMiB },
    ...(o.entropy ? { entropy: {} } : {}),
    ...(o.vsock !== undefined ? { vsock: { guest_cid: o.vsock.guestCid, uds_path: o.vsock.udsPath } } : {}),
    "network-interfaces": o.nets.map((n) => ({ iface_id: n.id, host_dev_name: n.tap, ...(n.mac !== undefined ? { guest_mac: n.mac } : {}) })),
    drives: o.drives.map((d) => {
      const bandwidth = bucket(d.bandwidth);
      const ops = bucket(d.ops);
      return {
        drive_id: d.id,
        path_on_host: d.path,
        is_root_device: d.root === true,
        ...(d.partuuid !== undefined ? { partuuid: d.partuuid } : {}),
        is_read_only: d.readOnly,
        ...(bandwidth || ops ? { rate_limiter: { ...(bandwidth ? { bandwidth } : {}), ...(ops ? { ops } : {}) } } : {}),
      };
    }),
  };
  return configFromFirecrackerJson(config);
}

export async function serve(opts: ServeOptions, io: ServeIo): Promise<number> {
  let resources = opts.resources;
  let imageSignature: BootSignature | undefined;
  if (opts.signature !== undefined && opts.trust !== undefined) {
    // Read at the edge; checked at every InstanceStart against the boot source configured then.
    try {
      imageSignature = readBootSignature(opts.signature, opts.trust);
    } catch (e) {
      if (e instanceof UsageError) return fail(io, EXIT_USAGE, e.message);
      throw e;
    }
  }
  if (opts.configFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.configFile, "utf8");
    } catch (e) {
      return fail(io, EXIT_USAGE, `cannot read config file ${opts.configFile}: ${(e as NodeJS.ErrnoException).code}`);
    }
    try {
      resources = parseFirecrackerConfigFile(text, opts.configFile);
    } catch (e) {
      if (e instanceof FaultError) return fail(io, EXIT_USAGE, e.message);
      throw e;
    }
  }
  if (opts.noApi) {
    if (resources === undefined) return fail(io, EXIT_USAGE, "--no-api needs --config-file: without an API nothing could configure the VM");
    return runWithoutApi(resources, opts, io, imageSignature);
  }
  if (opts.apiSock === undefined) return fail(io, EXIT_USAGE, "--api-sock PATH is required (or --no-api with --config-file)");
  if (opts.nsmChipDir !== undefined) {
    // Checked at the edge, before the API listens, as `run --nsm` does.
    try {
      chipLoad(opts.nsmChipDir);
    } catch (e) {
      return fail(io, EXIT_USAGE, `nsm: ${(e as Error).message}`);
    }
  }
  const id = opts.id ?? randomUUID();
  const dir = runtimeDir(opts.runtimeDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Guest output: a pipe the main thread reads, to tee it to stdout and to `typervisor console`.
  const pipe = openConsolePipe();
  let handle: ApiServerHandle | undefined;
  const relay = await startConsoleRelay(consoleSocketPath(dir, id), (bytes) => void handle?.microvm?.write(bytes));
  pipe.stream.on("data", (chunk: Buffer) => {
    process.stdout.write(chunk);
    relay.output(chunk);
  });
  pipe.hold();
  const teardownConsole = async () => {
    pipe.closeWriteEnd();
    await new Promise<void>((resolve) => (pipe.stream.readableEnded ? resolve() : pipe.stream.once("end", () => resolve())));
    await relay.close();
  };
  try {
    handle = await startApiServer({
      socketPath: opts.apiSock,
      id,
      consoleFd: pipe.writeFd,
      ...(opts.vmFactory !== undefined ? { vmFactory: opts.vmFactory } : {}),
      ...(opts.nsmChipDir !== undefined ? { nsm: true, chipDir: opts.nsmChipDir } : {}),
      ...(imageSignature !== undefined ? { imageSignature } : {}),
      logSink: (line: string) => void io.stderr.write(line.endsWith("\n") ? line : `${line}\n`),
      ...(resources !== undefined ? { resources, startOnConfig: true } : {}),
    });
  } catch (e) {
    pipe.destroy();
    await relay.close();
    return fail(io, exitCodeOf(e), (e as Error).message);
  }
  const server = handle;
  let prometheus: PrometheusServerHandle | undefined;
  if (opts.metricsHttp !== undefined) {
    try {
      const { host, port } = parseHostPort(opts.metricsHttp);
      prometheus = await startPrometheusServer(host, port, () => server.metrics());
    } catch (e) {
      await server.close();
      pipe.destroy();
      await relay.close();
      return fail(io, EXIT_USAGE, (e as Error).message);
    }
  }
  const unregister = registerRunningVm(dir, {
    id,
    pid: process.pid,
    socket: opts.apiSock,
    vcpus: resources?.machine.vcpu_count ?? 1,
    memMiB: resources?.machine.mem_size_mib ?? 128,
    startedAt: Date.now(),
  });
  const status = await new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      // Firecracker's model: a signal ends the VMM, and with it the VM.
      const code = sig === "SIGINT" ? 130 : 143;
      if (server.microvm !== undefined && server.exit === undefined) void server.microvm.stop(`signal ${sig}`);
      else resolve(code);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    opts.onReady?.({ stop: () => void server.microvm?.stop("test"), handle: server });
    server.once("exit", (exit: VmExit) => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      resolve(io.exitStatus(exit));
    });
  });
  unregister();
  await prometheus?.close();
  await server.close();
  await teardownConsole();
  return status;
}

async function runWithoutApi(resources: VmResources, opts: ServeOptions, io: ServeIo, imageSignature: BootSignature | undefined): Promise<number> {
  let vm: MicroVM;
  try {
    vm = MicroVM.create({
      ...microVmConfigFrom(resources),
      consoleFd: 1,
      ...(opts.id !== undefined ? { id: opts.id } : {}),
      ...(imageSignature !== undefined ? { imageSignature } : {}),
    });
  } catch (e) {
    return fail(io, exitCodeOf(e), (e as Error).message);
  }
  const onSignal = (sig: NodeJS.Signals) => void vm.stop(`signal ${sig}`);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    await vm.start();
    return io.exitStatus(await vm.exited);
  } catch (e) {
    return fail(io, EXIT_HOST, `cannot start the VM: ${(e as Error).message}`);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** 2 when the configuration is wrong, 4 when the host cannot run the VM (no KVM, a failed call). */
function exitCodeOf(e: unknown): number {
  const inner = e instanceof FaultError && e.cause !== undefined ? e.cause : e;
  return USAGE_ERRORS.has((inner as Error).name) ? EXIT_USAGE : EXIT_HOST;
}

function fail(io: ServeIo, code: number, message: string): number {
  io.stderr.write(`typervisor: ${message}\n`);
  return code;
}
