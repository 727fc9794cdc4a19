// `npm run build` runs this after tsc: the `typervisor` command as one bundle (dist/bundle/cli.js
// and the chunks its lazily loaded commands need), so that a command starts by reading a few files
// instead of compiling ~140 modules through the ES module loader: ~60 ms sooner to a guest's first
// console byte and 3.5–4.5 MiB less resident (docs/benchmarks.md, "The CLI as one bundle").
//
// The vCPU's worker script is bundled beside it (dist/bundle/vcpu-worker.js, sharing its chunks:
// ~1.7 MiB and ~12 ms less per vCPU); the SDK (dist/index.js) and a card's worker stay the modules
// tsc wrote (a card's worker imports its kind's model by URL; bundling both measured no gain). Code that finds
// files next to its own module (`import.meta.url`: the probe ELF, package.json, a card worker's
// script, a device kind's model) must still find them from inside the bundle, so each bundled
// module's `import.meta.url` is rewritten to the URL its own module has in dist/ — every output file
// lies directly in dist/bundle/, one level below dist/ — except where it names a bundled worker.

import { build, type Plugin } from "esbuild";
import { rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
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

/** Worker scripts bundled as entries of their own beside the CLI: entry name → module in dist/. */
export const WORKER_ENTRIES: Readonly<Record<string, string>> = { "vcpu-worker": "vmm/vcpu-worker.js" };

/** `new URL("./relative.js", import.meta.url)`, or `import.meta.url` alone. */
const MODULE_URL = /new URL\((["'])(\.{1,2}\/[^"'\n]+)\1, import\.meta\.url\)|import\.meta\.url/g;

/**
 * The source of a dist module with its own `import.meta.url` kept: the URL of `file`, from an
 * output file in `outDir`; but `new URL("./x.js", import.meta.url)` naming a module that is bundled
 * as an entry of its own (`entries`: absolute path → entry name) names that entry's output file.
 */
export function keepModuleUrl(source: string, file: string, outDir: string, entries: ReadonlyMap<string, string> = new Map()): string {
  if (!source.includes("import.meta.url")) return source;
  if (quoted(source)) throw new Error(`${file}: "import.meta.url" inside a string; the bundle cannot tell it from the expression`);
  const own = `new URL(${JSON.stringify(relative(outDir, file))}, import.meta.url).href`;
  return source.replace(MODULE_URL, (whole: string, _quote: string | undefined, spec: string | undefined) => {
    if (spec === undefined) return own;
    const entry = entries.get(resolve(dirname(file), spec));
    return entry === undefined ? whole.replace("import.meta.url", own) : `new URL(${JSON.stringify(`./${entry}.js`)}, import.meta.url)`;
  });
}

const ENTRY_PATHS = new Map(Object.entries(WORKER_ENTRIES).map(([name, module]) => [join(DIST, module), name]));

const keepModuleUrls: Plugin = {
  name: "keep-module-urls",
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(DIST + "/")) return undefined; // packages (cbor2, ...) as they are
      return { contents: keepModuleUrl(await readFile(args.path, "utf8"), args.path, BUNDLE_DIR, ENTRY_PATHS), loader: "js" };
    });
  },
};

export async function bundleCli(): Promise<void> {
  rmSync(BUNDLE_DIR, { recursive: true, force: true }); // chunks are named by content: no stale ones
  await build({
    entryPoints: { cli: join(DIST, "cli", "main.js"), ...Object.fromEntries(Object.entries(WORKER_ENTRIES).map(([name, module]) => [name, join(DIST, module)])) },
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
