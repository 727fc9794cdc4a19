// The Firecracker-compatible REST API: HTTP/1.1 on a Unix socket, one microVM per process.
// Requests are handled one at a time, in arrival order (Firecracker's API thread does the same),
// so InstanceStart cannot interleave with a configuration change. Bodies are validated against
// the spec's definitions (schema.ts) before any state changes. Every error is a 400 with
// {"fault_message"}: unknown paths and methods too, as Firecracker answers them
// ("Invalid request method and/or path: ..."). See README.md beside this file for every endpoint.
// One extension outside the spec: GET /typervisor/attestation (a Nitro-format attestation
// document for the running VM, signed by the host's security chip), for `typervisor attest --vm`.
// The guest's NSM device has no resource in the spec: it is a server option (`nsm`, signing with
// `chipDir`), for the CLI's `--nsm`.

import { EventEmitter } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect } from "node:net";
import { closeSync, constants, existsSync, openSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "node:net";
import type { Vm, VmExit } from "../vmm/vm.js";
import { packageRoot } from "../probe/path.js";
import { MicroVM, AttestationUnavailableError, defaultVmFactory, type VmFactory } from "../sdk/microvm.js";
import { AttestationInputError } from "../security/attestation.js";
import type { BootSignature } from "../security/image.js";
import {
  FaultError, bootSource, checkResourceId, drive, entropy, instanceAction, logger as loggerSchema, machineConfig,
  machineConfigPatch, metrics as metricsSchema, networkInterface, partialDrive, partialNetworkInterface, serial as serialSchema, vmState, vsock as vsockSchema,
  type PartialDrive, type PartialNetworkInterface,
} from "./schema.js";
import {
  DEFAULT_MACHINE, checkDriveSupported, checkMachineSupported, checkNetworkInterfaceSupported, checkSerialSupported, insertDrive, insertNetworkInterface, vsockConfigFrom,
  mergeRateLimiter, microVmConfigFrom, rateLimiterFrom, type VmResources,
} from "./config.js";
import { JsonLogger, type LogSink } from "./logger.js";
import { ApiMetrics, MetricsWriter, metricsLine, type MetricsSnapshot } from "./metrics.js";

/** Firecracker's default `--http-api-max-payload-size`. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 51_200;
export const APP_NAME = "Typervisor";
export const DEFAULT_INSTANCE_ID = "anonymous-instance";

export interface ApiServerOptions {
  /** Where to listen. A stale socket file (nobody listening) is replaced; a live one is an error. */
  socketPath: string;
  /** Builds the VM at InstanceStart. Default: KVM (`Vm.create`). */
  vmFactory?: VmFactory;
  /**
   * The instance id of GET / and of metrics lines with `emit_id`. When given, it is also the VM's
   * identity (measured into PCR4, the attestation document's module_id); when not, GET / says
   * "anonymous-instance" and the VM gets a random UUID as its identity.
   */
  id?: string;
  /** Guest serial output when PUT /serial gave no path: a file descriptor (default 1, stdout, as Firecracker). */
  consoleFd?: number;
  /** Largest request body accepted (bytes). Default 51200, as Firecracker. */
  maxPayloadBytes?: number;
  /** A client must send its headers within this (default 10 s), and its whole request within `requestTimeoutMs` (default 30 s). */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Idle keep-alive connections are closed after this (default 5 s). */
  keepAliveTimeoutMs?: number;
  /** Metrics lines are written this often once PUT /metrics is done (default 60 s, as Firecracker). */
  metricsIntervalMs?: number;
  /** Resources to apply before listening (from `--config-file`). */
  resources?: VmResources;
  /** With `resources`: start the microVM at once, as Firecracker does with `--config-file`. */
  startOnConfig?: boolean;
  /** Where log lines go before PUT /logger names a file (the CLI passes stderr). */
  logSink?: LogSink;
  /**
   * The security chip identity GET /typervisor/attestation and the NSM device sign with.
   * Default: the SDK's (`$TYPERVISOR_CHIP_DIR`, else `~/.typervisor/chip`).
   */
  chipDir?: string;
  /**
   * Gives the guest a Nitro Secure Module (virtio-nsm card) signing with `chipDir`: `true` or
   * `{ moduleId }` (default module_id `typervisor-<VM id>`). Not in Firecracker's API, so an
   * option of the server (the CLI's `--nsm`) rather than a resource. The chip identity is checked
   * at InstanceStart: a missing or unusable one fails it with 400 "InstanceStart: nsm: ...".
   */
  nsm?: boolean | { moduleId?: string };
  /**
   * Every boot this server starts must carry this `typervisor sign` signature (the CLI's
   * `--signature`/`--trust`): InstanceStart checks it against the PCR0 of the boot source as
   * configured then, and refuses with 400 "InstanceStart: refusing to boot: ..." when it does not
   * verify; the trusted certificate is measured into PCR8.
   */
  imageSignature?: BootSignature;
}

