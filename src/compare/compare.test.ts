// The compare runner and report generator on SYNTHETIC results (testing.ts): the arithmetic,
// the image handling, the files written, and the HTML's structure. No VM runs here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCompare, spread, benchCmdline, BENCH_TEST, makeImage } from "./run.js";
import { countCodeLines, PATH_ANATOMY, countPathLines } from "./loc.js";
import { renderHtml, terminalTable, writeReport, metricRows } from "./report.js";
import { syntheticBootProbe, SYNTHETIC_LABEL } from "./testing.js";

test("spread: median, min, max of odd and even counts; NaN dropped", () => {
  assert.deepEqual(spread([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
  assert.deepEqual(spread([4, 1, 2, 3]), { median: 2.5, min: 1, max: 4, n: 4 });
  assert.equal(spread([NaN]).n, 0);
});

test("makeImage writes the whole image full of data: no holes, no zero pages, no two MiB alike", () => {
  const size = (3 << 20) + 4096; // a part-chunk at the end
  const image = makeImage(tmpdir(), size);
  try {
    const st = statSync(image.path);
    assert.equal(st.size, size);
    assert.ok(st.blocks * 512 >= size, `${st.blocks} blocks of 512 bytes for ${size} bytes: the image has holes`);
    const bytes = readFileSync(image.path);
    const pages = new Set<string>();
    for (let at = 0; at < size; at += 4096) {
      const page = bytes.subarray(at, at + 4096);
      assert.ok(page.some((b) => b !== 0), `the page at ${at} is all zeros`);
      if (at % (1 << 20) === 0) pages.add(page.toString("hex"));
    }
    assert.equal(pages.size, 4, "the first page of each MiB differs from the others");
  } finally {
    image.remove();
  }
});

test("makeImage that cannot write names the caller's size knob and leaves nothing behind", () => {
  const dir = join(tmpdir(), "tv-no-such-dir", "images");
  assert.throws(
    () => makeImage(dir, 1 << 20, "BENCH_BLK_MIB"),
    (e: unknown) => e instanceof Error && e.name === "CompareImageError" && e.message === `cannot write the 1 MiB image in ${dir}: no such directory (a smaller BENCH_BLK_MIB, or more room there)`,
  );
  assert.ok(!existsSync(dir));
});

test("countCodeLines skips blank and comment-only lines", () => {
  assert.equal(countCodeLines("// a\n\nconst x = 1; // c\n/* b\n c */\n/** d */\nfoo();\n  /* e */ bar();\n"), 3);
});

test("every source file named on an I/O path exists and has code", () => {
  const root = new URL("../../", import.meta.url).pathname;
  for (const a of Object.values(PATH_ANATOMY)) {
    const c = countPathLines(root, a);
    for (const p of c.perProcess) for (const f of p.files) assert.ok(f.lines !== null && f.lines > 0, `${a.path}: ${f.file}`);
    assert.ok(c.total > 100);
  }
});

test("runCompare on synthetic results: per-path figures, median of N with min-max, exits net of the baseline boot", async () => {
  const { bootProbe, calls } = syntheticBootProbe();
  const r = await runCompare({ bootProbe, sizeBytes: 8 << 20, runs: 3, randOps: { emulated: 8, dom0: 64, card: 64 }, seqOps: { emulated: 2, dom0: 4, card: 4 } });
  r.synthetic = SYNTHETIC_LABEL;
  assert.deepEqual(r.paths.map((p) => p.path), ["emulated", "dom0", "card"]);
  assert.equal(calls.length, 3 * 4, "one baseline + 3 runs per path");
  const images = new Set(calls.map((c) => c.image));
  assert.equal(images.size, 1, "the same image for every path");
  assert.ok(!existsSync([...images][0]!), "the image is removed afterwards");
  assert.ok(calls[1]!.cmdline.includes("probe.run=ata-bench") && calls[1]!.cmdline.includes(`probe.blk.bytes=${8 << 20}`));
  assert.equal(benchCmdline("dom0", 1, 2, 3), `probe.run=${BENCH_TEST.dom0} probe.blk.bytes=1 probe.blk.bench.n=2 probe.blk.seq.n=3 probe.blk.warmup=20000`);
  const dom0 = r.paths[1]!;
  const rr = dom0.modes.find((m) => m.mode === "randread" && m.qd === 1)!;
  // invented: 60 µs x (1 + 0.05k) for k = 1..3 -> median 66 µs -> 1/66e-6 IOPS
  assert.ok(Math.abs(rr.iops.median - 1e6 / 66) < 1, `${rr.iops.median}`);
  assert.ok(rr.iops.min < rr.iops.median && rr.iops.median < rr.iops.max);
  assert.equal(rr.latencySource, "samples");
  assert.ok(Math.abs(rr.p50us!.median - 66) < 0.01);
  assert.equal(dom0.exitsPerIo.median, 3, "exits net of the baseline, per op");
  assert.equal(r.paths[0]!.exitsPerIo.median, 2100);
  assert.ok(Math.abs(dom0.cpuSecondsPerGiB.dom0!.median - 1.1 * 1.1) < 1e-9);
  assert.equal(dom0.cpuSecondsPerGiB.card, null);
  const card = r.paths[2]!;
  assert.equal(card.modes.find((m) => m.mode === "randread" && m.qd === 1)!.latencySource, "samples", "blk-bench samples each request too");
  assert.equal(card.copiesPerRequest, 1);
  assert.equal(dom0.copiesPerRequest, 2);
  assert.ok(dom0.privileged.processes.length === 2 && dom0.privileged.totalLines > card.privileged.processes.length);
  assert.deepEqual(r.paths.flatMap((p) => p.errors), []);
});

test("runCompare reports a path whose guest failed instead of throwing", async () => {
  const r = await runCompare({
    bootProbe: async (_p, cmdline) => ({ lines: cmdline === "probe.run=boot" ? "" : "PROBE ata-bench error=no_ata ok=0\n", hostCpuSeconds: { vmm: 0 }, exits: 0 }),
    paths: ["emulated"],
    runs: 1,
    sizeBytes: 1 << 20,
    tscHz: 1e9,
  });
  assert.match(r.paths[0]!.errors.join("\n"), /error=no_ata/);
  assert.match(terminalTable(r), /emulated: PROBE ata-bench error=no_ata/);
});

test("report: terminal table, report.json and a self-contained report.html with SVG charts, labelled synthetic", async (t) => {
  const { bootProbe } = syntheticBootProbe();
  const r = await runCompare({ bootProbe, sizeBytes: 4 << 20, runs: 2, randOps: { emulated: 4, dom0: 16, card: 16 } });
  r.synthetic = SYNTHETIC_LABEL;
  const table = terminalTable(r);
  assert.match(table, /^SYNTHETIC RESULTS/);
  assert.match(table, /4K rand read QD1, IOPS/);
  assert.match(table, /n\/a \(no queue\)/, "the ATA disk has no QD32");
  assert.equal(metricRows(r).every((row) => row.length === 4), true);
  const dir = mkdtempSync(join(tmpdir(), "compare-report-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = writeReport(r, dir);
  const json = JSON.parse(readFileSync(out.json, "utf8"));
  assert.equal(json.synthetic, SYNTHETIC_LABEL);
  assert.equal(json.paths.length, 3);
  const html = readFileSync(out.html, "utf8");
  assert.match(renderHtml(r), /id="metrics-table"/);
  assert.match(html, /id="synthetic-banner"/);
  assert.equal((html.match(/<svg /g) ?? []).length, 5, "five charts");
  assert.ok(!/<script/i.test(html), "no scripts");
  assert.ok(!/(src|href)="https?:/i.test(html), "nothing fetched from the network");
  assert.match(html, /CPU 오버헤드/);
  assert.match(html, /PVM/);
  assert.match(html, /id="seed-table"/);
});
