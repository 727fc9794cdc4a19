// Test helpers for the KVM tests that boot the starter image (image-kvm, net-kvm, vsock-kvm): build
// it once per test into a temporary folder, and run `typervisor` as a user does, with the guest's
// console collected and mirrored to stderr (so the box, which stops a run that goes quiet, sees
// progress). Not shipped (package.json leaves testing modules out).

import type { TestContext } from "node:test";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEBIAN_CACHE, failureReason } from "../testing/debian.js";
import { buildImage } from "./build.js";
import { findTool } from "./rootfs.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/**
 * A fresh starter image in a new temporary folder (removed after the test), or undefined when the
 * test was skipped for a reason the user can fix (no e2fsprogs, Debian's packages unreachable).
 * The folder is under /tmp with a short name: Unix socket paths in it stay under 107 bytes.
 */
export function starterImage(t: TestContext, prefix: string): { dir: string; out: string } | undefined {
  if (findTool("mke2fs") === undefined || findTool("debugfs") === undefined) {
    t.skip("mke2fs and debugfs are missing: install Debian's e2fsprogs");
    return undefined;
  }
  const dir = mkdtempSync(join(existsSync("/tmp") ? "/tmp" : tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, "image");
  try {
    buildImage({ outDir: out, cacheDir: DEBIAN_CACHE });
  } catch (e) {
    if ((e as Error).name === "DebianFetchError") {
      t.skip(`Debian's packages could not be fetched: ${failureReason(e)}`);
      return undefined;
    }
    throw e;
  }
  return { dir, out };
}

export interface TypervisorRun {
  /** The guest's console so far (`--console stdio`). */
  console(): string;
  /** Resolves with the exit status once typervisor has ended (SIGTERM at `timeoutMs`). */
  status: Promise<number | null>;
  /** True while it runs. */
  running(): boolean;
  /** The command, its stderr and the console's last 4000 characters, for assertion messages. */
  tail(): string;
}

/**
 * Runs `typervisor <args>` from this checkout with the guest's console on stdout (`--console stdio`
 * is added for `run`; `--config-file` and `--api-sock` put it there themselves); killed when the
 * test ends.
 */
export function runTypervisor(t: TestContext, args: string[], timeoutMs: number): TypervisorRun {
  const all = args[0] === "run" ? [...args, "--console", "stdio"] : args;
  const child = spawn(process.execPath, [join(ROOT, "bin/typervisor.js"), ...all], { stdio: ["ignore", "pipe", "pipe"] });
  let console = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    console += c;
    process.stderr.write(c);
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const status = new Promise<number | null>((res) => child.on("close", (c) => res(c)));
  const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
  t.after(() => {
    clearTimeout(timer);
    child.kill("SIGKILL");
  });
  return {
    console: () => console,
    status,
    running: () => child.exitCode === null && child.signalCode === null,
    tail: () => `\n--- typervisor ${all.join(" ")}\n--- stderr ---\n${stderr}--- console (last 4000 chars) ---\n${console.slice(-4000)}`,
  };
}
