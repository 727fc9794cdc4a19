// For tests: the Firecracker spec file (vendor/firecracker/firecracker-api.yaml) loaded with `yaml` and
// compiled with `ajv`, so request and response bodies are checked against the spec's own
// definitions rather than against our reading of them. Both packages are devDependencies: only
// test files import this module.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";
import { packageRoot } from "../probe/path.js";

interface SpecDoc {
  paths: Record<string, Record<string, { parameters?: Array<{ in: string; schema?: { $ref?: string } }>; responses: Record<string, { schema?: { $ref?: string } }> }>>;
  definitions: Record<string, unknown>;
}

/** The vendored spec, relative to the repository root (vendor/firecracker/README.md says where it comes from). */
export const SPEC_RELATIVE = "vendor/firecracker/firecracker-api.yaml";

/** Absolute path of the vendored spec; throws if it is missing (it is part of the repository). */
export function specPath(): string {
  const path = join(packageRoot(), SPEC_RELATIVE);
  if (!existsSync(path)) throw new Error(`the vendored Firecracker spec is missing: ${path} (restore it from git, see vendor/firecracker/README.md)`);
  return path;
}

/** Every object schema without `additionalProperties` gets `false`: Firecracker rejects unknown fields. */
function closeObjects(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(closeObjects);
  if (typeof s !== "object" || s === null) return s;
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) o[k] = k === "properties" ? Object.fromEntries(Object.entries(v as object).map(([pk, pv]) => [pk, closeObjects(pv)])) : closeObjects(v);
  if (o["type"] === "object" && o["properties"] !== undefined && !("additionalProperties" in o)) o["additionalProperties"] = false;
  return o;
}

export class SpecValidator {
  readonly doc: SpecDoc;
  private readonly ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(path: string) {
    this.doc = parse(readFileSync(path, "utf8")) as SpecDoc;
    this.ajv.addSchema({ $id: "fc.json", definitions: this.doc.definitions });
    this.ajv.addSchema({ $id: "fc-closed.json", definitions: closeObjects(this.doc.definitions) });
  }

  private fn(def: string, closed: boolean): ValidateFunction {
    const key = `${closed}:${def}`;
    let f = this.cache.get(key);
    if (f === undefined) {
      if (!(def in this.doc.definitions)) throw new Error(`the spec has no definition "${def}"`);
      f = this.ajv.compile({ $ref: `${closed ? "fc-closed.json" : "fc.json"}#/definitions/${def}` });
      this.cache.set(key, f);
    }
    return f;
  }

  /** Errors of `value` against definition `def` (empty: valid). `closed` also rejects unknown fields. */
  errors(def: string, value: unknown, closed = false): string[] {
    const f = this.fn(def, closed);
    return f(value) ? [] : (f.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? ""}`);
  }

  /** The definition the spec declares for an operation's body, e.g. ("/boot-source", "put") → "BootSource". */
  bodyDefinition(path: string, method: string): string | undefined {
    const ref = this.doc.paths[path]?.[method]?.parameters?.find((p) => p.in === "body")?.schema?.$ref;
    return ref?.replace("#/definitions/", "");
  }

  /** The definition of an operation's response for `status` (or "default"). */
  responseDefinition(path: string, method: string, status: number): string | undefined {
    const r = this.doc.paths[path]?.[method]?.responses;
    const ref = (r?.[String(status)] ?? r?.["default"])?.schema?.$ref;
    return ref?.replace("#/definitions/", "");
  }

  /** Every operation of the spec as "METHOD /path". */
  operations(): string[] {
    return Object.entries(this.doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
  }
}
