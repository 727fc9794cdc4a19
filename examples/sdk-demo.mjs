// Boots the built-in probe guest with the SDK, prints its serial output and its exit counters.
// Needs /dev/kvm and a build (`npm run build`). Run: node examples/sdk-demo.mjs
import { MicroVM } from "../dist/index.js";

const vm = MicroVM.create({ kernel: "probe", cmdline: "probe.run=demo", vcpus: 1, memMiB: 128 });
vm.console.pipe(process.stdout);
vm.on("crash", (exit) => console.error("guest crashed:", exit));
const timer = setTimeout(() => vm.stop("demo timeout"), 30_000);
await vm.start();
const exit = await vm.exited;
clearTimeout(timer);
const m = vm.metrics();
console.log(JSON.stringify({ exit, uptimeMs: m.uptimeMs, vcpus: m.vcpus }));
process.exitCode = exit.kind === "debug-exit" && exit.status === 0 ? 0 : 1;
