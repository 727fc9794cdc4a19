import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { SharedLock } from "./shared-state.js";

test("SharedLock: threads that read-modify-write one word under the lock lose no update, contended or not", async () => {
  const sab = new SharedArrayBuffer(8);
  const counter = new Int32Array(sab, 4, 1);
  const threads = 4;
  const each = 20_000;
  const url = new URL("./shared-state.js", import.meta.url).href;
  // Each thread increments without atomics (a load, a yield point, a store): only the lock keeps them apart.
  const src = `
    const { workerData, parentPort } = require("node:worker_threads");
    import(${JSON.stringify(url)}).then(({ SharedLock }) => {
      const lock = new SharedLock(workerData.sab, 0);
      const c = new Int32Array(workerData.sab, 4, 1);
      for (let i = 0; i < workerData.each; i++) {
        lock.lock();
        const v = c[0];
        if ((i & 255) === 0) for (let k = 0; k < 2000; k++) Math.sqrt(k); // hold it a while now and then
        c[0] = v + 1;
        lock.unlock();
      }
      parentPort.postMessage("done");
    });`;
  const workers = Array.from({ length: threads }, () => new Worker(src, { eval: true, workerData: { sab, each } }));
  // The main thread takes it too (the API and console feed do).
  const lock = new SharedLock(sab, 0);
  for (let i = 0; i < each; i++) lock.with(() => void (counter[0] = counter[0]! + 1));
  await Promise.all(workers.map((w) => new Promise((resolve, reject) => (w.once("message", resolve), w.once("error", reject)))));
  await Promise.all(workers.map((w) => w.terminate()));
  assert.equal(counter[0], (threads + 1) * each);
  assert.equal(new Int32Array(sab, 0, 1)[0], 0, "unlocked at the end");
});
