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
import { GUEST_STALLED, IN_BOX } from "../testing/kvm.js";
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

/** What Linux prints as it leaves its own boot for init (init/main.c run_init_process: "Run %s as init process"). */
const INIT_LINE = /Run \S+ as init process/;
/** Inside the box: how long a booting kernel's console may stay silent before the run counts as stalled. */
export const BOOT_SILENCE_MS = 120_000;

/**
 * Watches a stock guest's console while its kernel boots: from its first byte until Linux hands
 * over to init, it prints every few milliseconds even under nested TCG, so silence for `silenceMs`
 * there is a guest that stalled (what nested SVM under TCG now and then does: testing/kvm.ts
 * GUEST_STALLED). Before the first byte (the VMM still starting) and after init (a test's own
 * program may work quietly for long) nothing is judged.
 */
export class BootWatch {
  private last: number | undefined;
  private booted = false;
  private carry = "";
  constructor(private readonly silenceMs = BOOT_SILENCE_MS) {}

  /** Console output at `now` (ms). */
  output(chunk: string, now: number): void {
    this.last = now;
    if (this.booted) return;
    const text = this.carry + chunk;
    this.booted = INIT_LINE.test(text);
    this.carry = text.slice(-80);
  }

  /** True when the kernel has been booting in silence for longer than silenceMs at `now`. */
  stalled(now: number): boolean {
    return !this.booted && this.last !== undefined && now - this.last > this.silenceMs;
  }
}

/** A BootWatch that acts: what a runner feeds its child's console to, and asks why it stopped it. */
export interface StallGuard {
  /** The child's console output, as it comes. */
  output(chunk: string): void;
  /** The GUEST_STALLED line, once the guard has stopped the child; undefined until then. */
  stalled(): string | undefined;
  /** Stops watching (the child has ended). */
  stop(): void;
}

/**
 * Inside the box only: calls `kill` once a stock guest's kernel has gone silent mid-boot
 * (BootWatch) and keeps the line that says so (GUEST_STALLED) for the test's failure, so that
 * againAfterGuestCrash runs the test again; natively it watches nothing (a stall fails at the
 * test's own timeout).
 */
export function stallGuard(kill: () => void, silenceMs = BOOT_SILENCE_MS): StallGuard {
  const watch = new BootWatch(silenceMs);
  let line: string | undefined;
  const timer = IN_BOX
    ? setInterval(() => {
        if (line !== undefined || !watch.stalled(Date.now())) return;
        line = `${GUEST_STALLED}: its console was silent for ${silenceMs / 1000} s while the kernel booted; stopped`;
        process.stderr.write(`\n${line}\n`);
        kill();
      }, Math.min(1000, silenceMs))
    : undefined;
  return {
    output: (chunk) => watch.output(chunk, Date.now()),
    stalled: () => line,
    stop: () => clearInterval(timer),
  };
}

export interface ConsoleRun {
  /** The guest's console so far (the child's stdout). */
  console(): string;
  /** The child's stderr so far. */
  stderr(): string;
  /** Resolves with the exit status once the child has ended (SIGTERM at `timeoutMs`). */
  status: Promise<number | null>;
  /** True while it runs. */
  running(): boolean;
  /** The command, its stderr and the console's last 4000 characters (and a stall, if the guard stopped it), for assertion messages. */
  tail(): string;
}

/**
 * Runs `argv` (its stdout the guest's console, echoed to this process's stderr so the box shows
 * progress) under stallGuard; SIGTERM at `timeoutMs`, killed when the test ends. `what` names the
 * command in `tail()`.
 */
export function runWithConsole(t: TestContext, argv: readonly string[], opts: { what: string; timeoutMs: number; cwd?: string }): ConsoleRun {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
  let console = "";
  let stderr = "";
  const guard = stallGuard(() => child.kill("SIGKILL"));
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    console += c;
    guard.output(c);
    process.stderr.write(c);
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const status = new Promise<number | null>((res) => child.on("close", (c) => res(c)));
  const timer = setTimeout(() => child.kill("SIGTERM"), opts.timeoutMs);
  void status.then(() => guard.stop());
  t.after(() => {
    clearTimeout(timer);
    guard.stop();
    child.kill("SIGKILL");
  });
  return {
    console: () => console,
    stderr: () => stderr,
    status,
    running: () => child.exitCode === null && child.signalCode === null,
    tail: () => `${guard.stalled() === undefined ? "" : `\n--- ${guard.stalled()}`}\n--- ${opts.what}\n--- stderr ---\n${stderr}--- console (last 4000 chars) ---\n${console.slice(-4000)}`,
  };
}

/**
 * Runs `typervisor <args>` from this checkout with the guest's console on stdout (`--console stdio`
 * is added for `run`; `--config-file` and `--api-sock` put it there themselves); killed when the
 * test ends.
 */
export function runTypervisor(t: TestContext, args: string[], timeoutMs: number): ConsoleRun {
  const all = args[0] === "run" ? [...args, "--console", "stdio"] : args;
  return runWithConsole(t, [process.execPath, join(ROOT, "bin/typervisor.js"), ...all], { what: `typervisor ${all.join(" ")}`, timeoutMs });
}
