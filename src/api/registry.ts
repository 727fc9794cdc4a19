// The runtime directory of running microVMs, for `typervisor ps/stop/pause/resume/console`: one
// JSON file per VM (`<id>.json`), written atomically (temporary file + rename) by the VM's own
// process and removed when it ends. Listing prunes the files of processes that no longer exist,
// so a VM killed by SIGKILL disappears at the next `ps`.

import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RunningVm {
  id: string;
  pid: number;
  /** The API socket path. */
  socket: string;
  vcpus: number;
  memMiB: number;
  /** Milliseconds since the epoch. */
  startedAt: number;
}

/**
 * `/run/typervisor` for root, `$XDG_RUNTIME_DIR/typervisor` for a user session that has one, and
 * `<tmpdir>/typervisor-<uid>` otherwise.
 */
export function defaultRuntimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return "/run/typervisor";
  if (env["XDG_RUNTIME_DIR"]) return join(env["XDG_RUNTIME_DIR"], "typervisor");
  return join(tmpdir(), `typervisor-${process.getuid?.() ?? "user"}`);
}

const ID = /^[A-Za-z0-9_-]{1,64}$/;

function checkId(id: string): void {
  if (!ID.test(id)) throw new Error(`a VM id must be 1 to 64 letters, digits, '_' or '-', got "${id.slice(0, 64)}"`);
}

/** Records a running VM; returns the function that removes the record (call it on exit). */
export function registerRunningVm(dir: string, vm: RunningVm): () => void {
  checkId(vm.id);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${vm.id}.json`);
  const tmp = join(dir, `.${vm.id}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(vm) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
  return () => {
    try {
      const cur = JSON.parse(readFileSync(file, "utf8")) as RunningVm;
      // Another process may have taken the id since: only remove our own record.
      if (cur.pid === vm.pid) unlinkSync(file);
    } catch {
      // Already gone.
    }
  };
}

/** Whether process `pid` exists (kill(pid, 0)). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function isRunningVm(v: unknown): v is RunningVm {
  const o = v as Record<string, unknown>;
  return (
    typeof o === "object" && o !== null && typeof o["id"] === "string" && Number.isInteger(o["pid"]) && (o["pid"] as number) > 0 &&
    typeof o["socket"] === "string" && typeof o["vcpus"] === "number" && typeof o["memMiB"] === "number" && typeof o["startedAt"] === "number"
  );
}

/** The VMs recorded in `dir` whose process still runs, oldest first; dead and unreadable records are removed. */
export function listRunningVms(dir: string): RunningVm[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: RunningVm[] = [];
  for (const name of names) {
    if (!name.endsWith(".json") || name.startsWith(".")) continue;
    const file = join(dir, name);
    let rec: unknown;
    try {
      rec = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      rec = undefined;
    }
    if (isRunningVm(rec) && processAlive(rec.pid)) out.push(rec);
    else {
      try {
        unlinkSync(file);
      } catch {
        // Someone else pruned it.
      }
    }
  }
  return out.sort((a, b) => a.startedAt - b.startedAt);
}

/** The record of one VM by id, if it runs. */
export function findRunningVm(dir: string, id: string): RunningVm | undefined {
  return listRunningVms(dir).find((v) => v.id === id);
}
