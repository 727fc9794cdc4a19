// The request bodies of the Firecracker API (vendor/firecracker/firecracker-api.yaml, `definitions:`), checked
// at the edge before anything reaches the VM. Each check names the resource, the field and the
// problem in one sentence, the way Firecracker's serde errors do, and rejects unknown fields
// (Firecracker's structs are `deny_unknown_fields`). The contract tests hold these checks
// against the spec file itself with a JSON-schema validator (contract.test.ts).

/** A request the API answers with 400 and `{"fault_message": message}`. */
export class FaultError extends Error {
  constructor(
    message: string,
    readonly status = 400,
    /** The error underneath (the CLI tells a bad configuration from a host that cannot run VMs). */
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "FaultError";
  }
}

type Check<T> = (value: unknown, where: string) => T;

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v);
  return `${typeof v} ${String(v)}`;
}

export const str =
  (): Check<string> =>
  (v, where) => {
    if (typeof v !== "string") throw new FaultError(`${where} must be a string, got ${describe(v)}`);
    return v;
  };

export const bool =
  (): Check<boolean> =>
  (v, where) => {
    if (typeof v !== "boolean") throw new FaultError(`${where} must be a boolean, got ${describe(v)}`);
    return v;
  };

export const int =
  (min = 0, max = Number.MAX_SAFE_INTEGER): Check<number> =>
  (v, where) => {
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw new FaultError(`${where} must be an integer, got ${describe(v)}`);
    }
    if (v < min || v > max) throw new FaultError(`${where} must be from ${min} to ${max}, got ${v}`);
    return v;
  };

/** A string enum; `caseInsensitive` answers with the spelling the spec uses. */
export const oneOf =
  <E extends string>(values: readonly E[], caseInsensitive = false): Check<E> =>
  (v, where) => {
    if (typeof v === "string") {
      const hit = values.find((e) => (caseInsensitive ? e.toLowerCase() === v.toLowerCase() : e === v));
      if (hit !== undefined) return hit;
    }
    throw new FaultError(`${where} must be one of ${values.map((e) => JSON.stringify(e)).join(", ")}, got ${describe(v)}`);
  };

export const mapOf =
  <T>(item: Check<T>): Check<Record<string, T>> =>
  (v, where) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new FaultError(`${where} must be an object, got ${describe(v)}`);
    }
    const out: Record<string, T> = Object.create(null);
    for (const [k, x] of Object.entries(v)) out[k] = item(x, `${where}.${k}`);
    return out;
  };

type Fields = Record<string, Check<unknown>>;
type Out<F extends Fields, R extends keyof F> = { [K in R]: ReturnType<F[K]> } & { [K in Exclude<keyof F, R>]?: ReturnType<F[K]> };

/** An object with known fields only; `required` must be present. */
export function object<F extends Fields, R extends keyof F & string = never>(fields: F, required: readonly R[] = []): Check<Out<F, R>> {
  return (v, where) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new FaultError(`${where} must be a JSON object, got ${describe(v)}`);
    }
    const known = Object.keys(fields);
    for (const k of Object.keys(v)) {
      if (!Object.prototype.hasOwnProperty.call(fields, k)) {
        throw new FaultError(`${where}: unknown field "${k}", expected one of: ${known.join(", ")}`);
      }
    }
    for (const k of required) {
      if (!Object.prototype.hasOwnProperty.call(v, k)) throw new FaultError(`${where}: missing required field "${k}"`);
    }
    const out: Record<string, unknown> = {};
    for (const [k, check] of Object.entries(fields)) {
      const x = (v as Record<string, unknown>)[k];
      if (Object.prototype.hasOwnProperty.call(v, k)) out[k] = check(x, `${where}.${k}`);
    }
    return out as Out<F, R>;
  };
}

// ---- definitions (spec names in comments) ----

/** #/definitions/TokenBucket */
export const tokenBucket = object({ size: int(0), refill_time: int(0), one_time_burst: int(0) }, ["size", "refill_time"]);
/** #/definitions/RateLimiter */
export const rateLimiter = object({ bandwidth: tokenBucket, ops: tokenBucket });
export type TokenBucket = ReturnType<typeof tokenBucket>;
export type RateLimiter = ReturnType<typeof rateLimiter>;

