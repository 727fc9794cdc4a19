// Metrics: API request counts and latencies, and the VM's exits by reason per vCPU, as
// Firecracker-style JSON lines (PUT /metrics: flushed every `intervalMs` and on FlushMetrics)
// and as Prometheus text (`--metrics-http HOST:PORT`).
//
// Unlike Firecracker's SharedIncMetric (a delta since the last flush), every counter here is
// cumulative since the process started: a lost or unread line loses nothing, and the same
// numbers serve Prometheus, whose counters are cumulative by definition.
//
// Drives: Firecracker's `block` group (summed over drives) and one `block_<drive_id>` group per
// drive, with Firecracker's key names where the meaning is the same (queue_event_count,
// rate_limiter_throttled_events, execute_fails) and our own where the card counts differently
// (requests and bytes are not split into reads and writes).
//
// Other cards: each device kind names and fills its own groups (devices/virtio/*/kind.ts
// metricGroups): Firecracker's `entropy` group for the rng card, an `nsm` group of our own
// (Firecracker has no NSM).
//
// Routes are counted by their template ("PUT /drives/{drive_id}"); everything unknown counts as
// "other", so hostile paths cannot grow the table.

import { createServer, type Server } from "node:http";
import { closeSync, constants, openSync, writeSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { MicroVMMetrics } from "../sdk/microvm.js";
import { FaultError } from "./schema.js";

export interface RouteStats {
  count: number;
  fails: number;
  latency_us: { sum: number; min: number; max: number };
}

/** Everything a metrics line or a Prometheus scrape shows. */
export interface MetricsSnapshot {
  utc_timestamp_ms: number;
  /** Milliseconds since the VM started; 0 before. */
  uptime_ms: number;
  /** Per route template ("GET /", "PUT /actions", "other"). */
  api: Record<string, RouteStats>;
  /** Exits by reason per vCPU; empty before start. */
  vcpus: MicroVMMetrics["vcpus"];
  console: MicroVMMetrics["console"];
  /** Per drive id: the card's counters; empty before start or without drives. */
  drives: MicroVMMetrics["drives"];
  /** Per card name (virtio-blk-<id>, virtio-rng, virtio-nsm): the card's counters; empty before start. */
  devices?: MicroVMMetrics["devices"];
  /** Metric groups of the non-block devices (entropy, nsm, ...), as their kinds name them. */
  groups?: MicroVMMetrics["groups"];
}

/** Firecracker's metric group names for the routes it also has. */
const FC_KEYS: Record<string, [group: string, key: string]> = {
  "GET /": ["get_api_requests", "instance_info"],
  "GET /version": ["get_api_requests", "vmm_version"],
  "GET /machine-config": ["get_api_requests", "machine_cfg"],
  "GET /vm/config": ["get_api_requests", "vm_config"],
  "PUT /actions": ["put_api_requests", "actions"],
  "PUT /boot-source": ["put_api_requests", "boot_source"],
  "PUT /drives/{drive_id}": ["put_api_requests", "drive"],
  "PUT /logger": ["put_api_requests", "logger"],
  "PUT /machine-config": ["put_api_requests", "machine_cfg"],
  "PUT /metrics": ["put_api_requests", "metrics"],
  "PUT /entropy": ["put_api_requests", "entropy"],
  "PUT /serial": ["put_api_requests", "serial"],
  "PATCH /drives/{drive_id}": ["patch_api_requests", "drive"],
  "PATCH /machine-config": ["patch_api_requests", "machine_cfg"],
  "PATCH /vm": ["patch_api_requests", "vm"],
};

export class ApiMetrics {
  private readonly routes = new Map<string, RouteStats>();

  record(route: string, status: number, durationUs: number): void {
    let s = this.routes.get(route);
    if (s === undefined) {
      s = { count: 0, fails: 0, latency_us: { sum: 0, min: Number.POSITIVE_INFINITY, max: 0 } };
      this.routes.set(route, s);
    }
    s.count++;
    if (status >= 400) s.fails++;
    s.latency_us.sum += durationUs;
    s.latency_us.min = Math.min(s.latency_us.min, durationUs);
    s.latency_us.max = Math.max(s.latency_us.max, durationUs);
  }

  snapshot(): Record<string, RouteStats> {
    const out: Record<string, RouteStats> = {};
    for (const [k, v] of this.routes) out[k] = { count: v.count, fails: v.fails, latency_us: { ...v.latency_us } };
    return out;
  }
}

/** One metrics line, Firecracker's group names where a route maps to one, then ours. */
export function metricsLine(s: MetricsSnapshot, extra: { id?: string; properties?: Record<string, string> } = {}): string {
  const line: Record<string, unknown> = {};
  if (extra.id !== undefined) line["id"] = extra.id;
  if (extra.properties !== undefined) line["properties"] = extra.properties;
  line["utc_timestamp_ms"] = s.utc_timestamp_ms;
  line["uptime_ms"] = s.uptime_ms;
  const groups: Record<string, Record<string, number>> = { get_api_requests: {}, put_api_requests: {}, patch_api_requests: {} };
  for (const [route, st] of Object.entries(s.api)) {
    const fc = FC_KEYS[route];
    if (fc === undefined) continue;
    const g = groups[fc[0]]!;
    g[`${fc[1]}_count`] = st.count;
    g[`${fc[1]}_fails`] = st.fails;
  }
  Object.assign(line, groups);
  line["api_latencies_us"] = Object.fromEntries(
    Object.entries(s.api).map(([route, st]) => [
      route,
      { count: st.count, avg: st.count === 0 ? 0 : Math.round(st.latency_us.sum / st.count), min: st.count === 0 ? 0 : st.latency_us.min, max: st.latency_us.max },
    ]),
  );
  const sum = (k: keyof MetricsSnapshot["vcpus"][number]) => s.vcpus.reduce((a, v) => a + v[k], 0);
  line["vcpu"] = {
    exit_io_in: sum("IO_IN"),
    exit_io_out: sum("IO_OUT"),
    exit_mmio_read: sum("MMIO_READ"),
    exit_mmio_write: sum("MMIO_WRITE"),
    exit_unhandled_io: sum("UNHANDLED_IO"),
    exit_unhandled_mmio: sum("UNHANDLED_MMIO"),
    exit_interrupted: sum("INTERRUPTED"),
    exit_other: sum("OTHER"),
  };
  line["vcpus"] = s.vcpus.map((v, i) => ({ vcpu: i, ...v }));
  line["uart"] = { write_count: s.console.bytes, dropped_bytes: s.console.droppedBytes };
  const drives = Object.entries(s.drives ?? {});
  const blockGroup = (m: MetricsSnapshot["drives"][string]) => ({
    request_count: m.requests,
    bytes: m.bytes,
    execute_fails: m.errors,
    rate_limiter_throttled_events: m.throttled,
    queue_event_count: m.kicks,
    interrupt_count: m.interrupts,
    needs_reset: m.needsReset,
  });
  const total = { requests: 0, bytes: 0, errors: 0, throttled: 0, kicks: 0, interrupts: 0, needsReset: 0, cpuMicros: 0 };
  for (const [, m] of drives) for (const k of Object.keys(total) as Array<keyof typeof total>) total[k] += m[k];
  line["block"] = blockGroup(total);
  for (const [id, m] of drives) line[`block_${id}`] = blockGroup(m);
  // The other devices' groups, as each device kind names and fills them (devices/virtio/*/kind.ts).
  for (const [group, values] of Object.entries(s.groups ?? {})) line[group] = values;
  return JSON.stringify(line);
}

/**
 * Writes metrics lines to the PUT /metrics path: every `intervalMs` and on `flush()`. A FIFO must
 * have a reader when it is configured; a line a full FIFO cannot take is dropped and counted.
 */
export class MetricsWriter {
  private readonly fd: number;
  private readonly timer: NodeJS.Timeout;
  /** Lines written and lines dropped. */
  written = 0;
  dropped = 0;

  constructor(
    readonly path: string,
    private readonly line: () => string,
    intervalMs: number,
  ) {
    try {
      this.fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o600);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === "ENXIO" ? "ENXIO (a named pipe with no reader)" : (code ?? (e as Error).message);
      throw new FaultError(`metrics.metrics_path "${path}" cannot be opened for writing: ${why}`);
    }
    this.timer = setInterval(() => this.flush(), intervalMs);
    this.timer.unref();
  }

  flush(): void {
    const buf = Buffer.from(this.line() + "\n");
    try {
      if (writeSync(this.fd, buf) === buf.length) this.written++;
      else this.dropped++;
    } catch {
      this.dropped++;
    }
  }

  close(): void {
    clearInterval(this.timer);
    closeSync(this.fd);
  }
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

/** Prometheus text exposition format 0.0.4. */
export function prometheusText(s: MetricsSnapshot): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  family("typervisor_uptime_seconds", "gauge", "Seconds since the microVM's vCPUs started.");
  out.push(`typervisor_uptime_seconds ${s.uptime_ms / 1000}`);
  family("typervisor_vcpu_exits_total", "counter", "vCPU exits handled by the VMM, by vCPU and reason.");
  s.vcpus.forEach((v, i) => {
    for (const [reason, n] of Object.entries(v)) out.push(`typervisor_vcpu_exits_total{vcpu="${i}",reason="${reason}"} ${n}`);
  });
  family("typervisor_api_requests_total", "counter", "API requests answered, by route.");
  for (const [route, st] of Object.entries(s.api)) out.push(`typervisor_api_requests_total{route="${esc(route)}"} ${st.count}`);
  family("typervisor_api_request_failures_total", "counter", "API requests answered with a 4xx or 5xx status, by route.");
  for (const [route, st] of Object.entries(s.api)) out.push(`typervisor_api_request_failures_total{route="${esc(route)}"} ${st.fails}`);
  family("typervisor_api_request_duration_seconds", "summary", "Time to answer API requests, by route.");
  for (const [route, st] of Object.entries(s.api)) {
    out.push(`typervisor_api_request_duration_seconds_sum{route="${esc(route)}"} ${st.latency_us.sum / 1e6}`);
    out.push(`typervisor_api_request_duration_seconds_count{route="${esc(route)}"} ${st.count}`);
  }
  const drives = Object.entries(s.drives ?? {});
  const driveFamilies: Array<[string, keyof MetricsSnapshot["drives"][string], string]> = [
    ["typervisor_drive_requests_total", "requests", "virtio-blk requests completed, by drive."],
    ["typervisor_drive_bytes_total", "bytes", "Bytes read and written by virtio-blk requests, by drive."],
    ["typervisor_drive_errors_total", "errors", "virtio-blk requests that failed (answered with an error status), by drive."],
    ["typervisor_drive_throttled_total", "throttled", "Times a drive's rate limiter held requests back, by drive."],
    ["typervisor_drive_queue_notifications_total", "kicks", "Guest queue notifications (kicks) seen by a drive's card, by drive."],
    ["typervisor_drive_interrupts_total", "interrupts", "Interrupts a drive's card raised in the guest, by drive."],
  ];
  for (const [name, key, help] of driveFamilies) {
    family(name, "counter", help);
    for (const [id, m] of drives) out.push(`${name}{drive="${esc(id)}"} ${m[key]}`);
  }
  const devices = Object.entries(s.devices ?? {});
  const deviceFamilies: Array<[string, keyof MetricsSnapshot["drives"][string], string]> = [
    ["typervisor_device_requests_total", "requests", "Requests a virtio card completed, by card (virtio-blk-<id>, virtio-rng, virtio-nsm)."],
    ["typervisor_device_bytes_total", "bytes", "Bytes a virtio card moved for the guest, by card."],
    ["typervisor_device_errors_total", "errors", "Requests a virtio card failed, by card."],
    ["typervisor_device_throttled_total", "throttled", "Times a card's rate limiter held requests back, by card."],
    ["typervisor_device_queue_notifications_total", "kicks", "Guest queue notifications (kicks) seen by a card, by card."],
    ["typervisor_device_interrupts_total", "interrupts", "Interrupts a card raised in the guest, by card."],
  ];
  for (const [name, key, help] of deviceFamilies) {
    family(name, "counter", help);
    for (const [card, m] of devices) out.push(`${name}{device="${esc(card)}"} ${m[key]}`);
  }
  family("typervisor_device_cpu_seconds_total", "counter", "CPU time of a card's own worker thread, apart from the vCPUs and the VMM, by card.");
  for (const [card, m] of devices) out.push(`typervisor_device_cpu_seconds_total{device="${esc(card)}"} ${m.cpuMicros / 1e6}`);
  family("typervisor_console_bytes_total", "counter", "Guest serial output bytes read by the VMM.");
  out.push(`typervisor_console_bytes_total ${s.console.bytes}`);
  family("typervisor_console_dropped_bytes_total", "counter", "Guest serial output bytes dropped because nobody read them.");
  out.push(`typervisor_console_dropped_bytes_total ${s.console.droppedBytes}`);
  return out.join("\n") + "\n";
}

export interface PrometheusServerHandle {
  /** The bound port (useful with port 0). */
  readonly port: number;
  readonly host: string;
  close(): Promise<void>;
}

/** Serves `GET /metrics` in Prometheus text format on HOST:PORT; everything else is 404. */
export function startPrometheusServer(host: string, port: number, getMetrics: () => MetricsSnapshot): Promise<PrometheusServerHandle> {
  const server: Server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    req.resume();
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: GET /metrics\n");
      return;
    }
    let body: string;
    try {
      body = prometheusText(getMetrics());
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" }).end(`metrics unavailable: ${(e as Error).message}\n`);
      return;
    }
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const addr = server.address() as AddressInfo;
      resolve({
        port: addr.port,
        host,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Parses `--metrics-http HOST:PORT` (IPv6 in brackets: `[::1]:9100`). */
export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--metrics-http must be HOST:PORT (e.g. 127.0.0.1:9100), got "${value}"`);
  return { host: (m[1] ?? m[2])!, port };
}