export type InstanceState = "Not started" | "Running" | "Paused";

/** What `startApiServer` gives back. Events: `start` (MicroVM), `exit` (VmExit), `request` ({route, status, us}). */
export interface ApiServerHandle extends EventEmitter {
  readonly socketPath: string;
  readonly id: string;
  /** The microVM once InstanceStart has built it. */
  readonly microvm: MicroVM | undefined;
  /** The VM underneath, once started. */
  readonly vm: Vm | undefined;
  /** GET /'s state. */
  readonly state: InstanceState;
  /** How the VM ended, once it has. */
  readonly exit: VmExit | undefined;
  /** The metrics snapshot (for `startPrometheusServer(host, port, () => handle.metrics())`). */
  metrics(): MetricsSnapshot;
  /** Runs InstanceStart as the API would (the CLI's `--config-file`); rejects with the fault message. */
  startInstance(): Promise<void>;
  /** Stops the VM if it runs, closes every connection and removes the socket file. */
  close(): Promise<void>;
}

function vmmVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version?: string };
    return pkg.version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}

/** Route templates: counted in metrics by these, so hostile paths cannot grow the table. */
function routeOf(method: string, path: string): { route: string; param?: string } {
  const m = /^\/drives\/([^/]*)$/.exec(path);
  if (m) return { route: `${method} /drives/{drive_id}`, param: decodeURIComponentSafe(m[1]!) };
  const n = /^\/network-interfaces\/([^/]*)$/.exec(path);
  if (n) return { route: `${method} /network-interfaces/{iface_id}`, param: decodeURIComponentSafe(n[1]!) };
  return { route: `${method} ${path}` };
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Typervisor's extension (not in Firecracker's spec): the VM's attestation document. */
export const ATTESTATION_PATH = "/typervisor/attestation";
const ATTESTATION_ROUTE = `GET ${ATTESTATION_PATH}`;
/** Query parameters of the attestation route and their byte limits (Nitro's: docs/attestation_process.md §3.2.2.2). */
const ATTESTATION_PARAMS: Record<string, number> = { nonce: 512, user_data: 512, public_key: 1024 };

const KNOWN_ROUTES = new Set([
  "GET /", "GET /version", "GET /vm/config", "GET /machine-config",
  "PUT /machine-config", "PATCH /machine-config", "PUT /boot-source",
  "PUT /drives/{drive_id}", "PATCH /drives/{drive_id}",
  "PUT /network-interfaces/{iface_id}", "PATCH /network-interfaces/{iface_id}",
  "PUT /vsock", "PUT /logger", "PUT /metrics", "PUT /entropy", "PUT /serial", "PUT /actions", "PATCH /vm",
  ATTESTATION_ROUTE,
]);

/** Paths of the spec this build does not serve; they answer with a reason rather than "invalid path". */
const NOT_SUPPORTED: Array<[RegExp, string]> = [
  [/^\/balloon(\/.*)?$/, "the balloon device is not supported by this Typervisor build"],
  [/^\/cpu-config$/, "custom CPU configuration is not supported by this Typervisor build"],
  [/^\/pmem\/[^/]+$/, "pmem devices are not supported by this Typervisor build"],
  [/^\/mmds(\/config)?$/, "MMDS is not supported by this Typervisor build"],
  [/^\/hotplug\/memory$/, "memory hotplug is not supported by this Typervisor build"],
  [/^\/snapshot\/(create|load)$/, "snapshots are not supported by this Typervisor build"],
];

const NOT_AFTER_START = "the requested operation is not supported after starting the microVM";
const NOT_BEFORE_START = "the requested operation is not supported before starting the microVM";

