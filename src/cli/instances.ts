// `typervisor ps | pause | resume | stop`: the running microVMs of this host, found through the
// runtime directory each API-serving VMM registers in (src/api/registry.ts), and driven through
// their API sockets — never through a shell or a control VM.

import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import { apiRequest, faultOf, listRunningVms, findRunningVm, defaultRuntimeDir, processAlive, type RunningVm } from "../api/index.js";
import { fetchAttestation } from "../sdk/index.js";
import { attachConsole, consoleSocketPath } from "./console.js";
import { UsageError } from "./args.js";

export interface Io {
  stdout: { write(s: string): unknown; isTTY?: boolean };
  stderr: { write(s: string): unknown };
}

/**
 * Colour only for a terminal, and never when NO_COLOR is set to anything non-empty (no-color.org)
 * or the terminal is "dumb".
 */
export function useColor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && (env["NO_COLOR"] ?? "") === "" && env["TERM"] !== "dumb";
}

// ECMA-48 SGR: 32 green, 33 yellow, 31 red, 0 reset.
const STATE_COLOR: Record<string, string> = { Running: "\x1b[32m", Paused: "\x1b[33m", "Not started": "\x1b[33m" };
const RED = "\x1b[31m";
const RESET = "\x1b[0m";

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

export function runtimeDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env["TYPERVISOR_RUNTIME_DIR"] ?? defaultRuntimeDir(env);
}

