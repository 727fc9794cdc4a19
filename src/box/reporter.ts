// A node:test reporter (`--test-reporter=dist/box/reporter.js`) that writes one JSON object a line
// for each finished test: its file, its path of names (parents first), and its outcome. The box
// runs KVM tests with it on the result port; the host replays each outcome as its own test
// (src/testing/kvm.ts). Node's reporter API: an async generator over the runner's events.

import { openSync, writeSync } from "node:fs";

/** One finished test as the box reports it. */
export interface BoxTestResult {
  file: string;
  /** Names from the top-level test down to this one. */
  path: string[];
  outcome: "pass" | "fail" | "skip" | "todo";
  /** The skip or todo reason, when one was given. */
  reason?: string;
  durationMs: number;
  error?: { message: string; stack?: string };
  /** The test's own t.diagnostic() lines. */
  diagnostics?: string[];
}

/** The environment variable that names the test file a box `node --test` runs. */
export const FILE_ENV = "BOX_TEST_FILE";

/**
 * Where the reporter writes its lines itself, synchronously (the box's result port): node's
 * --test-force-exit can end the process before an asynchronous reporter stream has flushed
 * its last lines. Unset: the lines are yielded to the reporter destination as usual.
 */
export const RESULT_PATH_ENV = "BOX_RESULT_PATH";

/** The prefix that marks a result line on the result port (the console may interleave nothing there, but be safe). */
export const RESULT_PREFIX = "BOX-TEST ";

interface TestEventData {
  name: string;
  message?: string;
  nesting: number;
  file?: string;
  skip?: string | boolean;
  todo?: string | boolean;
  details?: { duration_ms?: number; error?: unknown };
}

/** The assertion or error that failed the test, out of node:test's ERR_TEST_FAILURE wrapper. */
function describeError(e: unknown): { message: string; stack?: string } {
  const inner = (e as { cause?: unknown })?.cause ?? e;
  if (inner instanceof Error) return inner.stack === undefined ? { message: inner.message } : { message: inner.message, stack: inner.stack };
  return { message: String(inner) };
}

export default async function* boxReporter(source: AsyncIterable<{ type: string; data: TestEventData }>): AsyncGenerator<string> {
  const open = new Map<string, string[]>(); // file → names of the tests started at each nesting level
  // node:test reports a test's diagnostics right after its pass or fail, at its nesting: a result
  // waits for them until the next event of any other kind.
  let pending: { r: BoxTestResult; nesting: number } | undefined;
  const direct = process.env[RESULT_PATH_ENV];
  const fd = direct === undefined ? undefined : openSync(direct, "a");
  const flush = (): string | undefined => {
    const line = pending === undefined ? undefined : `${RESULT_PREFIX}${JSON.stringify(pending.r)}\n`;
    pending = undefined;
    if (line === undefined || fd === undefined) return line;
    writeSync(fd, line);
    return undefined;
  };
  for await (const ev of source) {
    const d = ev.data;
    if (ev.type === "test:diagnostic" && pending !== undefined && d.nesting === pending.nesting && d.message !== undefined) {
      (pending.r.diagnostics ??= []).push(d.message);
      continue;
    }
    const done = flush();
    if (done !== undefined) yield done;
    if (ev.type !== "test:start" && ev.type !== "test:pass" && ev.type !== "test:fail") continue;
    // node:test names the file where test() was called (for KVM tests, src/testing/kvm.ts), so
    // the box runs one file per `node --test` and names it in BOX_TEST_FILE.
    const file = process.env[FILE_ENV] ?? d.file ?? "";
    const stack = open.get(file) ?? [];
    open.set(file, stack);
    if (ev.type === "test:start") {
      stack.length = d.nesting;
      stack[d.nesting] = d.name;
      continue;
    }
    const path = [...stack.slice(0, d.nesting), d.name];
    const r: BoxTestResult = {
      file,
      path,
      outcome: ev.type === "test:fail" ? "fail" : d.skip !== undefined && d.skip !== false ? "skip" : d.todo !== undefined && d.todo !== false ? "todo" : "pass",
      durationMs: Math.round(d.details?.duration_ms ?? 0),
    };
    const reason = r.outcome === "skip" ? d.skip : r.outcome === "todo" ? d.todo : undefined;
    if (typeof reason === "string") r.reason = reason;
    if (r.outcome === "fail") r.error = describeError(d.details?.error);
    pending = { r, nesting: d.nesting };
  }
  const last = flush();
  if (last !== undefined) yield last;
}

/** The results in a result-port text (other lines ignored). */
export function parseResults(text: string): BoxTestResult[] {
  const out: BoxTestResult[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith(RESULT_PREFIX)) continue;
    try {
      out.push(JSON.parse(line.slice(RESULT_PREFIX.length)) as BoxTestResult);
    } catch {
      // a line cut short by a crash: the tests it would have named are reported missing
    }
  }
  return out;
}
