// Argument parsing for `typervisor`, kept free of side effects so it is unit-tested.

import { parseArgs } from "node:util";
import { defaultChipDir } from "../security/chip-dir.js";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export type ConsoleTarget = { kind: "stdio" } | { kind: "file"; path: string } | { kind: "none" };

export interface DriveOption {
  id: string;
  path: string;
  readOnly: boolean;
  /** Bytes per second, and an optional one-time burst of bytes. */
  bandwidth?: { perSecond: number; burst?: number };
  /** Requests per second, and an optional one-time burst of requests. */
  ops?: { perSecond: number; burst?: number };
  /** `io=`: the drive's I/O path (absent: a virtio-blk card). */
  ioPath?: "card" | "emulated" | "dom0";
  /** `root`: the guest's root device (Firecracker's is_root_device): placed first, so it is /dev/vda. */
  root?: boolean;
  /** `partuuid=`: the root is that partition of the drive (`root=PARTUUID=...`); with `root` only. */
  partuuid?: string;
}

/** `--net tap=NAME[,mac=MAC][,id=ID]`: a network interface (virtio-net on a host TAP). */
export interface NetOption {
  /** iface_id (default eth<index>). */
  id: string;
  /** host_dev_name: the TAP (created if missing). */
  tap: string;
  /** guest_mac. */
  mac?: string;
}

/** `typervisor compare`: the Xen-vs-Nitro comparison (docs/xen-vs-nitro.md). */
export interface CompareCliOptions {
  /** Image size in bytes. */
  sizeBytes: number;
  runs: number;
  /** Where report.json and report.html go. */
  outDir: string;
  paths: Array<"emulated" | "dom0" | "card">;
  /** Run the probe's drivers hosted against the back ends, without a VM (no KVM needed). */
  hosted: boolean;
}

export interface RunOptions {
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  vcpus: number;
  /** `--vcpu-threads`: a worker thread per vCPU (dedicated), KVM_RUN on libuv's pool (pooled), or the one vCPU on the main thread (main). */
  vcpuThreads: "dedicated" | "pooled" | "main";
  /** `--card-threads`: a worker thread per card (dedicated) or each card on the main thread's event loop (pooled). */
  cardThreads: "dedicated" | "pooled";
  memMiB: number;
  console: ConsoleTarget;
  bootProtocol: "linux64" | "pvh";
  drives: DriveOption[];
  /** Network interfaces, in guest order (eth0 first). */
  nets: NetOption[];
  /** `--vsock cid=N,uds=PATH`: a virtio-vsock device (Firecracker's hybrid Unix-socket model). */
  vsock?: { guestCid: number; udsPath: string };
  /** A virtio-rng device. */
  entropy: boolean;
  /** The NSM device, signing with the chip in this directory (undefined: no NSM). */
  nsmChipDir?: string;
  /** A signature over PCR0 (typervisor sign) and the certificate trusted to have made it. */
  signature?: string;
  trust?: string;
  /** Refuse to boot without a signature that verifies. */
  requireSigned: boolean;
}

export type Command =
  | { cmd: "help"; topic?: string }
  | { cmd: "version" }
  | { cmd: "run"; options: RunOptions }
  | { cmd: "compare"; options: CompareCliOptions }
  | { cmd: "probe-path" }
  /** Security-chip commands: their handlers parse their own arguments (src/security/cli.ts). */
  | { cmd: "chip" | "measure" | "attest" | "sign"; argv: string[] }
  /** `typervisor image build`: src/image/cli.ts parses its arguments (loaded only then). */
  | { cmd: "image"; argv: string[] }
  /** The VMM behind the Firecracker-compatible API (serve.ts); `run` holds the VM to boot at once. */
  | { cmd: "serve"; serve: ServeFlags; run?: RunOptions }
  /** Running-VM commands (control.ts parses their arguments). */
  | { cmd: "ps" | "pause" | "resume" | "stop" | "console"; argv: string[] };

