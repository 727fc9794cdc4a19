// Where each KVM test runs. A KVM test file declares its tests with `kvmTests(import.meta.url)`
// and says what each one needs:
//   "kvm"      — any /dev/kvm, PVM's included (the probe guest: ring 3 native, ring 0 emulated);
//   "hardware" — hardware-KVM semantics: stock Linux (PVM cannot run a stock kernel's ring 0), or
//                behaviour PVM changes (a triple fault reaches the guest's own #GP handler there;
//                interrupts never reach the probe's ring 3 there).
// A test whose need this host meets runs here, natively. Any other runs in the box (src/box):
// one box boot per `node --test` run executes every such test of every KVM file the run names,
// and each file then reports each of its tests with the outcome the box saw — its own name, its
// own pass, failure (with the box's assertion and stack) or skip (with the box's reason). No KVM
// test is skipped for lack of KVM; one skips only when the box itself cannot start here, saying
// what to install.

import { test, type TestContext, type TestOptions } from "node:test";
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BoxTestResult } from "../box/reporter.js";
import { inBox } from "../bench/guard.js";

export type KvmKind = "hardware" | "pvm" | "none";
export type KvmNeed = "kvm" | "hardware";

/** Set by the box's /box/init (bench/guard.ts BOX_ENV); inside, /dev/kvm is kvm_amd (hardware semantics). */
export const IN_BOX = inBox();
/** Inside the box: the kind of KVM the host that started the box has (it runs the rest itself). */
const OUTER_KIND_ENV = "TYPERVISOR_BOX_HOST_KVM";

/** This host's KVM: none (no /dev/kvm), PVM (/sys/module/kvm_pvm exists), or hardware (kvm_intel, kvm_amd). */
export function kvmKind(dev = "/dev/kvm", pvmModule = "/sys/module/kvm_pvm"): KvmKind {
  if (!existsSync(dev)) return "none";
  return existsSync(pvmModule) ? "pvm" : "hardware";
}

export const HOST_KVM: KvmKind = kvmKind();

/** Whether this process may open /dev/kvm read-write (QEMU's -accel kvm needs that). */
function kvmOpenable(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Whether a host with `kind` runs a test that needs `need` with the semantics it asserts. */
export function meets(kind: KvmKind, need: KvmNeed): boolean {
  return need === "kvm" ? kind !== "none" : kind === "hardware";
}

/** The QEMU accelerator for a QEMU-peer test with `need`: KVM where its semantics hold, else TCG. */
export function qemuAccel(need: KvmNeed, kind: KvmKind = HOST_KVM, usable = kind === HOST_KVM ? kvmOpenable() : true): "kvm" | "tcg" {
  return usable && meets(kind, need) ? "kvm" : "tcg";
}

/** How one KVM test is registered in this process. */
export type Route = "native" | "box-replay" | "in-box-run" | "in-box-elsewhere";

export function route(need: KvmNeed, env: { inBox: boolean; host: KvmKind; outer?: KvmKind }): Route {
  if (!env.inBox) return meets(env.host, need) ? "native" : "box-replay";
  // Inside the box: run what the outer host could not (all of it when the box runs by hand).
  const outer = env.outer ?? "none";
  return meets(outer, need) ? "in-box-elsewhere" : "in-box-run";
}

export interface KvmTestOptions extends Omit<TestOptions, "skip" | "only" | "todo"> {
  need: KvmNeed;
}

type Fn = (t: TestContext) => void | Promise<void>;

// dist/testing/ → repository root.
const ROOT = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
const RUNS = join(ROOT, ".cache", "box", "runs");
/**
 * Time limits of a box run. node --test kills a test file after --test-timeout (30 minutes in
 * `npm test`), and the file that boots the box is one: the whole box run, a second box included,
 * ends before that, so its results are always reported. A box that goes quiet (a hung box
 * kernel, a wedged QEMU) is stopped after BOX_STALL_MS and the files it had not finished run once
 * more in a fresh box; a test file that outlives BOX_FILE_S inside is killed there (its missing
 * tests fail, saying so) and the box goes on with the next file.
 */
const BOX_RUN_BUDGET_MS = 27 * 60_000;
const BOX_STALL_MS = 6 * 60_000;
const BOX_FILE_S = 12 * 60;
/** Box attempts per run: the first, and one fresh box for what a stalled or crashed one left. */
const BOX_ATTEMPTS = 2;
/** The replaying tests wait for the whole box run (all KVM files of the run, under TCG). */
const REPLAY_TIMEOUT_MS = BOX_RUN_BUDGET_MS + 5 * 60_000;
/** The line the box's shell writes on the result port after each file: `BOX-FILE <status> <path>`. */
export const FILE_MARK = "BOX-FILE";
/** The marker the box run looks for to find KVM test files in dist/. */
export const KVM_FILE_MARKER = "kvmTests(import.meta.url)";

/** Whether `path` is a compiled test file that declares KVM tests. */
const isKvmTestFile = (path: string): boolean => path.endsWith(".test.js") && readFileSync(path, "utf8").includes(KVM_FILE_MARKER);

/** Every compiled test file under `dir` that declares KVM tests. */
export function kvmTestFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      const st = statSync(p);
      if (st.isDirectory()) {
        if (n !== "node_modules") walk(p);
      } else if (isKvmTestFile(p)) out.push(p);
    }
  };
  walk(dir);
  return out;
}

