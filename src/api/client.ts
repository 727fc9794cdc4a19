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