export interface ServeFlags {
  apiSock?: string;
  configFile?: string;
  noApi: boolean;
  id?: string;
  metricsHttp?: string;
  runtimeDir?: string;
  /** `--signature SIG --trust CERT`: every boot must carry this image signature (typervisor sign). */
  signature?: string;
  trust?: string;
}

const SERVE_OPTIONS = {
  "api-sock": { type: "string" },
  "config-file": { type: "string" },
  "no-api": { type: "boolean" },
  id: { type: "string" },
  "metrics-http": { type: "string" },
  "runtime-dir": { type: "string" },
  signature: { type: "string" },
  trust: { type: "string" },
  "require-signed": { type: "boolean" },
} as const;

function serveFlags(v: { [K in keyof typeof SERVE_OPTIONS]?: (typeof SERVE_OPTIONS)[K]["type"] extends "boolean" ? boolean : string }): ServeFlags {
  if (v["require-signed"] === true && (v.signature === undefined || v.trust === undefined)) {
    throw new UsageError("--require-signed needs --signature SIG and --trust CERT");
  }
  if ((v.signature === undefined) !== (v.trust === undefined)) {
    throw new UsageError("--signature and --trust go together");
  }
  return {
    noApi: v["no-api"] === true,
    ...(v.signature !== undefined ? { signature: v.signature } : {}),
    ...(v.trust !== undefined ? { trust: v.trust } : {}),
    ...(v["api-sock"] !== undefined ? { apiSock: v["api-sock"] } : {}),
    ...(v["config-file"] !== undefined ? { configFile: v["config-file"] } : {}),
    ...(v.id !== undefined ? { id: v.id } : {}),
    ...(v["metrics-http"] !== undefined ? { metricsHttp: v["metrics-http"] } : {}),
    ...(v["runtime-dir"] !== undefined ? { runtimeDir: v["runtime-dir"] } : {}),
  };
}

export const DEFAULT_VCPUS = 1;
/** docs/xen-vs-nitro.md: 256 MiB images, 3 runs per path (runCompare's defaults). */
export const DEFAULT_COMPARE_SIZE = 256 * 1024 * 1024;
export const DEFAULT_COMPARE_RUNS = 3;
export const MAX_COMPARE_RUNS = 100;
export const DEFAULT_COMPARE_OUT = "typervisor-compare";
/**
 * The smallest image the probe's bench tests can use: its 4 KiB random ops and 1 MiB sequential
 * ops (128 KiB for ATA PIO) need room for at least one sequential op; 1 MiB is a floor, not a tuning.
 */
export const MIN_COMPARE_SIZE = 1024 * 1024;
/** LBA28 (the ATA path) addresses at most 2^28 sectors of 512 bytes: 128 GiB (ATA/ATAPI-6 §6.2.1). */
export const MAX_COMPARE_SIZE = 2 ** 28 * 512;
export const DEFAULT_MEM_MIB = 256;

function integer(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new UsageError(`--${name} must be a whole number, got "${value}"`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`--${name} must be from ${min} to ${max}, got ${n}`);
  return n;
}