interface BoxRunRecord {
  files: string[];
  status: number | null;
  failure?: string;
  unavailable?: string;
  results: BoxTestResult[];
  /** Per file: how its box run ended, when that is worth saying in each of its tests. */
  notes: Record<string, string[]>;
  consoleTail: string;
  wallMs: number;
}

/** The files a result-port text says have ended, with their exit status (124/137: killed by the file budget). */
export function endedFiles(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(new RegExp(`^${FILE_MARK} (\\d+) (.+)$`, "gm"))) out.set(m[2]!, Number(m[1]));
  return out;
}

/** The box shell command that runs `files` one `node --test` each, marking the end of each. */
export function boxShell(files: string[], q: { shQuote: (s: string) => string; fileEnv: string; resultPathEnv: string; resultTty: string; reporter: string }): string {
  return [
    "rc=0",
    ...files.flatMap((f) => [
      [
        `${q.fileEnv}=${q.shQuote(f)} ${q.resultPathEnv}=${q.resultTty} timeout -s KILL ${BOX_FILE_S} node --test --test-only --test-force-exit`,
        `--test-reporter=${q.shQuote(q.reporter)} --test-reporter-destination=/dev/null`,
        `--test-reporter=spec --test-reporter-destination=stdout ${q.shQuote(f)}; r=$?`,
      ].join(" "),
      `echo "${FILE_MARK} $r "${q.shQuote(f)} >> ${q.resultTty}`,
      `[ $r -eq 0 ] || rc=$r`,
    ]),
    "exit $rc",
  ].join("\n");
}

/** The `node --test` run this process belongs to: its pid, start time, cwd and path arguments. */
function orchestrator(): { key: string; cwd: string; paths: string[] } | undefined {
  if (process.env["NODE_TEST_CONTEXT"] === undefined) return undefined; // run directly, not by node --test
  const ppid = process.ppid;
  try {
    const stat = readFileSync(`/proc/${ppid}/stat`, "utf8");
    const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]; // proc(5): field 22, starttime
    const argv = readFileSync(`/proc/${ppid}/cmdline`, "utf8").split("\0").filter(Boolean);
    const cwd = readlinkSync(`/proc/${ppid}/cwd`);
    const i = argv.indexOf("--test");
    const paths = (i < 0 ? [] : argv.slice(i + 1)).filter((a) => !a.startsWith("-") && existsSync(resolve(cwd, a)));
    return { key: `${ppid}-${start}`, cwd, paths };
  } catch {
    return undefined;
  }
}

