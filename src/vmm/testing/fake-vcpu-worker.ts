// Worker entry for a fake vCPU (see fake-machine.ts).

import { runVcpuThread } from "../vcpu-thread.js";
import { openFakeVcpu } from "./fake-vcpu.js";

await runVcpuThread(openFakeVcpu);
