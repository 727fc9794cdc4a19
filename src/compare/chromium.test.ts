// Opens a generated report.html (SYNTHETIC results) in headless Chromium and checks that its
// tables and SVG charts render. Needs Debian's chromium at /usr/bin/chromium (apt-get install
// chromium) and the playwright-core devDependency; skips otherwise. Not part of CI's needs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { runCompare } from "./run.js";
import { writeReport } from "./report.js";
import { syntheticBootProbe, SYNTHETIC_LABEL } from "./testing.js";

const CHROMIUM = "/usr/bin/chromium";

test("report.html in headless Chromium: both tables filled, five SVG charts with bars, no network", { timeout: 60_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} not installed (apt-get install -y chromium)`);
  let chromium: typeof import("playwright-core").chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch {
    return t.skip("playwright-core is not installed (a devDependency: run npm ci)");
  }
  const { bootProbe } = syntheticBootProbe();
  const r = await runCompare({ bootProbe, sizeBytes: 4 << 20, runs: 2, randOps: { emulated: 4, dom0: 16, card: 16 } });
  r.synthetic = SYNTHETIC_LABEL;
  const dir = mkdtempSync(join(tmpdir(), "compare-chromium-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { html } = writeReport(r, dir);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const requests: string[] = [];
  page.on("request", (req) => requests.push(req.url()));
  await page.goto(pathToFileURL(html).href);
  assert.deepEqual(requests.filter((u) => !u.startsWith("file:")), [], "offline: no other requests");
  assert.equal(await page.locator("#seed-table tbody tr").count(), 7);
  assert.equal(await page.locator("#metrics-table tbody tr").count(), 15);
  const cells = await page.locator("#metrics-table tbody td").allTextContents();
  assert.ok(cells.filter((c) => /\d/.test(c)).length > 30, "measured cells hold numbers");
  assert.ok(await page.locator("#synthetic-banner").isVisible());
  for (const id of ["chart-iops", "chart-latency", "chart-throughput", "chart-cpu", "chart-exits"]) {
    const svg = page.locator(`#${id} svg`);
    assert.equal(await svg.count(), 1, id);
    const box = await svg.boundingBox();
    assert.ok(box && box.width > 300 && box.height > 200, `${id} is laid out`);
    assert.ok((await page.locator(`#${id} svg path`).count()) >= 3, `${id} has drawn shapes`);
  }
  const axisText = await page.locator("#chart-iops svg text").allTextContents();
  assert.ok(axisText.some((x) => x.includes("dom0")), "category labels rendered");
});