/** The KVM files a run covers: those under its path arguments (all of cwd when it names none). */
function filesOfRun(run: { cwd: string; paths: string[] }, self: string): string[] {
  const set = new Set<string>([self]);
  const roots = run.paths.length === 0 ? [run.cwd] : run.paths.map((p) => resolve(run.cwd, p));
  for (const r of roots) {
    if (statSync(r).isDirectory()) for (const f of kvmTestFiles(r)) set.add(f);
    else if (isKvmTestFile(r)) set.add(r);
  }
  return [...set].sort();
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function bootBox(files: string[], log: (l: string) => void, signal?: AbortSignal): Promise<BoxRunRecord> {
  const { boxAssets, boxUnavailable, runInBox } = await import("../box/box.js");
  const { parseResults, FILE_ENV, RESULT_PATH_ENV } = await import("../box/reporter.js");
  const { shQuote, RESULT_TTY } = await import("../box/image.js");
  const t0 = Date.now();
  const rec: BoxRunRecord = { files, status: null, results: [], notes: {}, consoleTail: "", wallMs: 0 };
  const why = boxUnavailable();
  if (why !== undefined) return { ...rec, unavailable: why };
  let assets;
  try {
    assets = boxAssets();
  } catch (e) {
    return { ...rec, unavailable: `the box's Debian packages could not be fetched: ${(e as Error).message}` };
  }
  const q = { shQuote, fileEnv: FILE_ENV, resultPathEnv: RESULT_PATH_ENV, resultTty: RESULT_TTY, reporter: join(ROOT, "dist/box/reporter.js") };
  const note = (f: string, n: string): void => void (rec.notes[f] ??= []).push(n);
  let todo = files;
  let worst = 0;
  for (let attempt = 1; attempt <= BOX_ATTEMPTS && todo.length > 0; attempt++) {
    const left = BOX_RUN_BUDGET_MS - (Date.now() - t0);
    if (left < 60_000) break;
    const rel = todo.map((f) => relative(ROOT, f));
    log(`box: ${HOST_KVM === "none" ? "no /dev/kvm here" : `${HOST_KVM} KVM here`}: running ${rel.length} KVM test file(s) in the box${attempt > 1 ? ` (a fresh box, attempt ${attempt})` : ""} (QEMU TCG, kvm_amd inside; slow, timings mean nothing)`);
    let fileStart = Date.now();
    const r = await runInBox({
      assets,
      command: { shell: boxShell(todo, q), cwd: ROOT, env: { [OUTER_KIND_ENV]: HOST_KVM } },
      timeoutMs: left,
      stallMs: BOX_STALL_MS,
      ...(signal === undefined ? {} : { signal }),
      onProgress: (l) => log(`box: ${l}`),
      onResultLine: (l) => {
        for (const res of parseResults(l)) if (res.path.length === 1 && res.outcome !== "skip") log(`box: ${res.outcome} ${relative(ROOT, res.file)} › ${res.path[0]}`);
        for (const [f, st] of endedFiles(l)) {
          log(`box: ${relative(ROOT, f)} ended with status ${st} after ${((Date.now() - fileStart) / 1000).toFixed(0)} s`);
          fileStart = Date.now();
        }
      },
    });
    const ended = endedFiles(r.results);
    const results = parseResults(r.results);
    // A file the box finished (or the last attempt's partial file) keeps this attempt's results.
    const last = r.status !== null || attempt === BOX_ATTEMPTS;
    rec.results.push(...results.filter((x) => ended.has(x.file) || last));
    for (const [f, st] of ended) {
      if (st === 124 || st === 137) note(f, `this file was killed in the box (status ${st}); a file has ${BOX_FILE_S} s there`);
      worst = Math.max(worst, st);
    }
    rec.consoleTail = r.console.slice(-6000);
    if (r.status !== null) {
      rec.status = worst === 0 ? r.status : worst;
      delete rec.failure;
      break;
    }
    rec.failure = r.failure;
    log(`box: ${r.failure}; its console ended with:\n${r.console.slice(-1500)}`);
    const unfinished = todo.filter((f) => !ended.has(f));
    for (const f of unfinished) note(f, `box attempt ${attempt} ended before this file did (${r.failure})${attempt < BOX_ATTEMPTS ? "; it ran again in a fresh box" : ""}`);
    todo = unfinished;
    if (signal?.aborted === true) break;
  }
  rec.wallMs = Date.now() - t0;
  return rec;
}

/** Runs the box once for the whole `node --test` run (the first file to ask does it; the rest wait and read). */
async function sharedBoxRun(self: string): Promise<BoxRunRecord> {
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const run = orchestrator();
  if (run === undefined) return bootBox([self], log);
  mkdirSync(RUNS, { recursive: true });
  for (const n of readdirSync(RUNS)) {
    const p = join(RUNS, n);
    if (Date.now() - statSync(p).mtimeMs > 24 * 3600_000) rmSync(p, { force: true });
  }
  const record = join(RUNS, `${run.key}.json`);
  const lock = join(RUNS, `${run.key}.lock`);
  for (;;) {
    if (existsSync(record)) return JSON.parse(readFileSync(record, "utf8")) as BoxRunRecord;
    let fd: number | undefined;
    try {
      fd = openSync(lock, "wx");
    } catch {
      const holder = Number(readFileSync(lock, "utf8") || "0");
      if (holder > 0 && !alive(holder)) {
        rmSync(lock, { force: true });
        continue;
      }
      await sleep(1000);
      continue;
    }
    writeFileSync(fd, String(process.pid));
    closeSync(fd);
    // node --test ends a file that outlives --test-timeout with SIGTERM: stop the box with it,
    // and leave no lock behind.
    const stop = new AbortController();
    const onTerm = (): void => {
      stop.abort();
      rmSync(lock, { force: true });
      process.exit(143);
    };
    process.once("SIGTERM", onTerm);
    try {
      const rec = await bootBox(filesOfRun(run, self), log, stop.signal);
      writeFileSync(record, JSON.stringify(rec));
      return rec;
    } finally {
      process.off("SIGTERM", onTerm);
      rmSync(lock, { force: true });
    }
  }
}

let boxRun: Promise<BoxRunRecord> | undefined;

/** Replays the box's outcome of `path` (and of its subtests) in `t`. */
async function replay(t: TestContext, rec: BoxRunRecord, file: string, path: string[]): Promise<void> {
  if (rec.unavailable !== undefined) {
    t.skip(`this host cannot run this test natively and ${rec.unavailable}`);
    return;
  }
  const key = JSON.stringify(path);
  const mine = rec.results.filter((r) => r.file === file);
  const own = mine.find((r) => JSON.stringify(r.path) === key);
  if (own === undefined) {
    const why = [...(rec.notes?.[file] ?? []), rec.failure ?? (rec.status === 0 ? "the box's run ended without reporting it" : `the box's test run exited with status ${rec.status}`)].join("; ");
    throw new Error(`the box reported no outcome for this test: ${why}\n--- box console (tail) ---\n${rec.consoleTail}`);
  }
  for (const n of rec.notes?.[file] ?? []) t.diagnostic(`box: ${n}`);
  for (const d of own.diagnostics ?? []) t.diagnostic(`in the box: ${d}`);
  // Subtests first, as the box ran them.
  const children = mine.filter((r) => r.path.length === path.length + 1 && JSON.stringify(r.path.slice(0, path.length)) === key);
  for (const c of children) await t.test(c.path[c.path.length - 1]!, (tc) => replay(tc, rec, file, c.path));
  if (own.outcome === "skip") t.skip(`in the box: ${own.reason ?? "skipped"}`);
  else if (own.outcome === "todo") t.todo(`in the box: ${own.reason ?? "todo"}`);
  else if (own.outcome === "fail" && children.every((c) => c.outcome !== "fail")) {
    const err = new Error(`in the box (kvm_amd under QEMU TCG): ${own.error?.message ?? "failed"}`);
    if (own.error?.stack !== undefined) err.stack = `${err.message}\n--- the box's stack ---\n${own.error.stack}`;
    throw err;
  } else if (own.outcome === "fail") throw new Error("in the box: a subtest failed");
}

/**
 * What a test's failure says when, inside the box, its stock guest's console went silent while the
 * kernel booted (image/testing.ts BootWatch): treated as a crash exit is (againAfterGuestCrash).
 */
export const GUEST_STALLED = "the guest stalled under nested TCG";

/** What a stock guest's crash exit (or a stall, GUEST_STALLED) looks like in a test's failure (the CLI's report, or the exit as JSON). */
const GUEST_CRASH = new RegExp(`KVM_EXIT_SHUTDOWN|guest crashed on vCPU|"kind":\\s*"crash"|${GUEST_STALLED}`);

/**
 * How many times a stock-Linux test whose guest crashed or stalled runs again in the box
 * (againAfterGuestCrash). 3 since 2026-12-07: that day, under QEMU 10, the vsock test's guest
 * crashed three times in a row in one full run and the SDK's Debian test failed on its third
 * attempt in another; the vsock test alone, 9 runs in two boxes, met 2 crash exits, 2 stalls
 * and 1 other failure, while the box's own kernel panicked in the middle of a third box (with the
 * code from before that day's changes as well).
 */
export const GUEST_CRASH_RETRIES = 3;

/**
 * Inside the box only, for stock-Linux tests: nested SVM under QEMU 7.2's TCG now and then ends
 * a Debian guest in a crash exit at a random point (seen in about one Debian boot in five to ten:
 * early in the kernel's boot, right after init started, bringing up the 4th vCPU; once twice in a
 * row in one test of a long box run, the same test then passing four times alone), which no boot on
 * a KVM host shows (QEMU 10's less often: box.ts BOX_QEMU_MAJOR). Under both, a Debian guest's
 * kernel also now and then goes silent early in its boot (the vsock test's twice in a row in one CI
 * run under 7.2; the vsock and starter-image tests' in one full run under 10.0): a test whose runner
 * stopped such a guest (GUEST_STALLED) is treated alike. A test that fails that way runs again, up
 * to GUEST_CRASH_RETRIES times, and says so each time with the failure's line; any other failure,
 * or one crash more, fails it. Natively nothing is retried.
 */
export function againAfterGuestCrash(fn: Fn, retries = GUEST_CRASH_RETRIES): Fn {
  return async (t) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await fn(t);
        return;
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        if (attempt === retries || !GUEST_CRASH.test(message)) throw e;
        const line = message.split("\n").find((l) => GUEST_CRASH.test(l))?.trim().slice(0, 200);
        const what = message.includes(GUEST_STALLED) ? "stalled" : "crashed";
        t.diagnostic(`the guest ${what} under nested SVM in QEMU TCG (${line}); the test runs again (${attempt + 1} of ${retries}, in the box only)`);
      }
    }
  };
}

/**
 * `kvmTests(import.meta.url)` → the `kvmTest(name, { need, ...options }, fn)` of that file.
 * The marker string above must appear as written: the box finds KVM files by it.
 */
export function kvmTests(fileUrl: string): (name: string, options: KvmTestOptions, fn: Fn) => void {
  const self = fileURLToPath(fileUrl);
  return (name, options, fn) => {
    const { need, ...opts } = options;
    const r = route(need, { inBox: IN_BOX, host: HOST_KVM, outer: (process.env[OUTER_KIND_ENV] as KvmKind | undefined) ?? undefined });
    switch (r) {
      case "native":
        test(name, opts, fn);
        return;
      case "in-box-run":
        test(name, { ...opts, only: true }, need === "hardware" ? againAfterGuestCrash(fn) : fn);
        return;
      case "in-box-elsewhere":
        test(name, opts, fn); // not `only`: the box's --test-only run leaves it to the outer host
        return;
      case "box-replay":
        test(name, { timeout: REPLAY_TIMEOUT_MS }, async (t) => {
          boxRun ??= sharedBoxRun(self);
          await replay(t, await boxRun, self, [name]);
        });
    }
  };
}
