// A minimal client for the API socket: one request, one connection, the answer parsed.
// For the CLI's `ps/stop/pause/resume` and for tests.

import { request } from "node:http";

export interface ApiResponse {
  status: number;
  /** The parsed JSON body, or undefined for an empty body (204). */
  body: unknown;
  /** The raw body text. */
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** Sends `method path` with an optional JSON body (an object is serialized; a string is sent as is). */
export function apiRequest(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
  opts: { timeoutMs?: number } = {},
): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: {
          accept: "application/json",
          ...(payload !== undefined ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}),
        },
        agent: false,
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown;
          try {
            parsed = text.length > 0 ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text, headers: res.headers });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} on ${socketPath}: no answer in ${opts.timeoutMs ?? 10_000} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** The fault message of an error answer, or the status line when there is none. */
export function faultOf(r: ApiResponse): string {
  const b = r.body as { fault_message?: unknown } | undefined;
  return typeof b?.fault_message === "string" ? b.fault_message : `HTTP ${r.status}`;
}

/** What `fetchAttestation` asks the document to carry (Nitro bounds: nonce and userData ≤ 512 B, publicKey 1..1024 B). */
export interface FetchAttestationOptions {
  nonce?: Uint8Array;
  userData?: Uint8Array;
  publicKey?: Uint8Array;
  timeoutMs?: number;
}

/**
 * Asks the microVM behind `socketPath` for an attestation document (`GET /typervisor/attestation`,
 * Typervisor's extension of the Firecracker API) and resolves with its bytes (COSE_Sign1, as
 * Nitro's). Rejects with the server's fault message (no chip identity, VM not started, ...).
 */
export function fetchAttestation(socketPath: string, opts: FetchAttestationOptions = {}): Promise<Uint8Array> {
  const params: string[] = [];
  const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
  if (opts.nonce !== undefined) params.push(`nonce=${hex(opts.nonce)}`);
  if (opts.userData !== undefined) params.push(`user_data=${hex(opts.userData)}`);
  if (opts.publicKey !== undefined) params.push(`public_key=${hex(opts.publicKey)}`);
  const path = `/typervisor/attestation${params.length > 0 ? `?${params.join("&")}` : ""}`;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method: "GET", path, headers: { accept: "application/cbor" }, agent: false, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const body = Buffer.concat(chunks);
          if (res.statusCode === 200 && String(res.headers["content-type"] ?? "").startsWith("application/cbor")) {
            resolve(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
            return;
          }
          let message = `HTTP ${res.statusCode ?? 0}`;
          try {
            const fault = (JSON.parse(body.toString("utf8")) as { fault_message?: unknown }).fault_message;
            if (typeof fault === "string") message = fault;
          } catch {
            // Not JSON: keep the status line.
          }
          reject(new Error(`attestation from ${socketPath}: ${message}`));
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${path.split("?")[0]} on ${socketPath}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}