/** A size: a whole number with an optional K/M/G (powers of 1024) suffix, in whole 512-byte sectors. */
export function parseSize(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const m = /^(\d+)([KMG]?)$/i.exec(value);
  if (m === null) throw new UsageError(`--${name} must be a whole number with an optional K, M or G suffix, e.g. 256M, got "${value}"`);
  const n = Number(m[1]) * ({ "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase()] ?? 1);
  if (n < MIN_COMPARE_SIZE || n > MAX_COMPARE_SIZE) throw new UsageError(`--${name} must be from 1M to 128G, got "${value}"`);
  if (n % 512 !== 0) throw new UsageError(`--${name} must be whole 512-byte sectors, got ${n} bytes`);
  return n;
}

export function parseConsole(value: string | undefined): ConsoleTarget {
  if (value === undefined || value === "stdio") return { kind: "stdio" };
  if (value === "none") return { kind: "none" };
  if (value.startsWith("file:") && value.length > 5) return { kind: "file", path: value.slice(5) };
  if (value === "file") throw new UsageError('--console file needs a path: --console file:PATH');
  throw new UsageError(`--console must be stdio, none or file:PATH, got "${value}"`);
}

/** A rate: a whole number with an optional K/M/G (powers of 1024) suffix, then ":burst". */
function parseRate(option: string, value: string): { perSecond: number; burst?: number } {
  const m = /^(\d+)([KMG]?)(?::(\d+)([KMG]?))?$/i.exec(value);
  if (m === null) throw new UsageError(`--drive ${option}= must be a number per second with an optional :burst, e.g. 10M or 1000:200, got "${value}"`);
  const scale = (suffix: string | undefined) => ({ "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 })[(suffix ?? "").toUpperCase()] ?? 1;
  const perSecond = Number(m[1]) * scale(m[2]);
  if (perSecond <= 0) throw new UsageError(`--drive ${option}= must be above zero`);
  return m[3] === undefined ? { perSecond } : { perSecond, burst: Number(m[3]) * scale(m[4]) };
}

const IO_VALUES = ["card", "emulated", "dom0"] as const;

/**
 * `path=disk.img[,ro][,id=rootfs][,bw=RATE][,ops=RATE][,io=card|emulated|dom0]`. The issue's
 * "path=emulated|dom0|card" is `io=` here: `path=` already names the image file.
 */
export function parseDrive(spec: string, index: number): DriveOption {
  const out: Partial<DriveOption> & { readOnly: boolean } = { readOnly: false };
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? undefined : part.slice(eq + 1);
    switch (key) {
      case "ro":
        if (value !== undefined) throw new UsageError("--drive ro takes no value");
        out.readOnly = true;
        break;
      case "root":
        if (value !== undefined) throw new UsageError("--drive root takes no value");
        out.root = true;
        break;
      case "partuuid":
        if (value === undefined || value === "") throw new UsageError("--drive partuuid= needs a value");
        out.partuuid = value;
        break;
      case "path":
      case "id":
        if (value === undefined || value === "") throw new UsageError(`--drive ${key}= needs a value`);
        out[key] = value;
        break;
      case "bw":
        out.bandwidth = parseRate("bw", value ?? "");
        break;
      case "ops":
        out.ops = parseRate("ops", value ?? "");
        break;
      case "io":
        if (!(IO_VALUES as readonly string[]).includes(value ?? "")) {
          throw new UsageError(`--drive io= must be ${IO_VALUES.join(", ")}, got "${value ?? ""}"`);
        }
        out.ioPath = value as (typeof IO_VALUES)[number];
        break;
      default:
        throw new UsageError(`--drive: unknown key "${key}" (use path=, ro, root, partuuid=, id=, bw=, ops=, io=)`);
    }
  }
  if (out.path === undefined) throw new UsageError(`--drive needs path=FILE, got "${spec}"`);
  if (out.partuuid !== undefined && out.root !== true) throw new UsageError("--drive partuuid= names the root partition: it goes with root");
  if (out.root === true && out.ioPath !== undefined && out.ioPath !== "card") {
    throw new UsageError(`--drive root must be a virtio-blk drive (the guest's /dev/vda), not io=${out.ioPath}`);
  }
  return { ...out, id: out.id ?? `drive${index}`, path: out.path } as DriveOption;
}

/** `tap=NAME[,mac=06:00:ac:10:00:02][,id=eth0]`. The values are checked where the API's are (a MAC, a TAP name). */
export function parseNet(spec: string, index: number): NetOption {
  const out: Partial<NetOption> = {};
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? undefined : part.slice(eq + 1);
    if (key !== "tap" && key !== "mac" && key !== "id") throw new UsageError(`--net: unknown key "${key}" (use tap=, mac=, id=)`);
    if (value === undefined || value === "") throw new UsageError(`--net ${key}= needs a value`);
    out[key] = value;
  }
  if (out.tap === undefined) throw new UsageError(`--net needs tap=NAME (a TAP device on this host), got "${spec}"`);
  return { id: out.id ?? `eth${index}`, tap: out.tap, ...(out.mac !== undefined ? { mac: out.mac } : {}) };
}

/** `cid=3,uds=/tmp/vm.vsock`: the guest's CID and the Unix socket host programs connect to. */
export function parseVsock(spec: string): { guestCid: number; udsPath: string } {
  const out: { cid?: string; uds?: string } = {};
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? undefined : part.slice(eq + 1);
    if (key !== "cid" && key !== "uds") throw new UsageError(`--vsock: unknown key "${key}" (use cid=, uds=)`);
    if (value === undefined || value === "") throw new UsageError(`--vsock ${key}= needs a value`);
    out[key] = value;
  }
  if (out.cid === undefined || out.uds === undefined) throw new UsageError(`--vsock needs cid=N and uds=PATH, got "${spec}"`);
  if (!/^\d+$/.test(out.cid)) throw new UsageError(`--vsock cid= must be a number, got "${out.cid}"`);
  return { guestCid: Number(out.cid), udsPath: out.uds };
}

/**
 * The drives in guest order: the root drive first (so it is /dev/vda, as Firecracker's
 * BlockBuilder places it), the rest as given. At most one root drive.
 */
export function rootFirst(drives: DriveOption[]): DriveOption[] {
  const roots = drives.filter((d) => d.root === true);
  if (roots.length > 1) throw new UsageError(`only one --drive may be root (${roots.map((d) => d.id).join(", ")} are)`);
  return [...roots, ...drives.filter((d) => d.root !== true)];
}

export function parseCommand(argv: string[], limits: { maxVcpus: number; minMem: number; maxMem: number }): Command {
  const first = argv[0];
  if (first === undefined || first === "help" || first === "--help" || first === "-h") {
    return { cmd: "help", topic: first === "help" ? argv[1] : undefined };
  }
  if (first === "--version" || first === "-V" || first === "version") return { cmd: "version" };
  if (first.startsWith("--") && first.slice(2).split("=")[0]! in SERVE_OPTIONS) {
    // Firecracker's form: `typervisor --api-sock PATH [--config-file F] [--no-api]`.
    try {
      const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: SERVE_OPTIONS });
      return { cmd: "serve", serve: serveFlags(values) };
    } catch (e) {
      throw new UsageError(e instanceof Error ? e.message.replace(/\. To specify a positional argument.*$/s, "") : String(e));
    }
  }
  const rest = argv.slice(1);
  if (rest.includes("--help") || rest.includes("-h")) return { cmd: "help", topic: first };
  if (first === "chip" || first === "measure" || first === "attest" || first === "sign") return { cmd: first, argv: rest };
  if (first === "image") return { cmd: "image", argv: rest };
  if (first === "ps" || first === "pause" || first === "resume" || first === "stop" || first === "console") return { cmd: first, argv: rest };
  try {
    switch (first) {
      case "run": {
        const { values } = parseArgs({
          args: rest,
          strict: true,
          allowPositionals: false,
          options: {
            kernel: { type: "string" },
            initrd: { type: "string" },
            cmdline: { type: "string" },
            vcpus: { type: "string" },
            "vcpu-threads": { type: "string" },
            "card-threads": { type: "string" },
            mem: { type: "string" },
            console: { type: "string" },
            boot: { type: "string" },
            drive: { type: "string", multiple: true },
            net: { type: "string", multiple: true },
            vsock: { type: "string" },
            entropy: { type: "boolean" },
            nsm: { type: "boolean" },
            "chip-dir": { type: "string" },
            ...SERVE_OPTIONS,
          },
        });
        if (values["chip-dir"] !== undefined && values.nsm !== true) throw new UsageError("--chip-dir goes with --nsm");
        const serve = serveFlags(values);
        if (values.initrd !== undefined && values.kernel === undefined) {
          throw new UsageError("--initrd needs --kernel (the built-in probe demo takes no initrd)");
        }
        const boot = values.boot ?? "linux64";
        if (boot !== "linux64" && boot !== "pvh") throw new UsageError(`--boot must be linux64 or pvh, got "${boot}"`);
        const threads = <K extends string>(flag: "vcpu-threads" | "card-threads", kinds: readonly K[], byDefault: K): K => {
          const v = values[flag] ?? byDefault;
          if (!(kinds as readonly string[]).includes(v)) throw new UsageError(`--${flag} must be ${kinds.slice(0, -1).join(", ")} or ${kinds.at(-1)}, got "${v}"`);
          return v as K;
        };
        const vcpus = integer("vcpus", values.vcpus, DEFAULT_VCPUS, 1, limits.maxVcpus);
        const vcpuThreads = threads("vcpu-threads", ["dedicated", "pooled", "main"] as const, "dedicated");
        const cardThreads = threads("card-threads", ["dedicated", "pooled"] as const, "dedicated");
        if (vcpuThreads === "main" && vcpus !== 1) {
          throw new UsageError(`--vcpu-threads main runs the one vCPU on the main thread: --vcpus must be 1, got ${vcpus}`);
        }
        const options: RunOptions = {
            kernel: values.kernel,
            initrd: values.initrd,
            cmdline: values.cmdline,
            vcpus,
            vcpuThreads,
            cardThreads,
            memMiB: integer("mem", values.mem, DEFAULT_MEM_MIB, limits.minMem, limits.maxMem),
            console: parseConsole(values.console),
            bootProtocol: boot,
            drives: rootFirst((values.drive ?? []).map((d, i) => parseDrive(d, i))),
            nets: (values.net ?? []).map((n, i) => parseNet(n, i)),
            ...(values.vsock !== undefined ? { vsock: parseVsock(values.vsock) } : {}),
            entropy: values.entropy === true,
            ...(values.nsm === true ? { nsmChipDir: values["chip-dir"] ?? defaultChipDir() } : {}),
            ...(serve.signature !== undefined ? { signature: serve.signature } : {}),
            ...(serve.trust !== undefined ? { trust: serve.trust } : {}),
            requireSigned: values["require-signed"] === true,
        };
        if (serve.configFile !== undefined) throw new UsageError("run takes its VM from its own options; give --config-file without run");
        if (serve.noApi) throw new UsageError("run needs no --no-api: without --api-sock it serves no API");
        if (serve.apiSock !== undefined) {
          // The API's drive resource is Firecracker's: it has no I/O path to carry io= through.
          const other = options.drives.find((d) => d.ioPath !== undefined && d.ioPath !== "card");
          if (other !== undefined) throw new UsageError(`--drive io=${other.ioPath} is not served through --api-sock (Firecracker's drives are virtio-blk); run without --api-sock`);
          return { cmd: "serve", serve, run: options };
        }
        if (serve.id !== undefined || serve.metricsHttp !== undefined || serve.runtimeDir !== undefined) {
          throw new UsageError("--id, --metrics-http and --runtime-dir go with --api-sock");
        }
        return { cmd: "run", options };
      }
      case "compare": {
        const { values } = parseArgs({
          args: rest,
          strict: true,
          allowPositionals: false,
          options: { size: { type: "string" }, runs: { type: "string" }, out: { type: "string" }, paths: { type: "string" }, hosted: { type: "boolean" } },
        });
        const paths = (values.paths ?? "emulated,dom0,card").split(",");
        for (const p of paths) {
          if (!(IO_VALUES as readonly string[]).includes(p)) throw new UsageError(`--paths takes ${IO_VALUES.join(", ")} separated by commas, got "${p}"`);
        }
        if (new Set(paths).size !== paths.length) throw new UsageError(`--paths names a path twice: "${values.paths}"`);
        return {
          cmd: "compare",
          options: {
            sizeBytes: parseSize("size", values.size, DEFAULT_COMPARE_SIZE),
            runs: integer("runs", values.runs, DEFAULT_COMPARE_RUNS, 1, MAX_COMPARE_RUNS),
            outDir: values.out ?? DEFAULT_COMPARE_OUT,
            paths: paths as CompareCliOptions["paths"],
            hosted: values.hosted === true,
          },
        };
      }
      case "probe": {
        const { values } = parseArgs({ args: rest, strict: true, allowPositionals: false, options: { path: { type: "boolean" } } });
        if (!values.path) throw new UsageError("probe: say what to print (--path)");
        return { cmd: "probe-path" };
      }
      default:
        throw new UsageError(`unknown command "${first}" (try: typervisor --help)`);
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    // node:util parseArgs errors: unknown option, missing value.
    const msg = e instanceof Error ? e.message.replace(/\. To specify a positional argument.*$/s, "") : String(e);
    throw new UsageError(msg);
  }
}