/** #/definitions/BootSource */
export const bootSource = object({ kernel_image_path: str(), boot_args: str(), initrd_path: str() }, ["kernel_image_path"]);
export type BootSource = ReturnType<typeof bootSource>;

export const CPU_TEMPLATES = ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"] as const;
export const HUGE_PAGES = ["None", "Transparent", "2M"] as const;
const machineFields = {
  vcpu_count: int(1, 32),
  mem_size_mib: int(0),
  smt: bool(),
  track_dirty_pages: bool(),
  cpu_template: oneOf(CPU_TEMPLATES),
  huge_pages: oneOf(HUGE_PAGES),
};
/** #/definitions/MachineConfiguration (PUT: both sizes required). */
export const machineConfig = object(machineFields, ["vcpu_count", "mem_size_mib"]);
/** PATCH /machine-config: the same fields, none required. */
export const machineConfigPatch = object(machineFields);
export type MachineConfiguration = ReturnType<typeof machineConfig>;

/** #/definitions/Drive */
export const drive = object(
  {
    drive_id: str(),
    is_root_device: bool(),
    partuuid: str(),
    cache_type: oneOf(["Unsafe", "Writeback"] as const),
    is_read_only: bool(),
    path_on_host: str(),
    rate_limiter: rateLimiter,
    io_engine: oneOf(["Sync", "Async"] as const),
    socket: str(),
  },
  ["drive_id", "is_root_device"],
);
export type Drive = ReturnType<typeof drive>;
/** #/definitions/PartialDrive */
export const partialDrive = object({ drive_id: str(), path_on_host: str(), rate_limiter: rateLimiter }, ["drive_id"]);
export type PartialDrive = ReturnType<typeof partialDrive>;

/** #/definitions/NetworkInterface */
export const networkInterface = object(
  {
    iface_id: str(),
    host_dev_name: str(),
    guest_mac: str(),
    mtu: int(68, 65535),
    rx_rate_limiter: rateLimiter,
    tx_rate_limiter: rateLimiter,
  },
  ["host_dev_name", "iface_id"],
);
export type NetworkInterface = ReturnType<typeof networkInterface>;
/** #/definitions/PartialNetworkInterface */
export const partialNetworkInterface = object({ iface_id: str(), rx_rate_limiter: rateLimiter, tx_rate_limiter: rateLimiter }, ["iface_id"]);
export type PartialNetworkInterface = ReturnType<typeof partialNetworkInterface>;

/** #/definitions/Vsock */
export const vsock = object({ guest_cid: int(3), uds_path: str(), vsock_id: str() }, ["guest_cid", "uds_path"]);
export type Vsock = ReturnType<typeof vsock>;

export const LOG_LEVELS = ["Error", "Warning", "Info", "Debug", "Trace", "Off"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** #/definitions/Logger (the level is case-insensitive, as the spec says). */
export const logger = object({
  level: oneOf(LOG_LEVELS, true),
  log_path: str(),
  show_level: bool(),
  show_log_origin: bool(),
  module: str(),
});
export type LoggerConfig = ReturnType<typeof logger>;

/** #/definitions/Metrics */
export const metrics = object({ metrics_path: str(), emit_id: bool(), properties: mapOf(str()) }, ["metrics_path"]);
export type MetricsConfig = ReturnType<typeof metrics>;

/** #/definitions/EntropyDevice */
export const entropy = object({ rate_limiter: rateLimiter });
export type EntropyDevice = ReturnType<typeof entropy>;
/** #/definitions/SerialDevice */
export const serial = object({ serial_out_path: str(), rate_limiter: tokenBucket });
export type SerialConfig = ReturnType<typeof serial>;

export const ACTIONS = ["FlushMetrics", "InstanceStart", "SendCtrlAltDel"] as const;
/** #/definitions/InstanceActionInfo */
export const instanceAction = object({ action_type: oneOf(ACTIONS) }, ["action_type"]);
/** #/definitions/Vm */
export const vmState = object({ state: oneOf(["Paused", "Resumed"] as const) }, ["state"]);

/** Resource ids in paths: Firecracker allows alphanumerics and underscores only. */
export function checkResourceId(id: string, what: string): string {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(id)) {
    throw new FaultError(`${what} "${id.slice(0, 64)}" is invalid: API resource ids can only contain alphanumeric characters and underscores (at most 64)`);
  }
  return id;
}
