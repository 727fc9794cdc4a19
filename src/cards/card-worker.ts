// The card worker: one per device, off the vCPU threads (see card.ts). Runs the card's loop
// (card-loop.ts) blocking in read(2)/poll(2) on the queue-notify eventfd, so a guest kick costs no
// exit and no main-thread work.

import { parentPort, workerData } from "node:worker_threads";
import * as sys from "../sys/index.js";
import type { CardWorkerData } from "./card.js";
import { openCardLoop } from "./card-loop.js";

const loop = await openCardLoop(workerData as CardWorkerData, false);
parentPort!.postMessage({ ready: true, tid: sys.gettid() });
loop.runBlocking();
loop.finish();
