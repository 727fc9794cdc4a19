// Structured logs for PUT /logger: one JSON object per line ({"ts", "level", "msg", ...fields}),
// filtered by level and, when `module` is set, by the origin's prefix. Writes never block the
// API: the file or FIFO is opened non-blocking and a line that cannot be written whole (a full
// FIFO) is dropped and counted. Before PUT /logger, lines go to the `fallback` sink (stderr in
// the CLI, nowhere in tests).

import { closeSync, constants, openSync, writeSync } from "node:fs";
import { FaultError, LOG_LEVELS, type LoggerConfig, type LogLevel } from "./schema.js";

/** Levels by severity; "Off" drops everything. */
const SEVERITY: Record<LogLevel, number> = { Off: 0, Error: 1, Warning: 2, Info: 3, Debug: 4, Trace: 5 };

export type LogSink = (line: string) => void;

/**
 * A record as one JSON line. Bigints (a crashed vCPU's registers in a "microVM stopped" exit) go as
 * hex strings, which JSON.stringify would otherwise refuse with a TypeError; anything else it
 * cannot write (a cycle) gives a line that says so: a log line never takes the VMM down.
 */
export function jsonLine(rec: Record<string, unknown>): string {
  const replacer = (_key: string, v: unknown): unknown => (typeof v === "bigint" ? `0x${v.toString(16)}` : v);
  try {
    return JSON.stringify(rec, replacer) + "\n";
  } catch (e) {
    return JSON.stringify({ ts: rec["ts"], level: rec["level"], msg: rec["msg"], unloggable: (e as Error).message }) + "\n";
  }
}

export class JsonLogger {
  private fd = -1;
  private level: LogLevel = "Info";
  private module: string | undefined;
  private showOrigin = false;
  private config: LoggerConfig | undefined;
  /** Lines dropped because the target could not take them. */
  dropped = 0;

  constructor(private readonly fallback: LogSink | undefined = undefined) {}

  /** Applies PUT /logger. Opens `log_path` (a file is created; a FIFO must have a reader). */
  configure(cfg: LoggerConfig): void {
    let fd = -1;
    if (cfg.log_path !== undefined) {
      try {
        fd = openSync(cfg.log_path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o600);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const why = code === "ENXIO" ? "ENXIO (a named pipe with no reader)" : (code ?? (e as Error).message);
        throw new FaultError(`logger.log_path "${cfg.log_path}" cannot be opened for writing: ${why}`);
      }
    }
    this.close();
    this.fd = fd;
    this.level = cfg.level ?? "Info";
    this.module = cfg.module;
    this.showOrigin = cfg.show_log_origin ?? false;
    this.config = { ...cfg, level: this.level };
  }

  /** The applied configuration (for GET /vm/config), if any. */
  get current(): LoggerConfig | undefined {
    return this.config;
  }

  enabled(level: LogLevel): boolean {
    return level !== "Off" && SEVERITY[level] <= SEVERITY[this.level];
  }

  log(level: Exclude<LogLevel, "Off">, origin: string, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    if (this.module !== undefined && !origin.startsWith(this.module)) return;
    const rec: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...fields };
    if (this.showOrigin) rec["origin"] = origin;
    const line = jsonLine(rec);
    if (this.fd < 0) {
      this.fallback?.(line);
      return;
    }
    try {
      const buf = Buffer.from(line);
      if (writeSync(this.fd, buf) !== buf.length) this.dropped++;
    } catch {
      this.dropped++;
    }
  }

  error(origin: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("Error", origin, msg, fields);
  }
  warn(origin: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("Warning", origin, msg, fields);
  }
  info(origin: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("Info", origin, msg, fields);
  }
  debug(origin: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("Debug", origin, msg, fields);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

export { LOG_LEVELS };
