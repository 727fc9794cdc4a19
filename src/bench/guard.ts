// What every benchmark entry point (src/bench/*.ts, `typervisor compare`) does before any work:
// answer --help, refuse arguments it does not take, and refuse to run inside "the box" (src/box: a
// QEMU TCG virtual machine for tests, whose init exports TYPERVISOR_BOX=1). The box has a working
// /dev/kvm — TCG emulates AMD-V — so the KVM checks pass there, but every instruction is translated:
// figures measured in it mean nothing, and a benchmark says so and exits 2 rather than print them.
// Progress goes to stderr, one line at a time, so that stdout keeps the table and the JSON line.

/** The variable the box's init exports (src/box/image.ts). */
export const BOX_ENV = "TYPERVISOR_BOX";
/** A benchmark that cannot measure here (no KVM, no peer, inside the box) exits with this status. */
export const EXIT_CANNOT_MEASURE = 2;

/** Whether this process runs inside the box: TYPERVISOR_BOX set to anything but "" or "0". */
export function inBox(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env[BOX_ENV];
  return v !== undefined && v !== "" && v !== "0";
}

/**
 * The one line a benchmark prints when it refuses to run in the box, or null outside it.
 * `what` says what it measures ("KVM exit rates"); `runOn` where to run it instead.
 */
export function boxRefusal(benchName: string, what: string, runOn = "a host with KVM", env: NodeJS.ProcessEnv = process.env): string | null {
  if (!inBox(env)) return null;
  return `${benchName} measures ${what}; inside the box (QEMU TCG) its figures mean nothing — run it on ${runOn}`;
}

/** In the box: prints boxRefusal's line on stderr and exits 2. Elsewhere it returns. */
export function refuseInBox(benchName: string, what: string, runOn?: string): void {
  const line = boxRefusal(benchName, what, runOn);
  if (line === null) return;
  process.stderr.write(`${line}\n`);
  process.exit(EXIT_CANNOT_MEASURE);
}

export interface BenchEntry {
  /** As npm names it: "bench:exits". */
  name: string;
  /** What it measures, for the refusal line. */
  what: string;
  /** Where to run it instead of the box (default "a host with KVM"). */
  runOn?: string;
  /** The --help text. */
  help: string;
  /**
   * Whether it takes --memory-only (or BENCH_MEMORY_ONLY=1): print the memory figures alone. Those
   * are real inside the box (resident memory is not emulated), so there it runs with it.
   */
  memoryOnly?: boolean;
}

/** The flag (and the variable) that asks a bench with `memoryOnly` for its memory figures alone. */
export const MEMORY_ONLY_FLAG = "--memory-only";
export const MEMORY_ONLY_ENV = "BENCH_MEMORY_ONLY";

/** What the entry checks decided: print the help, refuse (a line on stderr, exit 2), or run. */
export type EntryDecision =
  | { action: "help"; text: string }
  | { action: "refuse"; line: string }
  | { action: "run"; memoryOnly: boolean };

/**
 * The entry checks as a pure decision, in order: --help (or -h) anywhere; then any argument it
 * does not take (all of them, or all but --memory-only for a `memoryOnly` bench); then the box,
 * which refuses unless the bench takes --memory-only and was given it (flag, or
 * BENCH_MEMORY_ONLY set to anything but "" or "0").
 */
export function entryDecision(entry: BenchEntry, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): EntryDecision {
  if (argv.includes("--help") || argv.includes("-h")) return { action: "help", text: entry.help.endsWith("\n") ? entry.help : `${entry.help}\n` };
  const unknown = argv.find((a) => !(entry.memoryOnly === true && a === MEMORY_ONLY_FLAG));
  if (unknown !== undefined) return { action: "refuse", line: `${entry.name}: unknown argument "${unknown}" (settings come from the environment; see --help)` };
  const v = env[MEMORY_ONLY_ENV];
  const memoryOnly = entry.memoryOnly === true && (argv.includes(MEMORY_ONLY_FLAG) || (v !== undefined && v !== "" && v !== "0"));
  const refusal = memoryOnly ? null : boxRefusal(entry.name, entry.what, entry.runOn, env);
  if (refusal !== null) return { action: "refuse", line: entry.memoryOnly === true ? `${refusal} (${MEMORY_ONLY_FLAG} prints its memory figures alone: those are real in the box)` : refusal };
  return { action: "run", memoryOnly };
}

/**
 * The entry checks (entryDecision), acted on: the help goes to stdout, exit 0; a refusal is one line
 * on stderr, exit 2. Returns a progress function: `progress("pio: typervisor run 1/3")` writes
 * "bench:exits: pio: typervisor run 1/3" on stderr.
 */
export function benchEntry(entry: BenchEntry, argv: readonly string[] = process.argv.slice(2)): (line: string) => void {
  return benchEntryOptions(entry, argv).progress;
}

/** benchEntry, also saying whether the run is --memory-only (for a bench that takes it). */
export function benchEntryOptions(entry: BenchEntry, argv: readonly string[] = process.argv.slice(2)): { progress: (line: string) => void; memoryOnly: boolean } {
  const d = entryDecision(entry, argv);
  if (d.action === "help") {
    process.stdout.write(d.text);
    process.exit(0);
  }
  if (d.action === "refuse") {
    process.stderr.write(`${d.line}\n`);
    process.exit(EXIT_CANNOT_MEASURE);
  }
  return { progress: progress(entry.name), memoryOnly: d.memoryOnly };
}

/** A progress line writer for `name`, on stderr. */
export function progress(name: string): (line: string) => void {
  return (line) => {
    process.stderr.write(`${name}: ${line}\n`);
  };
}

/** Seconds since `t0` (process.hrtime.bigint()), for progress lines: "3.2 s". */
export function elapsed(t0: bigint): string {
  return `${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s`;
}

/**
 * A whole-number setting from the environment: `def` when unset or empty; a string naming the
 * variable and what it takes when the value is not a whole number in [min, max] (the bench prints
 * it and exits 2 rather than measure something else than asked).
 */
export function envInt(name: string, def: number, min: number, max: number, env: NodeJS.ProcessEnv = process.env): number | string {
  const v = env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) return `${name} must be a whole number from ${min} to ${max}, got "${v}"`;
  return n;
}
