// bench:start's reference process: what any VMM written for Node.js with koffi resides in before
// its own code runs. `node dist/bench/node-floor.js` loads koffi (the FFI library src/sys uses) as
// an ES module entry does and calls nothing through it; with `worker` it also starts one worker
// thread that does nothing but say it is up, and waits for it. bench:start runs both under GNU
// time: the first is the floor of a `typervisor run`, the difference is what a worker thread (a
// vCPU's or a card's, before any of its code) costs.

import { createRequire } from "node:module";
import { once } from "node:events";
import { Worker } from "node:worker_threads";

createRequire(import.meta.url)("koffi");
if (process.argv[2] === "worker") {
  const w = new Worker("require('node:worker_threads').parentPort.postMessage('up')", { eval: true });
  await once(w, "message");
  await w.terminate();
}
