// The shared arithmetic of bench:start and bench:density (stats.ts): medians with their range,
// ratios that refuse to mean nothing, and the two readers of resident memory. No VM needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { alignTable, fmtRange, fmtRatio, parseGnuTimeMaxRss, parseProcStatus, rangeJson, ratio, round, summarize } from "./stats.js";

test("summarize: the middle value for an odd count, the mean of the two middle ones for an even count; min and max; input untouched", () => {
  const xs = [5, 1, 3];
  assert.deepEqual(summarize(xs), { median: 3, min: 1, max: 5, n: 3 });
  assert.deepEqual(xs, [5, 1, 3]);
  assert.deepEqual(summarize([4, 1, 3, 10]), { median: 3.5, min: 1, max: 10, n: 4 });
  assert.deepEqual(summarize([7]), { median: 7, min: 7, max: 7, n: 1 });
  // Sorted as numbers, not as strings (10 < 9 as text).
  assert.equal(summarize([10, 9, 100]).median, 10);
});

test("summarize refuses no values and values that are not finite numbers: a figure is never made up", () => {
  assert.throws(() => summarize([]), /no values/);
  assert.throws(() => summarize([1, NaN]), /NaN is not a finite number/);
  assert.throws(() => summarize([1, Infinity]), /Infinity is not a finite number/);
});

test("ratio: a ÷ b for amounts; null for a zero or negative divisor, a negative dividend or a value that is not finite", () => {
  assert.equal(ratio(3, 2), 1.5);
  assert.equal(ratio(0, 2), 0);
  assert.equal(ratio(1, 0), null);
  assert.equal(ratio(1, -0.08), null);
  assert.equal(ratio(-1, 2), null);
  assert.equal(ratio(NaN, 2), null);
  assert.equal(ratio(2, Infinity), null);
  assert.equal(fmtRatio(null), "—");
  assert.equal(fmtRatio(2 / 3), "0.67");
  assert.equal(fmtRatio(2 / 3, 3), "0.667");
});

test("round, fmtRange and rangeJson: fixed decimals for the table, rounded numbers for the JSON line", () => {
  assert.equal(round(1.23456, 2), 1.23);
  assert.equal(round(null, 2), null);
  const r = summarize([12.34, 11.0, 14.26]);
  assert.equal(fmtRange(r, 1), "12.3 (11.0–14.3)");
  assert.deepEqual(rangeJson(r, 1), { median: 12.3, min: 11, max: 14.3 });
});

test("parseGnuTimeMaxRss reads %M from the last line, under GNU time's 'Command exited' line when there is one", () => {
  assert.equal(parseGnuTimeMaxRss("34816\n"), 34816);
  assert.equal(parseGnuTimeMaxRss("Command exited with non-zero status 1\n35120\n"), 35120);
  assert.equal(parseGnuTimeMaxRss("Command terminated by signal 9\n1460"), 1460);
  assert.throws(() => parseGnuTimeMaxRss(""), /no maximum RSS/);
  assert.throws(() => parseGnuTimeMaxRss("Command exited with non-zero status 1\n"), /no maximum RSS/);
  assert.throws(() => parseGnuTimeMaxRss("12.5\n"), /no maximum RSS/);
  assert.throws(() => parseGnuTimeMaxRss("0\n"), /does not report ru_maxrss/);
});

test("parseProcStatus reads the resident-memory lines of /proc/<pid>/status in KiB, and names a missing one", () => {
  const text = ["Name:\tnode", "VmHWM:\t  180000 kB", "VmRSS:\t  170000 kB", "RssAnon:\t  150000 kB", "RssFile:\t   19000 kB", "RssShmem:\t    1000 kB", "Threads:\t12"].join("\n");
  assert.deepEqual(parseProcStatus(text), { vmRss: 170000, vmHwm: 180000, rssAnon: 150000, rssFile: 19000, rssShmem: 1000 });
  assert.throws(() => parseProcStatus(text.replace(/RssShmem.*\n/, "")), /no RssShmem line/);
});

test("parseProcStatus reads this process's own /proc/self/status (Linux)", { skip: process.platform !== "linux" ? "needs Linux's /proc" : false }, async () => {
  const { readFileSync } = await import("node:fs");
  const m = parseProcStatus(readFileSync("/proc/self/status", "utf8"));
  assert.ok(m.vmRss > 0 && m.vmHwm >= m.vmRss, JSON.stringify(m));
  assert.equal(m.rssAnon + m.rssFile + m.rssShmem, m.vmRss);
});

test("alignTable: the first column left-aligned, the others right-aligned, two spaces apart, no trailing blanks", () => {
  assert.equal(alignTable([["", "a", "bb"], ["long label", "1", "22"], ["x", "333", ""]]), "              a  bb\nlong label    1  22\nx           333\n");
});