export const HELP = `typervisor — KVM microVMs from TypeScript

Usage:
  typervisor run [options]      boot a guest (the built-in probe demo when no --kernel is given)
  typervisor --api-sock PATH [--config-file F] [--id ID] [--metrics-http HOST:PORT] [--signature SIG --trust CERT]
                                serve the Firecracker-compatible API on a Unix socket (one VM per process);
                                with --signature, InstanceStart boots only a boot source the signature covers
  typervisor --config-file F --no-api
                                boot the VM a Firecracker config file describes, without an API
  typervisor compare [--size 256M] [--runs N] [--out DIR] [--paths emulated,dom0,card] [--hosted]
                                the same block workload on the probe guest through the emulated ATA disk, a Dom0
                                back end and a card; a table, then DIR/report.json and report.html
                                (default DIR ${DEFAULT_COMPARE_OUT}; images on /dev/shm; needs /dev/kvm); --hosted: the
                                probe's drivers run as a host library against the same back ends, no VM (no KVM)
  typervisor image build [--out DIR] [--cache-dir DIR]
                                a starter Linux guest from Debian packages: DIR/vmlinuz (the cloud kernel),
                                initrd.img, rootfs.ext4 (busybox), and the typervisor run command that boots it
  typervisor probe --path       print the absolute path of the built probe guest (ELF, Linux 64-bit and PVH entries)
  typervisor ps [--json]        list the running microVMs (those serving an API socket) with state, vCPUs, memory, uptime
  typervisor console ID         attach to a running VM's serial console (Ctrl-A x detaches)
  typervisor pause|resume|stop ID [--json]
                                pause or resume a running VM through its API socket; stop ends its VMM (SIGTERM)
  typervisor chip init|show [--dir D] [--json]
                                create (or reuse) / show the security chip's identity (P-384 root and signing certificates)
  typervisor measure --kernel F [--initrd F] [--cmdline S] [--vm-id ID] [--signing-cert C] [--json]
                                print the PCRs a boot would produce, without booting
  typervisor attest --vm ID [--nonce HEX] [--user-data HEX] [--out FILE]
                                an attestation document from a running VM (its chip, its PCRs)
  typervisor attest verify DOC --root ROOT.pem [--pcr N=HEX]... [--nonce HEX] [--max-age S] [--json]
                                check an attestation document and say which check failed
  typervisor sign --kernel F [--initrd F] [--cmdline S] --key K.pem --cert C.pem --out SIG
  typervisor sign verify SIG --kernel F [--initrd F] [--cmdline S] --cert C.pem
  typervisor --help | --version

Options of run:
  --kernel FILE        vmlinux ELF or bzImage (default: the built-in probe guest)
  --initrd FILE        initial ramdisk (needs --kernel)
  --cmdline STRING     kernel command line (default: "${"probe.run=demo"}" for the probe,
                       "console=ttyS0 reboot=k panic=1 pci=off" for a kernel)
  --vcpus N            1 to 8 (default ${DEFAULT_VCPUS})
  --vcpu-threads KIND  dedicated (default): a worker thread per vCPU, ~10 MiB each; pooled: KVM_RUN
                       on libuv's thread pool and exits on the main thread, the least memory per
                       vCPU, a thread hop per exit; main (1 vCPU): the vCPU on the main thread
                       itself, as fast as dedicated with the memory of pooled
  --card-threads KIND  dedicated (default): a worker thread per device card; pooled: cards on the main
                       thread's event loop, waiting on libuv's pool (less memory per card, no polling)
  --mem MIB            guest memory in MiB (default ${DEFAULT_MEM_MIB}); 3 GiB or more gets the 32-bit MMIO gap
  --console TARGET     stdio (default), none, or file:PATH (guest serial output)
  --boot PROTOCOL      linux64 (default) or pvh (32-bit PVH entry of an ELF with a PVH note)
  --drive SPEC         a drive, repeatable: path=disk.img[,ro][,root[,partuuid=ID]][,id=rootfs][,bw=RATE][,ops=RATE][,io=PATH]
                       root: the guest's root disk, placed first (/dev/vda), adding "root=/dev/vda rw" (ro with ro;
                       root=PARTUUID=ID with partuuid=) to the command line, as the API's is_root_device does
                       RATE is per second with an optional one-time burst: bw=10M:50M, ops=1000:200
                       io=card (default): virtio-blk served by a card; io=emulated: an ATA disk emulated
                       on the vCPU thread (at most one); io=dom0: a Xen-style blkif ring served by a
                       separate Dom0 process (at most one); rates apply to card drives only
  --net SPEC           a network interface, repeatable: tap=NAME[,mac=06:00:ac:10:00:02][,id=eth0] — virtio-net
                       on the host TAP NAME (created if missing; needs CAP_NET_ADMIN)
  --vsock cid=N,uds=PATH
                       a virtio-vsock device: host programs connect to PATH and write "CONNECT <port>\n";
                       the guest's connections to host port P reach a listener on PATH_P
  --entropy            a virtio-rng device fed from the host CSPRNG
  --signature SIG --trust CERT [--require-signed]
                       verify a signature over PCR0 (typervisor sign) before booting; a bad one refuses the
                       boot, and the trusted certificate is measured into PCR8; --require-signed refuses unsigned;
                       with --api-sock or --config-file the check is made at InstanceStart, on the boot source then
  --api-sock PATH      also serve the Firecracker-compatible API there (then: ps, pause, resume, stop;
                       --id ID, --metrics-http HOST:PORT for Prometheus text, --runtime-dir D)
  --nsm [--chip-dir D] the Nitro Secure Module device: the guest asks the security chip for attestation
                       documents (chip from typervisor chip init; default $TYPERVISOR_CHIP_DIR or ~/.typervisor/chip)

On a terminal the console is in raw mode: Ctrl-A x stops the VM.

Exit status:
  0  the guest stopped cleanly (reset, power-off, debug exit with status 0)
  1  the guest reported failure (debug exit with a non-zero status)
  2  bad arguments, or an unreadable, truncated or non-kernel file
  3  the guest crashed (triple fault, KVM internal error, failed entry)
  4  the host cannot run the VM (no /dev/kvm, missing KVM capability, out of memory)
  130, 143  stopped by SIGINT, SIGTERM
`;