class ApiServer extends EventEmitter implements ApiServerHandle {
  readonly socketPath: string;
  readonly id: string;
  private readonly vmId: string | undefined;
  private readonly chipDir: string | undefined;
  private readonly nsm: ApiServerOptions["nsm"];
  private readonly imageSignature: BootSignature | undefined;
  private readonly server: Server;
  private readonly vmFactory: VmFactory;
  private readonly consoleFd: number;
  private readonly maxPayload: number;
  private readonly metricsIntervalMs: number;
  private readonly version = vmmVersion();
  private readonly resources: VmResources = { machine: { ...DEFAULT_MACHINE } };
  private readonly log: JsonLogger;
  private readonly apiMetrics = new ApiMetrics();
  private metricsWriter: MetricsWriter | undefined;
  private microvmValue: MicroVM | undefined;
  private serialFd = -1;
  private starting = false;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(opts: ApiServerOptions) {
    super();
    this.socketPath = opts.socketPath;
    this.id = opts.id ?? DEFAULT_INSTANCE_ID;
    this.vmId = opts.id;
    this.chipDir = opts.chipDir;
    this.nsm = opts.nsm;
    this.imageSignature = opts.imageSignature;
    this.vmFactory = opts.vmFactory ?? defaultVmFactory;
    this.consoleFd = opts.consoleFd ?? 1;
    this.maxPayload = opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    this.metricsIntervalMs = opts.metricsIntervalMs ?? 60_000;
    this.log = new JsonLogger(opts.logSink);
    const headersTimeout = opts.headersTimeoutMs ?? 10_000;
    this.server = createServer(
      {
        headersTimeout,
        requestTimeout: Math.max(opts.requestTimeoutMs ?? 30_000, headersTimeout + 1),
        keepAliveTimeout: opts.keepAliveTimeoutMs ?? 5_000,
        // How often Node checks the two timeouts above (its default, 30 s, would let a slow
        // client hold a connection far longer than asked).
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4))),
        maxHeaderSize: 8 * 1024,
      },
      (req, res) => this.onRequest(req, res),
    );
    // A client that sends garbage gets 400 and a closed connection, never a crash.
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      if (socket.writable && !socket.destroyed) {
        const status = err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? "408 Request Timeout" : "400 Bad Request";
        const body = JSON.stringify({ fault_message: `malformed HTTP request: ${err.code ?? err.message}` });
        socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      }
      socket.destroy();
    });
    if (opts.resources !== undefined) this.applyResources(opts.resources);
  }

  get microvm(): MicroVM | undefined {
    return this.microvmValue;
  }
  get vm(): Vm | undefined {
    return this.microvmValue?.vm;
  }
  /** How the VM ended: the VM's own record (vmm/vm.ts), never a copy. */
  get exit(): VmExit | undefined {
    return this.microvmValue?.exit;
  }
  /**
   * Firecracker's name for the VM's own state (vmm/vm.ts VM_TRANSITIONS), never a copy: the spec's
   * states stop at Paused, so a VM that has ended still says Running (GET / adds how it ended).
   */
  get state(): InstanceState {
    const s = this.microvmValue?.state;
    if (s === undefined) return "Not started";
    return s === "paused" ? "Paused" : "Running";
  }

  async listen(): Promise<void> {
    await removeStaleSocket(this.socketPath);
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.socketPath, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.log.info("api_server", "API server listening", { socket: this.socketPath, id: this.id });
  }

  metrics(): MetricsSnapshot {
    const m = this.microvmValue?.metrics();
    return {
      utc_timestamp_ms: Date.now(),
      uptime_ms: m?.uptimeMs ?? 0,
      api: this.apiMetrics.snapshot(),
      vcpus: m?.vcpus ?? [],
      console: m?.console ?? { bytes: 0, droppedBytes: 0 },
      drives: m?.drives ?? {},
      devices: m?.devices ?? {},
      groups: m?.groups ?? {},
    };
  }

  startInstance(): Promise<void> {
    return this.serialized(() => this.instanceStart());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const mv = this.microvmValue;
    if (mv !== undefined && mv.exit === undefined) await mv.stop("api server closed");
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    this.metricsWriter?.flush();
    this.metricsWriter?.close();
    this.log.close();
    if (this.serialFd >= 0) closeSync(this.serialFd);
    try {
      unlinkSync(this.socketPath);
    } catch {
      // Already gone.
    }
  }

  // ---- HTTP plumbing ----

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const t0 = process.hrtime.bigint();
    const method = req.method ?? "";
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? "" : url.slice(q + 1);
    const { route, param } = routeOf(method, path);
    const countedRoute = KNOWN_ROUTES.has(route) ? route : "other";
    res.on("finish", () => {
      const us = Number((process.hrtime.bigint() - t0) / 1000n);
      this.apiMetrics.record(countedRoute, res.statusCode, us);
      this.emit("request", { route: countedRoute, status: res.statusCode, us });
      this.log.debug("api_server", "request", { method, path: path.slice(0, 200), status: res.statusCode, us });
    });
    const declared = Number(req.headers["content-length"] ?? 0);
    if (Number.isFinite(declared) && declared > this.maxPayload) {
      // Do not read what we will refuse: answer and close the connection.
      this.tooLarge(req, res, declared);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on("data", (c: Buffer) => {
      if (refused) return;
      size += c.length;
      if (size > this.maxPayload) {
        refused = true;
        this.tooLarge(req, res, size);
        return;
      }
      chunks.push(c);
    });
    req.on("error", () => req.socket.destroy());
    req.on("end", () => {
      if (refused) return;
      const body = Buffer.concat(chunks);
      void this.serialized(() => this.dispatch(method, path, route, param, body, query)).then(
        (answer) => (answer.bytes !== undefined ? sendBytes(res, answer.status, answer.contentType!, answer.bytes) : send(res, answer.status, answer.body)),
        (e: unknown) => {
          const status = e instanceof FaultError ? e.status : 500;
          const message = e instanceof Error ? e.message : String(e);
          if (!(e instanceof FaultError)) this.log.error("api_server", "internal error", { route, message });
          send(res, status, { fault_message: message });
        },
      );
    });
  }

  private tooLarge(req: IncomingMessage, res: ServerResponse, size: number): void {
    res.shouldKeepAlive = false;
    res.setHeader("connection", "close");
    send(res, 400, {
      fault_message: `request payload with size ${size} is larger than the limit of ${this.maxPayload} bytes allowed by the server`,
    });
    res.on("finish", () => req.socket.destroySoon());
  }

  /** Runs `fn` after every request before it (one request at a time, as Firecracker). */
  private serialized<T>(fn: () => Promise<T> | T): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ---- the API ----

  private async dispatch(method: string, path: string, route: string, param: string | undefined, raw: Buffer, query = ""): Promise<Answer> {
    const json = () => parseBody(method, path, raw);
    switch (route) {
      case "GET /":
        return ok(this.instanceInfo());
      case "GET /version":
        return ok({ firecracker_version: this.version });
      case "GET /machine-config":
        return ok(this.resources.machine);
      case "GET /vm/config":
        return ok(this.fullConfig());
      case "PUT /machine-config": {
        const m = checkMachineSupported({ ...DEFAULT_MACHINE, ...machineConfig(json(), "machine-config") });
        this.preBoot();
        this.resources.machine = m;
        return noContent();
      }
      case "PATCH /machine-config": {
        const m = checkMachineSupported({ ...this.resources.machine, ...machineConfigPatch(json(), "machine-config") });
        this.preBoot();
        this.resources.machine = m;
        return noContent();
      }
      case "PUT /boot-source": {
        const b = bootSource(json(), "boot-source");
        this.preBoot();
        this.resources.bootSource = b;
        return noContent();
      }
      case "PUT /drives/{drive_id}": {
        const id = checkResourceId(param!, "drive_id");
        const body = json();
        checkBodyId(id, body);
        const d = checkDriveSupported(drive(body, "drive"), "drive");
        this.preBoot();
        // The image is checked now (the edge), not at InstanceStart.
        this.resources.drives = insertDrive(this.resources.drives ?? [], d, "drive");
        return noContent();
      }
      case "PATCH /drives/{drive_id}": {
        const id = checkResourceId(param!, "drive_id");
        const body = json();
        checkBodyId(id, body);
        const patch = partialDrive(body, "drive");
        this.postBoot();
        await this.patchDrive(id, patch);
        return noContent();
      }
      case "PUT /network-interfaces/{iface_id}": {
        const id = checkResourceId(param!, "iface_id");
        const body = json();
        checkBodyId(id, body, "iface_id", "network-interface");
        const n = checkNetworkInterfaceSupported(networkInterface(body, "network-interface"), "network-interface");
        this.preBoot();
        this.resources.networkInterfaces = insertNetworkInterface(this.resources.networkInterfaces ?? [], n, "network-interface");
        return noContent();
      }
      case "PATCH /network-interfaces/{iface_id}": {
        const id = checkResourceId(param!, "iface_id");
        const body = json();
        checkBodyId(id, body, "iface_id", "network-interface");
        const patch = partialNetworkInterface(body, "network-interface");
        this.postBoot();
        await this.patchNetworkInterface(id, patch);
        return noContent();
      }
      case "PUT /vsock": {
        // A second PUT replaces the device's configuration, as Firecracker's.
        const v = vsockSchema(json(), "vsock");
        vsockConfigFrom(v);
        this.preBoot();
        this.resources.vsock = v;
        return noContent();
      }
      case "PUT /entropy": {
        // A second PUT replaces the device's configuration, as Firecracker's.
        const e = entropy(json(), "entropy");
        this.preBoot();
        this.resources.entropy = e;
        return noContent();
      }
      case "PUT /serial": {
        const s = checkSerialSupported(serialSchema(json(), "serial"));
        this.preBoot();
        this.resources.serial = s;
        return noContent();
      }
      case "PUT /logger": {
        const l = loggerSchema(json(), "logger");
        this.log.configure(l);
        this.resources.logger = this.log.current;
        return noContent();
      }
      case "PUT /metrics": {
        const m = metricsSchema(json(), "metrics");
        this.configureMetrics(m);
        return noContent();
      }
      case "PUT /actions": {
        const { action_type } = instanceAction(json(), "action");
        if (action_type === "InstanceStart") await this.instanceStart();
        else if (action_type === "FlushMetrics") this.flushMetrics();
        else this.sendCtrlAltDel();
        return noContent();
      }
      case "PATCH /vm": {
        const { state } = vmState(json(), "vm");
        await this.setVmState(state);
        return noContent();
      }
      case ATTESTATION_ROUTE: {
        const req = attestationQuery(query);
        this.postBoot();
        return { status: 200, contentType: "application/cbor", bytes: this.attest(req) };
      }
    }
    for (const [re, why] of NOT_SUPPORTED) {
      if (re.test(path)) throw new FaultError(`${method} ${path}: ${why}`);
    }
    throw new FaultError(`Invalid request method and/or path: ${method} ${path.slice(0, 200)}`);
  }

  private instanceInfo(): Record<string, unknown> {
    const info: Record<string, unknown> = { id: this.id, state: this.state, vmm_version: this.version, app_name: APP_NAME };
    // The spec's states stop at Paused; a VM that has ended says how in a field of our own.
    const exit = this.exit;
    if (exit !== undefined) info["typervisor_exit"] = exit;
    return info;
  }

  private fullConfig(): Record<string, unknown> {
    const out: Record<string, unknown> = {
      "machine-config": this.resources.machine,
      drives: this.resources.drives ?? [],
      "network-interfaces": this.resources.networkInterfaces ?? [],
    };
    if (this.resources.bootSource) out["boot-source"] = this.resources.bootSource;
    if (this.resources.entropy) out["entropy"] = this.resources.entropy;
    if (this.resources.vsock) out["vsock"] = this.resources.vsock;
    if (this.resources.logger) out["logger"] = this.resources.logger;
    if (this.resources.metrics) out["metrics"] = this.resources.metrics;
    return out;
  }

  private applyResources(r: VmResources): void {
    this.resources.machine = { ...r.machine };
    if (r.bootSource) this.resources.bootSource = { ...r.bootSource };
    if (r.serial) this.resources.serial = { ...r.serial };
    if (r.drives) this.resources.drives = r.drives.map((d) => ({ ...d }));
    if (r.entropy) this.resources.entropy = { ...r.entropy };
    if (r.networkInterfaces) this.resources.networkInterfaces = r.networkInterfaces.map((n) => ({ ...n }));
    if (r.vsock) this.resources.vsock = { ...r.vsock };
    if (r.logger) {
      this.log.configure(r.logger);
      this.resources.logger = this.log.current;
    }
    if (r.metrics) this.configureMetrics(r.metrics);
  }

  private configureMetrics(m: NonNullable<VmResources["metrics"]>): void {
    if (this.metricsWriter !== undefined) {
      throw new FaultError("metrics: the metrics system is already initialized (PUT /metrics may be done once)");
    }
    const extra = { ...(m.emit_id ? { id: this.id } : {}), ...(m.properties ? { properties: m.properties } : {}) };
    this.metricsWriter = new MetricsWriter(m.metrics_path, () => metricsLine(this.metrics(), extra), this.metricsIntervalMs);
    this.resources.metrics = m;
  }

  private flushMetrics(): void {
    if (this.metricsWriter === undefined) {
      throw new FaultError("FlushMetrics: the metrics system is not initialized: PUT /metrics first");
    }
    this.metricsWriter.flush();
  }

  private preBoot(): void {
    if (this.microvmValue !== undefined || this.starting) throw new FaultError(NOT_AFTER_START);
  }

  private postBoot(): void {
    if (this.microvmValue === undefined) throw new FaultError(NOT_BEFORE_START);
    const exit = this.exit;
    if (exit !== undefined) throw new FaultError(`the microVM has stopped (${describeExit(exit)})`);
  }

  private async instanceStart(): Promise<void> {
    this.preBoot();
    const cfg = microVmConfigFrom(this.resources);
    const consoleFd = this.openSerial();
    let mv: MicroVM;
    this.starting = true;
    try {
      try {
        mv = MicroVM.create({
          ...cfg,
          consoleFd,
          vmFactory: this.vmFactory,
          ...(this.vmId !== undefined ? { id: this.vmId } : {}),
          ...(this.chipDir !== undefined ? { chipDir: this.chipDir } : {}),
          ...(this.nsm !== undefined && this.nsm !== false ? { nsm: this.nsm } : {}),
          ...(this.imageSignature !== undefined ? { imageSignature: this.imageSignature } : {}),
        });
      } catch (e) {
        throw new FaultError(`InstanceStart: ${(e as Error).message}`, 400, e);
      }
      mv.on("exit", (exit) => {
        const level = exit.kind === "crash" || exit.kind === "error" ? "Error" : "Info";
        this.log.log(level, "vmm", "microVM stopped", { exit: exit as unknown as Record<string, unknown> });
        this.metricsWriter?.flush();
        this.emit("exit", exit);
      });
      try {
        await mv.start();
      } catch (e) {
        await mv.stop("start failed").catch(() => undefined);
        throw new FaultError(`InstanceStart: the microVM failed to start: ${(e as Error).message}`);
      }
    } finally {
      this.starting = false;
    }
    this.microvmValue = mv;
    this.log.info("vmm", "microVM started", { vcpus: cfg.vcpus, mem_mib: cfg.memMiB, kernel: cfg.kernel, vm_id: mv.id, drives: (cfg.drives ?? []).map((d) => d.id),
      entropy: cfg.entropy !== undefined, nsm: mv.config.nsm !== undefined });
    this.emit("start", mv);
  }

  /** The console: PUT /serial's path (a file is appended to; a FIFO is written blocking), else `consoleFd`. */
  private openSerial(): number {
    const path = this.resources.serial?.serial_out_path;
    if (path === undefined) return this.consoleFd;
    try {
      // A FIFO opened O_RDWR never blocks the open (no reader needed) and gives the vCPU
      // threads a blocking fd: a guest that out-writes the reader waits, as on a real line.
      const fifo = existsSync(path) && statSync(path).isFIFO();
      const fd = fifo ? openSync(path, constants.O_RDWR) : openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
      if (this.serialFd >= 0) closeSync(this.serialFd);
      this.serialFd = fd;
      return fd;
    } catch (e) {
      throw new FaultError(`serial.serial_out_path "${path}" cannot be opened for writing: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }

  /**
   * PATCH /drives: path_on_host puts another image under the running drive (the card switches
   * between two requests and tells the guest the new capacity with a config change, as
   * Firecracker's block device does); rate_limiter updates reach the drive's card at once (a bucket
   * left out is kept, one with size or refill_time 0 is removed, as Firecracker). The path goes
   * first: when it fails, nothing of the request is applied.
   */
  private async patchDrive(id: string, patch: PartialDrive): Promise<void> {
    const list = this.resources.drives ?? [];
    const i = list.findIndex((d) => d.drive_id === id);
    if (i === -1) {
      const known = list.map((d) => `"${d.drive_id}"`).join(", ");
      throw new FaultError(`drive "${id}" not found: ${known === "" ? "this microVM has no drives" : `its drives are ${known}`}`);
    }
    let current = list[i]!;
    if (patch.path_on_host !== undefined) {
      let size: number;
      try {
        size = (await this.microvmValue!.updateDrive(id, { path: patch.path_on_host })).sizeBytes!;
      } catch (e) {
        throw new FaultError(`drive "${id}": path_on_host: ${(e as Error).message}`);
      }
      current = { ...current, path_on_host: patch.path_on_host };
      list[i] = current;
      this.log.info("vmm", "drive image replaced", { drive: id, path_on_host: patch.path_on_host, size_bytes: size });
    }
    if (patch.rate_limiter === undefined) return;
    const merged = mergeRateLimiter(current.rate_limiter, patch.rate_limiter);
    try {
      await this.microvmValue!.updateDrive(id, { rateLimiter: rateLimiterFrom(merged) });
    } catch (e) {
      throw new FaultError(`drive "${id}": rate_limiter: the update failed: ${(e as Error).message}`);
    }
    const next = { ...current };
    if (merged.bandwidth !== undefined || merged.ops !== undefined) next.rate_limiter = merged;
    else delete next.rate_limiter;
    list[i] = next;
    this.log.info("vmm", "drive rate limiter updated", { drive: id, rate_limiter: { ...merged } });
  }

  /**
   * PATCH /network-interfaces: tx_rate_limiter and rx_rate_limiter reach the interface's card at
   * once (a bucket left out is kept, one with size or refill_time 0 is removed, as for drives).
   */
  private async patchNetworkInterface(id: string, patch: PartialNetworkInterface): Promise<void> {
    const list = this.resources.networkInterfaces ?? [];
    const i = list.findIndex((n) => n.iface_id === id);
    if (i === -1) {
      const known = list.map((n) => `"${n.iface_id}"`).join(", ");
      throw new FaultError(`network interface "${id}" not found: ${known === "" ? "this microVM has none" : `its interfaces are ${known}`}`);
    }
    const next = { ...list[i]! };
    for (const [key, field] of [["tx_rate_limiter", "txRateLimiter"], ["rx_rate_limiter", "rxRateLimiter"]] as const) {
      const p = patch[key];
      if (p === undefined) continue;
      const merged = mergeRateLimiter(next[key], p);
      try {
        await this.microvmValue!.updateNetworkInterface(id, { [field]: rateLimiterFrom(merged) });
      } catch (e) {
        throw new FaultError(`network interface "${id}": ${key}: the update failed: ${(e as Error).message}`);
      }
      if (merged.bandwidth !== undefined || merged.ops !== undefined) next[key] = merged;
      else delete next[key];
      this.log.info("vmm", "network interface rate limiter updated", { iface: id, [key]: { ...merged } });
    }
    list[i] = next;
  }

  private attest(req: { nonce?: Uint8Array; userData?: Uint8Array; publicKey?: Uint8Array }): Uint8Array {
    try {
      return this.microvmValue!.attest(req);
    } catch (e) {
      if (e instanceof AttestationUnavailableError || e instanceof AttestationInputError) {
        throw new FaultError(`GET ${ATTESTATION_PATH}: ${e.message}`);
      }
      throw e;
    }
  }

  private sendCtrlAltDel(): void {
    this.postBoot();
    try {
      this.microvmValue!.sendCtrlAltDel();
    } catch (e) {
      throw new FaultError(`SendCtrlAltDel: ${(e as Error).message}`, 400, e);
    }
  }

  private async setVmState(state: "Paused" | "Resumed"): Promise<void> {
    this.postBoot();
    const mv = this.microvmValue!;
    // Firecracker answers 204 to Paused on a paused VM and Resumed on a running one. The VM's
    // own state decides, whoever paused or resumed it (the SDK, a test, this API).
    if (state === "Paused" && mv.state !== "paused") await mv.pause();
    else if (state === "Resumed" && mv.state === "paused") mv.resume();
  }
}

function describeExit(e: VmExit): string {
  switch (e.kind) {
    case "debug-exit":
      return `debug exit, status ${e.status}`;
    case "stopped":
      return `stopped by ${e.by}`;
    case "crash":
      return `crash on vCPU ${e.vcpu}: ${e.reason}`;
    case "error":
      return `error on vCPU ${e.vcpu}: ${e.message}`;
    default:
      return e.kind;
  }
}

function parseBody(method: string, path: string, raw: Buffer): unknown {
  if (raw.length === 0) throw new FaultError(`${method} ${path}: the request has no body; a JSON object is required`);
  const text = raw.toString("utf8");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FaultError(`${method} ${path}: malformed JSON body: ${(e as Error).message}`);
  }
}

/** One answer: JSON (`body`) or raw bytes with their content type. */
interface Answer {
  status: number;
  body?: unknown;
  bytes?: Uint8Array;
  contentType?: string;
}

/** The id in a resource's body (drive_id, iface_id) must be the one in the path. */
function checkBodyId(id: string, body: unknown, key = "drive_id", what = "drive"): void {
  const bodyId = (body as Record<string, unknown> | null)?.[key];
  if (typeof bodyId === "string" && bodyId !== id) {
    throw new FaultError(`${what}: the ${key} in the path ("${id}") does not match the one in the body ("${bodyId}")`);
  }
}

/** `nonce=<hex>&user_data=<hex>&public_key=<hex>`, each optional, at most once, hex in pairs, within Nitro's limits. */
export function attestationQuery(query: string): { nonce?: Uint8Array; userData?: Uint8Array; publicKey?: Uint8Array } {
  const where = `GET ${ATTESTATION_PATH}`;
  const seen = new Map<string, Uint8Array>();
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = decodeURIComponentSafe(eq === -1 ? part : part.slice(0, eq));
    const value = eq === -1 ? "" : part.slice(eq + 1);
    const max = Object.prototype.hasOwnProperty.call(ATTESTATION_PARAMS, key) ? ATTESTATION_PARAMS[key] : undefined;
    if (max === undefined) {
      throw new FaultError(`${where}: unknown query parameter "${key.slice(0, 40)}", expected one of: ${Object.keys(ATTESTATION_PARAMS).join(", ")}`);
    }
    if (seen.has(key)) throw new FaultError(`${where}: query parameter "${key}" given more than once`);
    if (!/^(?:[0-9A-Fa-f]{2})*$/.test(value)) throw new FaultError(`${where}: ${key} must be hex digits in pairs`);
    if (value.length / 2 > max) throw new FaultError(`${where}: ${key} is ${value.length / 2} bytes; at most ${max}`);
    if (key === "public_key" && value.length === 0) throw new FaultError(`${where}: public_key must not be empty`);
    seen.set(key, new Uint8Array(Buffer.from(value, "hex")));
  }
  return {
    ...(seen.has("nonce") ? { nonce: seen.get("nonce")! } : {}),
    ...(seen.has("user_data") ? { userData: seen.get("user_data")! } : {}),
    ...(seen.has("public_key") ? { publicKey: seen.get("public_key")! } : {}),
  };
}

const ok = (body: unknown) => ({ status: 200, body });
const noContent = () => ({ status: 204 });

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (res.headersSent || res.destroyed) return;
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
}

function sendBytes(res: ServerResponse, status: number, contentType: string, bytes: Uint8Array): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { "content-type": contentType, "content-length": bytes.byteLength }).end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/** Removes a socket file nobody listens on; refuses one that answers. */
async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  if (!statSync(path).isSocket()) throw new Error(`the API socket path "${path}" exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (live) throw new Error(`the API socket "${path}" is in use by another process`);
  unlinkSync(path);
}

/** Starts the API server on `socketPath` and resolves once it listens. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServerHandle> {
  const s = new ApiServer(opts);
  await s.listen();
  if (opts.resources !== undefined && opts.startOnConfig) {
    try {
      await s.startInstance();
    } catch (e) {
      await s.close();
      throw e;
    }
  }
  return s;
}
