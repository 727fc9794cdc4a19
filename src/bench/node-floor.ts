// bench:start's reference process: what any VMM written for Node.js with koffi resides in before
// its own code runs. `node dist/bench/node-floor.js` loads koffi (the FFI library src/sys uses) as
// an ES module entry does, calls nothing through it and writes one line on stdout (so bench:start
// times Node.js's own start to its first byte, as it times a guest's first console byte). Modes:
// - `worker`: it also starts one worker thread that does nothing but say it is up, and waits for
//   it: the difference is what a worker thread (a vCPU's or a card's, before any of its code) costs;
// - `jit` (run with node's --allow-natives-syntax): it also has V8's optimizing compiler
//   (TurboFan) compile one small function, as any long enough run of a VMM has it compile its exit
//   loop: the difference is what the optimizing compiler's first use costs a process, whatever
//   it compiles. It checks that TurboFan did compile the function, and fails if not.

import { createRequire } from "node:module";
import { once } from "node:events";

createRequire(import.meta.url)("koffi");
const mode = process.argv[2];
if (mode === "worker") {
  const { Worker } = await import("node:worker_threads");
  const w = new Worker("require('node:worker_threads').parentPort.postMessage('up')", { eval: true });
  await once(w, "message");
  await w.terminate();
} else if (mode === "jit") {
  const sum = (a: Float64Array): number => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i]! * 3;
    return s;
  };
  // V8's runtime functions (--allow-natives-syntax), reached through Function so this file parses
  // without the flag. GetOptimizationStatus's bit 6 is "TurboFanned" (V8's src/runtime/runtime.h,
  // OptimizationStatus).
  const TURBOFANNED = 1 << 6;
  let status: number;
  try {
    status = new Function("f", "a", "%PrepareFunctionForOptimization(f); f(a); f(a); %OptimizeFunctionOnNextCall(f); f(a); return %GetOptimizationStatus(f);")(sum, new Float64Array(64)) as number;
  } catch (e) {
    throw new Error(`node-floor jit needs node's --allow-natives-syntax (${(e as Error).message})`);
  }
  if ((status & TURBOFANNED) === 0) throw new Error(`node-floor jit: V8 did not optimize the function with TurboFan (status 0b${status.toString(2)})`);
} else if (mode !== undefined) {
  throw new Error(`node-floor: unknown mode "${mode}" (worker, jit, or none)`);
}
process.stdout.write("up\n");