function formatUptime(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

async function stateOf(vm: RunningVm): Promise<string> {
  try {
    const r = await apiRequest(vm.socket, "GET", "/", undefined, { timeoutMs: 2000 });
    const body = r.body as { state?: unknown } | undefined;
    return r.status === 200 && typeof body?.state === "string" ? body.state : `api error ${r.status}`;
  } catch {
    return "unreachable";
  }
}

export async function psCommand(argv: string[], io: Io, now = Date.now(), env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const { values } = parse(argv, 0);
  const vms = listRunningVms(runtimeDir(values["runtime-dir"]));
  const rows = await Promise.all(vms.map(async (vm) => ({ ...vm, state: await stateOf(vm), uptimeMs: now - vm.startedAt })));
  if (values["json"] === true) {
    io.stdout.write(JSON.stringify(rows) + "\n");
    return EXIT_OK;
  }
  const table = [["ID", "PID", "STATE", "VCPUS", "MEM", "UPTIME", "SOCKET"]];
  for (const r of rows) table.push([r.id, String(r.pid), r.state, String(r.vcpus), `${r.memMiB}M`, formatUptime(r.uptimeMs), r.socket]);
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  const color = useColor(io.stdout, env);
  const paint = (cell: string, c: number, r: number): string => {
    const padded = c === table[0]!.length - 1 ? cell : cell.padEnd(widths[c]!);
    // The STATE column of a VM row; padding stays outside the escape codes so columns line up.
    if (!color || r === 0 || c !== 2) return padded;
    return `${STATE_COLOR[cell] ?? RED}${cell}${RESET}${padded.slice(cell.length)}`;
  };
  io.stdout.write(table.map((row, r) => row.map((cell, c) => paint(cell, c, r)).join("  ")).join("\n") + "\n");
  return EXIT_OK;
}

/** `pause <id>`, `resume <id>`: PATCH /vm through the VM's API socket. */
export async function vmStateCommand(verb: "pause" | "resume", argv: string[], io: Io): Promise<number> {
  const { vm, json } = target(argv);
  const r = await apiRequest(vm.socket, "PATCH", "/vm", { state: verb === "pause" ? "Paused" : "Resumed" });
  if (r.status !== 204) {
    io.stderr.write(`typervisor ${verb}: ${vm.id}: ${faultOf(r)}\n`);
    return EXIT_FAILED;
  }
  io.stdout.write(json ? JSON.stringify({ id: vm.id, state: verb === "pause" ? "Paused" : "Running" }) + "\n" : `${verb === "pause" ? "paused" : "resumed"} ${vm.id}\n`);
  return EXIT_OK;
}

/** `stop <id>`: SIGTERM to the VMM process, which stops its vCPUs and exits; waits for it to be gone. */
export async function stopCommand(argv: string[], io: Io, timeoutMs = 10_000): Promise<number> {
  const { vm, json } = target(argv);
  try {
    process.kill(vm.pid, "SIGTERM");
  } catch (e) {
    io.stderr.write(`typervisor stop: ${vm.id}: cannot signal process ${vm.pid}: ${(e as NodeJS.ErrnoException).code}\n`);
    return EXIT_FAILED;
  }
  const until = Date.now() + timeoutMs;
  while (processAlive(vm.pid)) {
    if (Date.now() > until) {
      io.stderr.write(`typervisor stop: ${vm.id}: process ${vm.pid} still running after ${timeoutMs} ms\n`);
      return EXIT_FAILED;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  io.stdout.write(json ? JSON.stringify({ id: vm.id, state: "Stopped" }) + "\n" : `stopped ${vm.id}\n`);
  return EXIT_OK;
}

function parse(argv: string[], positionals: number): { values: { json?: boolean; "runtime-dir"?: string }; positionals: string[] } {
  try {
    const r = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: { "runtime-dir": { type: "string" }, json: { type: "boolean" } },
    });
    if (r.positionals.length !== positionals) {
      throw new UsageError(positionals === 0 ? `unexpected argument "${r.positionals[0]}"` : "say which VM: give its id (see typervisor ps)");
    }
    return r;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(e instanceof Error ? e.message.replace(/\. To specify a positional argument.*$/s, "") : String(e));
  }
}

function target(argv: string[]): { vm: RunningVm; json: boolean } {
  const { values, positionals } = parse(argv, 1);
  const id = positionals[0]!;
  const dir = runtimeDir(values["runtime-dir"]);
  let vm: RunningVm | undefined;
  try {
    vm = findRunningVm(dir, id);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (vm === undefined) throw new UsageError(`no running VM "${id}" in ${dir} (see typervisor ps)`);
  return { vm, json: values["json"] === true };
}

export const CONTROL_EXIT = { EXIT_OK, EXIT_FAILED, EXIT_USAGE };

/** `attest --vm ID [--nonce HEX] [--user-data HEX] [--out FILE]`: a document from a running VM's chip. */
export async function attestVmCommand(argv: string[], io: Io, fetch = fetchAttestation): Promise<number> {
  let values: { vm?: string; nonce?: string; "user-data"?: string; out?: string; "runtime-dir"?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { vm: { type: "string" }, nonce: { type: "string" }, "user-data": { type: "string" }, out: { type: "string" }, "runtime-dir": { type: "string" } },
    }));
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.replace(/\. To specify a positional argument.*$/s, "") : String(e));
  }
  if (values.vm === undefined) throw new UsageError("attest needs --vm ID (or: attest verify DOC --root ROOT.pem)");
  const hex = (name: string, v: string | undefined): Uint8Array | undefined => {
    if (v === undefined) return undefined;
    if (!/^([0-9a-fA-F]{2})*$/.test(v)) throw new UsageError(`--${name} must be hex (pairs of 0-9a-f), got "${v.slice(0, 40)}"`);
    return new Uint8Array(Buffer.from(v, "hex"));
  };
  const nonce = hex("nonce", values.nonce);
  const userData = hex("user-data", values["user-data"]);
  const { vm } = target([values.vm, ...(values["runtime-dir"] !== undefined ? ["--runtime-dir", values["runtime-dir"]] : [])]);
  let doc: Uint8Array;
  try {
    doc = await fetch(vm.socket, { ...(nonce ? { nonce } : {}), ...(userData ? { userData } : {}) });
  } catch (e) {
    io.stderr.write(`typervisor attest: ${vm.id}: ${(e as Error).message}\n`);
    return EXIT_FAILED;
  }
  if (values.out !== undefined) {
    writeFileSync(values.out, doc);
    io.stdout.write(`wrote ${doc.length}-byte attestation document of ${vm.id} to ${values.out}\n`);
  } else {
    io.stdout.write(Buffer.from(doc).toString("hex") + "\n");
  }
  return EXIT_OK;
}

/** `console ID`: attaches the terminal to the VM's console socket (see console.ts). */
export async function consoleCommand(argv: string[], io: Io & { stdin: NodeJS.ReadStream; stdout: NodeJS.WriteStream }): Promise<number> {
  const { vm } = target(argv);
  return attachConsole(consoleSocketPath(runtimeDir(parse(argv, 1).values["runtime-dir"]), vm.id), io);
}
