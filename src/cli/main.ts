// `typervisor` command-line entry. Every failure is one line on stderr and a documented exit
// status (see HELP); stack traces are for bugs only. Each command's code is loaded when that
// command runs: `--version` and `--help` load only the argument parser (issue: ≤ 0.1 s).

import { readFileSync } from "node:fs";
import { parseCommand, COMPARE_HELP, HELP, UsageError } from "./args.js";
import { MAX_VCPUS, MIN_MEM_MIB, MAX_MEM_MIB } from "../vmm/limits.js";
import { EXIT_OK, EXIT_GUEST_FAILURE, EXIT_USAGE, EXIT_CRASH, EXIT_HOST } from "./exit-codes.js";

export { EXIT_OK, EXIT_GUEST_FAILURE, EXIT_USAGE, EXIT_CRASH, EXIT_HOST };

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

function fail(code: number, message: string): number {
  process.stderr.write(`typervisor: ${message}\n`);
  return code;
}

export async function main(argv: string[]): Promise<number> {
  let command;
  try {
    command = parseCommand(argv, { maxVcpus: MAX_VCPUS, minMem: MIN_MEM_MIB, maxMem: MAX_MEM_MIB });
  } catch (e) {
    if (e instanceof UsageError) return fail(EXIT_USAGE, e.message);
    throw e;
  }
  switch (command.cmd) {
    case "help":
      if (command.topic === "image") {
        process.stdout.write((await import("../image/cli.js")).IMAGE_HELP);
        return EXIT_OK;
      }
      process.stdout.write(command.topic === "compare" ? COMPARE_HELP : HELP);
      return EXIT_OK;
    case "image": {
      // The image builder (apt, mke2fs) is no part of booting a VM.
      const { imageCommand } = await import("../image/cli.js");
      return imageCommand(command.argv, process);
    }
    case "version":
      process.stdout.write(`typervisor ${version()}\n`);
      return EXIT_OK;
    case "probe-path": {
      const { probePath } = await import("../probe/path.js");
      try {
        process.stdout.write(`${probePath()}\n`);
        return EXIT_OK;
      } catch (e) {
        return fail(EXIT_HOST, (e as Error).message);
      }
    }
    case "run":
      return (await import("./run.js")).run(command.options);
    case "compare":
      return (await import("./compare.js")).compareCommand(command.options, process);
    case "serve": {
      const [{ serve, runOptionsToResources }, { exitStatus }] = await Promise.all([import("./serve.js"), import("./run.js")]);
      let resources;
      try {
        resources = command.run !== undefined ? runOptionsToResources(command.run) : undefined;
      } catch (e) {
        if (e instanceof UsageError || (e as Error).name === "FaultError") return fail(EXIT_USAGE, (e as Error).message);
        throw e;
      }
      const nsmChipDir = command.run?.nsmChipDir;
      return serve(
        { ...command.serve, ...(resources !== undefined ? { resources } : {}), ...(nsmChipDir !== undefined ? { nsmChipDir } : {}) },
        { stderr: process.stderr, exitStatus },
      );
    }
    case "ps":
    case "pause":
    case "resume":
    case "stop":
    case "console":
      return control(command.cmd, command.argv);
    case "chip":
      return (await import("../security/cli.js")).chipCommand(command.argv, process);
    case "measure":
      return (await import("../security/cli.js")).measureCommand(command.argv, process);
    case "attest":
      if (command.argv[0] === "verify") return (await import("../security/cli.js")).attestCommand(command.argv, process);
      try {
        return await (await import("./instances.js")).attestVmCommand(command.argv, process);
      } catch (e) {
        if (e instanceof UsageError) return fail(EXIT_USAGE, `attest: ${e.message}`);
        throw e;
      }
    case "sign":
      return (await import("../security/cli.js")).signCommand(command.argv, process);
  }
}

async function control(verb: "ps" | "pause" | "resume" | "stop" | "console", argv: string[]): Promise<number> {
  const { psCommand, stopCommand, vmStateCommand, consoleCommand } = await import("./instances.js");
  try {
    if (verb === "ps") return await psCommand(argv, process);
    if (verb === "console") return await consoleCommand(argv, process);
    if (verb === "stop") return await stopCommand(argv, process);
    return await vmStateCommand(verb, argv, process);
  } catch (e) {
    if (e instanceof UsageError) return fail(EXIT_USAGE, `${verb}: ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ECONNREFUSED" || code === "ENOENT") return fail(EXIT_GUEST_FAILURE, `${verb}: the VM's API socket does not answer (${code})`);
    throw e;
  }
}
