// `npm run build` runs this after tsc: the `typervisor` command as one bundle (dist/bundle/cli.js
// and the chunks its lazily loaded commands need), so that a command starts by reading a few files
// instead of compiling ~140 modules through the ES module loader: ~40 ms sooner to a guest's first
// console byte and ~3.5 MiB less resident (docs/benchmarks.md, "The CLI as one bundle").
//
// The SDK (dist/index.js) and the worker threads (a vCPU's, a card's) stay the modules tsc wrote.
// Code that finds files next to its own module (`import.meta.url`: the probe ELF, package.json, a
// worker's script, a device kind's model) must still find them from inside the bundle, so each
// bundled module's `import.meta.url` is rewritten to the URL its own module has in dist/ — every
// output file lies directly in dist/bundle/, one level below dist/.

import { build, type Plugin } from "esbuild";
import { rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const DIST = join(dirname(fileURLToPath(import.meta.url)), "..");
export const BUNDLE_DIR = join(DIST, "bundle");

/**
 * Whether some `import.meta.url` in `source` is written inside a string (an odd number of one
 * kind of quote before it on its line): rewriting that would change the text, not a URL.
 */
function quoted(source: string): boolean {
  for (const line of source.split("\n")) {
    for (let at = line.indexOf("import.meta.url"); at >= 0; at = line.indexOf("import.meta.url", at + 1)) {
      const before = line.slice(0, at).replace(/\\./g, "");
      if (["\"", "'", "`"].some((q) => before.split(q).length % 2 === 0)) return true;
    }
  }
  return false;
}

/** The source of a dist module with its own `import.meta.url` kept: the URL of `file`, from an output file in `outDir`. */
export function keepModuleUrl(source: string, file: string, outDir: string): string {
  if (!source.includes("import.meta.url")) return source;
  if (quoted(source)) throw new Error(`${file}: "import.meta.url" inside a string; the bundle cannot tell it from the expression`);
  const rel = relative(outDir, file);
  return source.replaceAll("import.meta.url", `new URL(${JSON.stringify(rel)}, import.meta.url).href`);
}

const keepModuleUrls: Plugin = {
  name: "keep-module-urls",
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(DIST + "/")) return undefined; // packages (cbor2, ...) as they are
      return { contents: keepModuleUrl(await readFile(args.path, "utf8"), args.path, BUNDLE_DIR), loader: "js" };
    });
  },
};

export async function bundleCli(): Promise<void> {
  rmSync(BUNDLE_DIR, { recursive: true, force: true }); // chunks are named by content: no stale ones
  await build({
    entryPoints: { cli: join(DIST, "cli", "main.js") },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    outdir: BUNDLE_DIR,
    // koffi is a native addon; echarts (report charts, loaded on demand) is most of a megabyte.
    external: ["koffi", "echarts"],
    plugins: [keepModuleUrls],
    sourcemap: true,
    logLevel: "warning",
  });
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await bundleCli();