/** `typervisor compare --help`. */
export const COMPARE_HELP = `typervisor compare [--size 256M] [--runs N] [--out DIR] [--paths emulated,dom0,card] [--hosted]

Measures one block workload (the probe guest's bench: 4 KiB random read and write at QD1 and QD32,
sequential read and write) through three I/O paths in one run: the emulated ATA disk (every register
access an exit), a Xen-style blkif ring served by a Dom0 process, and a virtio-blk card. Per path:
IOPS, MB/s, latency, exits per I/O, host CPU seconds per GiB, copies per request, privileged code
(docs/xen-vs-nitro.md). Each path boots a baseline (no I/O), then --runs bench boots, all on one
image on /dev/shm written full of data first (it needs --size of room there).

Needs KVM on a real host: /dev/kvm and the built probe guest (npm run build). Inside the box
(QEMU TCG, TYPERVISOR_BOX=1) it refuses: figures there mean nothing. --hosted runs no VM (the
probe's drivers as a host library against the same back ends) and needs no KVM.

Options:
  --size SIZE     image size (default 256M)        --runs N      bench boots per path (default 3)
  --out DIR       report.json and report.html (default ${DEFAULT_COMPARE_OUT})
  --paths LIST    some of emulated,dom0,card        --hosted      no VM, no KVM

Output: progress on stderr; the table, then "report: DIR/report.json DIR/report.html", on stdout.
Exit status: 0 every run clean; 1 some run failed (listed); 2 bad arguments, or inside the box;
4 no /dev/kvm, no built probe guest, or no room for the image.
`;
