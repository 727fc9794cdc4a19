// The arithmetic and number formatting that bench:start and bench:density share: the median with
// its range over runs, ratios that say when they cannot be taken, KiB to MiB, and the readers of
// the two places resident memory is taken from (GNU time's %M, /proc/self/status).

/** A figure over runs: the median and the smallest and largest value. */
export interface Range {
  median: number;
  min: number;
  max: number;
  n: number;
}

/**
 * The median (the mean of the two middle values for an even count), min and max of `xs`. Throws
 * for no values or a value that is not a finite number: a figure is never made up.
 */
export function summarize(xs: readonly number[]): Range {
  if (xs.length === 0) throw new RangeError("summarize: no values");
  const bad = xs.find((x) => !Number.isFinite(x));
  if (bad !== undefined) throw new RangeError(`summarize: ${bad} is not a finite number`);
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

/**
 * a ÷ b for two figures that are amounts (times, sizes), or null when it means nothing: either is
 * not finite, b is not above 0, or a is below 0 (a difference that noise made negative).
 */
export function ratio(a: number, b: number): number | null {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b <= 0 || a < 0) return null;
  return a / b;
}

/** A number rounded to `digits` decimals, as the JSON line carries it (null stays null). */
export function round(x: number | null, digits: number): number | null {
  if (x === null) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** "12.3 (11.0–14.2)": a range's median with its min–max. */
export function fmtRange(r: Range, digits: number): string {
  return `${r.median.toFixed(digits)} (${r.min.toFixed(digits)}–${r.max.toFixed(digits)})`;
}

/** A ratio for the table: "0.85", or "—" when there is none. */
export function fmtRatio(x: number | null, digits = 2): string {
  return x === null ? "—" : x.toFixed(digits);
}

/** The range's figures rounded, for the JSON line. */
export function rangeJson(r: Range, digits: number): { median: number; min: number; max: number } {
  return { median: round(r.median, digits)!, min: round(r.min, digits)!, max: round(r.max, digits)! };
}

export const KIB_PER_MIB = 1024;

/**
 * The maximum resident set size in KiB from what `/usr/bin/time -f %M -o FILE` wrote: its last
 * line (GNU time puts "Command exited with non-zero status N" or "Command terminated by signal N"
 * above the format's line when the command did not exit 0). Throws when there is no such number.
 */
export function parseGnuTimeMaxRss(text: string): number {
  const last = text.trim().split("\n").at(-1)?.trim() ?? "";
  if (!/^\d+$/.test(last)) throw new Error(`GNU time wrote no maximum RSS (%M) line: ${JSON.stringify(text.slice(-200))}`);
  const kib = Number(last);
  if (kib === 0) throw new Error("GNU time reported a maximum RSS of 0 KiB: this kernel or time(1) does not report ru_maxrss");
  return kib;
}

/** The memory lines of /proc/<pid>/status (proc(5)), in KiB. */
export interface ProcMemory {
  /** Resident set size now. */
  vmRss: number;
  /** Its high-water mark. */
  vmHwm: number;
  /** Anonymous, file-backed and shared-memory (memfd: guest RAM) resident pages. */
  rssAnon: number;
  rssFile: number;
  rssShmem: number;
}

/** Reads ProcMemory from the text of /proc/<pid>/status; throws when a line is missing. */
export function parseProcStatus(text: string): ProcMemory {
  const kib = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(text);
    if (m === null) throw new Error(`/proc status has no ${key} line`);
    return Number(m[1]);
  };
  return { vmRss: kib("VmRSS"), vmHwm: kib("VmHWM"), rssAnon: kib("RssAnon"), rssFile: kib("RssFile"), rssShmem: kib("RssShmem") };
}

/** Rows of cells as aligned text: the first column left-aligned, the others right-aligned, two spaces apart. */
export function alignTable(rows: readonly (readonly string[])[]): string {
  const cols = Math.max(0, ...rows.map((r) => r.length));
  const widths = Array.from({ length: cols }, (_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ").trimEnd()).join("\n") + "\n";
}
