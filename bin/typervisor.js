#!/usr/bin/env node
// The `typervisor` command. Runs the CLI as one bundle (npm run build produces dist/, and from it
// dist/bundle: src/build/bundle.ts).
import { main } from "../dist/bundle/cli.js";

process.exitCode = await main(process.argv.slice(2));
