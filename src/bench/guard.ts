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
}

/**
 * The entry checks, in order: --help (or -h) prints the help on stdout and exits 0; any other
 * argument is refused (exit 2: the benchmarks take their settings from the environment); inside the
 * box, refuseInBox. Returns a progress function: `progress("pio: typervisor run 1/3")` writes
 * "bench:exits: pio: typervisor run 1/3" on stderr.
 */
export function benchEntry(entry: BenchEntry, argv: readonly string[] = process.argv.slice(2)): (line: string) => void {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(entry.help.endsWith("\n") ? entry.help : `${entry.help}\n`);
    process.exit(0);
  }
  if (argv.length > 0) {
    process.stderr.write(`${entry.name}: unknown argument "${argv[0]}" (settings come from the environment; see --help)\n`);
    process.exit(EXIT_CANNOT_MEASURE);
  }
  refuseInBox(entry.name, entry.what, entry.runOn);
  return progress(entry.name);
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
