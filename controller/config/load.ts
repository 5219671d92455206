import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from "yaml";
import { z } from "zod";

import { configSchema, type SpillwayConfig } from "./schema.ts";

/**
 * Loads `spillway.yaml`. Each setting comes from the first of these that sets it: a command-line
 * option, an environment variable, the file, the schema's default. Environment overrides:
 *
 * - `SPILLWAY_GATEWAY_HOST` sets `gateway.host`.
 * - `SPILLWAY_GATEWAY_PORT` sets `gateway.port`.
 *
 * An empty variable counts as unset. Relative model paths in the file are resolved against the file's
 * folder, because a worker resolves a relative `--model` against its download cache instead.
 */

/** One problem in a configuration: the key as a path such as `pools[0].replicas.min`, and what is wrong. */
export interface ConfigIssue {
  /** Empty for problems with the file as a whole, such as a missing file or invalid YAML. */
  path: string;
  message: string;
  /** 1-based line in the file, when the problem has one. */
  line?: number;
}

/** A configuration that cannot be used. Its message lists every issue, one a line. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly source: string;
  readonly issues: readonly ConfigIssue[];

  constructor(source: string, issues: ConfigIssue[]) {
    super(`Cannot load the configuration ${source}:\n${issues.map((issue) => `  ${formatIssue(issue)}`).join("\n")}`);
    this.source = source;
    this.issues = issues;
  }
}

/** Command-line options that override the file and the environment. */
export interface ConfigOverrides {
  gateway?: { host?: string; port?: number };
}

type Segment = string | number;

/** Sources of values that did not come from the file, such as an environment variable, keyed by dotted path. */
type Origins = Map<string, string>;

const environmentOverrides: Array<{ variable: string; path: Segment[]; parse: (value: string) => unknown }> = [
  { variable: "SPILLWAY_GATEWAY_HOST", path: ["gateway", "host"], parse: (value) => value },
  { variable: "SPILLWAY_GATEWAY_PORT", path: ["gateway", "port"], parse: parseNumber },
];

/** Reads, validates and completes a configuration file. Throws `ConfigError` listing every problem. */
export function loadConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  overrides: ConfigOverrides = {},
  { requirePools = true }: { requirePools?: boolean } = {},
): SpillwayConfig {
  const source = path.resolve(file);
  const lineCounter = new LineCounter();
  const document = parseDocument(readConfigFile(source), { lineCounter, prettyErrors: false });
  if (document.errors.length > 0) {
    throw new ConfigError(
      source,
      document.errors.map((error) => {
        const { line, col } = lineCounter.linePos(error.pos[0]);
        return { path: "", message: `invalid YAML at line ${line}, column ${col}: ${error.message}`, line };
      }),
    );
  }

  const raw: unknown = document.toJS() ?? {};
  const lineOf = (segments: Segment[]) => findLine(document, lineCounter, segments);
  const config = validate(raw, source, env, overrides, lineOf);
  if (requirePools && config.pools.length === 0) {
    throw new ConfigError(source, [{ path: "pools", message: "missing, expected a non-empty list", line: lineOf(["pools"]) ?? 1 }]);
  }
  if (!requirePools && config.pools.length > 0) {
    throw new ConfigError(source, [
      { path: "pools", message: "must be empty here: in a cluster each pool is a ModelPool resource, so move these pools to ModelPools", line: lineOf(["pools"]) ?? 1 },
    ]);
  }
  for (const pool of config.pools) {
    for (const variant of pool.variants) variant.model = resolveModelPath(variant.model, path.dirname(source));
  }
  return config;
}

/**
 * Builds the one-pool configuration that `spillway up --model <path|hf:uri>` serves: the pool is named
 * after the file, with one variant and one replica. The quant comes from the GGUF header for a local
 * file, from the `:QUANT` suffix of an `hf:` URI, or is `default`.
 */
export async function configForModel(
  model: string,
  options: { name?: string; env?: NodeJS.ProcessEnv; overrides?: ConfigOverrides } = {},
): Promise<SpillwayConfig> {
  const remote = hasUriScheme(model);
  const modelPath = remote ? model : path.resolve(model);
  const quant = remote ? quantFromUri(model) : await quantFromFile(modelPath);
  const baseName = modelBaseName(model);
  const name = options.name ?? dnsLabel(baseName);
  const raw = {
    pools: [
      {
        name,
        aliases: baseName === name ? [] : [baseName],
        variants: [{ quant, model: modelPath }],
        replicas: { min: 1, max: 1 },
      },
    ],
  };
  return validate(raw, `--model ${model}`, options.env ?? process.env, options.overrides ?? {}, () => undefined);
}

function readConfigFile(source: string): string {
  try {
    return readFileSync(source, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new ConfigError(source, [{ path: "", message: "file not found; create it or pass the path of an existing configuration file" }]);
    }
    throw new ConfigError(source, [{ path: "", message: `cannot read the file: ${(error as Error).message}` }]);
  }
}

function validate(
  raw: unknown,
  source: string,
  env: NodeJS.ProcessEnv,
  overrides: ConfigOverrides,
  lineOf: (segments: Segment[]) => number | undefined,
): SpillwayConfig {
  const origins: Origins = new Map();
  let merged = raw;
  for (const { variable, path: keyPath, parse } of environmentOverrides) {
    const value = env[variable];
    if (value === undefined || value === "") continue;
    merged = setIn(merged, keyPath, parse(value));
    origins.set(keyPath.join("."), variable);
  }
  for (const [key, value] of Object.entries(overrides.gateway ?? {})) {
    if (value === undefined) continue;
    merged = setIn(merged, ["gateway", key], value);
    origins.set(`gateway.${key}`, "a command-line option");
  }

  const result = configSchema.safeParse(merged, { reportInput: true });
  if (result.success) return result.data;
  const issues = result.error.issues.flatMap((issue) => describeIssue(issue, merged, origins, lineOf));
  // File order. Values from the environment or the command line have no line, so they come first.
  issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  throw new ConfigError(source, issues);
}

function describeIssue(issue: z.core.$ZodIssue, raw: unknown, origins: Origins, lineOf: (segments: Segment[]) => number | undefined): ConfigIssue[] {
  const segments = issue.path.filter((segment): segment is Segment => typeof segment !== "symbol");
  const origin = origins.get(segments.join("."));
  const located = (keyPath: Segment[], message: string): ConfigIssue => ({
    path: formatPath(keyPath) + (origin === undefined ? "" : ` (from ${origin})`),
    message,
    line: origin === undefined ? lineOf(keyPath) : undefined,
  });

  if (issue.code === "unrecognized_keys") {
    const node = schemaAt(segments);
    const known = node?.propertyNames?.enum ?? Object.keys(node?.properties ?? {});
    return issue.keys.map((key) => located([...segments, key], unknownKeyMessage(key, known)));
  }

  const value = issue.code === "custom" ? valueAt(raw, segments) : issue.input;
  const expected = `expected ${describeSchema(schemaAt(segments))}`;
  switch (issue.code) {
    case "invalid_type":
      return [located(segments, value === undefined ? `missing, ${expected}` : `${expected}, got ${formatValue(value)}`)];
    case "too_small":
    case "too_big":
    case "invalid_value":
      return [located(segments, `${expected}, got ${formatValue(value)}`)];
    case "invalid_format":
      return [located(segments, `${issue.format === "regex" ? issue.message : expected}, got ${formatValue(value)}`)];
    default:
      return [located(segments, mentionsValue(issue.message, value) ? issue.message : `${issue.message}, got ${formatValue(value)}`)];
  }
}

function unknownKeyMessage(key: string, known: string[]): string {
  const closest = known
    .map((candidate) => ({ candidate, distance: levenshtein(key, candidate) }))
    .filter(({ distance }) => distance <= 2)
    .sort((a, b) => a.distance - b.distance)[0];
  if (closest !== undefined) return `unknown key; did you mean "${closest.candidate}"?`;
  return known.length === 0 ? "unknown key" : `unknown key; expected one of ${known.join(", ")}`;
}

interface JsonSchemaNode {
  type?: string;
  properties?: Record<string, JsonSchemaNode>;
  propertyNames?: JsonSchemaNode;
  additionalProperties?: JsonSchemaNode | boolean;
  items?: JsonSchemaNode;
  enum?: string[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minLength?: number;
  minItems?: number;
  format?: string;
  pattern?: string;
}

// The schema as JSON Schema is the public way to read each key's type and bounds, for the "expected …" part.
const configJsonSchema = z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" }) as JsonSchemaNode;

function schemaAt(segments: Segment[]): JsonSchemaNode | undefined {
  let node: JsonSchemaNode | undefined = configJsonSchema;
  for (const segment of segments) {
    if (node === undefined) return undefined;
    if (typeof segment === "number") node = node.items;
    else node = node.properties?.[segment] ?? (typeof node.additionalProperties === "object" ? node.additionalProperties : undefined);
  }
  return node;
}

function describeSchema(node: JsonSchemaNode | undefined): string {
  if (node === undefined) return "a valid value";
  if (node.enum !== undefined) return `one of ${node.enum.join(", ")}`;
  switch (node.type) {
    case "integer":
    case "number":
      return `${node.type === "integer" ? "an integer" : "a number"}${describeBounds(node)}`;
    case "string":
      if (node.format === "uri") return "a URL";
      return node.minLength !== undefined && node.minLength > 0 ? "a non-empty string" : "a string";
    case "boolean":
      return "true or false";
    case "array":
      if (node.minItems === 1) return "a non-empty list";
      return node.minItems !== undefined && node.minItems > 1 ? `a list of at least ${node.minItems} items` : "a list";
    case "object":
      return "a mapping";
    default:
      return "a valid value";
  }
}

function describeBounds(node: JsonSchemaNode): string {
  // zod writes Number.MAX_SAFE_INTEGER as the maximum of an unbounded z.int().
  const maximum = node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER ? node.maximum : undefined;
  if (node.exclusiveMinimum !== undefined) return ` > ${node.exclusiveMinimum}`;
  if (node.minimum !== undefined && maximum !== undefined) return ` from ${node.minimum} to ${maximum}`;
  if (node.minimum !== undefined) return ` ≥ ${node.minimum}`;
  if (maximum !== undefined) return ` ≤ ${maximum}`;
  return "";
}

function formatIssue(issue: ConfigIssue): string {
  const where = issue.line === undefined ? "" : ` (line ${issue.line})`;
  return issue.path === "" ? `${issue.message}` : `${issue.path}: ${issue.message}${where}`;
}

function formatPath(segments: Segment[]): string {
  if (segments.length === 0) return "(root)";
  let text = "";
  for (const segment of segments) {
    if (typeof segment === "number") text += `[${segment}]`;
    else text += text === "" ? segment : `.${segment}`;
  }
  return text;
}

function formatValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return value.length === 1 ? "a list with 1 item" : `a list with ${value.length} items`;
  if (value !== null && typeof value === "object") return "a mapping";
  return JSON.stringify(value);
}

/** Tells whether a custom message already names the value, or the value is not worth printing. */
function mentionsValue(message: string, value: unknown): boolean {
  const printable = value === null || ["string", "number", "boolean"].includes(typeof value);
  return !printable || message.includes(String(value));
}

function valueAt(root: unknown, segments: Segment[]): unknown {
  let value = root;
  for (const segment of segments) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<Segment, unknown>)[segment];
  }
  return value;
}

/**
 * Returns a copy of `root` with `value` at `segments`, creating missing mappings on the way. Where the
 * file has something else than a mapping on the way, `root` is returned as it is, so validation reports it.
 */
function setIn(root: unknown, segments: Segment[], value: unknown): unknown {
  const [head, ...rest] = segments;
  if (head === undefined) return value;
  if (root === undefined || root === null) return { [head]: setIn(undefined, rest, value) };
  if (typeof root !== "object" || Array.isArray(root)) return root;
  const base = root as Record<string, unknown>;
  return { ...base, [head]: setIn(base[head], rest, value) };
}

/** Finds the line of a key (or of the value, for a list item) in the YAML document. */
function findLine(document: Document, lineCounter: LineCounter, segments: Segment[]): number | undefined {
  let node: unknown = document.contents;
  let offset: number | undefined = document.contents?.range?.[0];
  for (const segment of segments) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && item.key.value === segment);
      if (pair === undefined) break;
      offset = isScalar(pair.key) ? pair.key.range?.[0] : offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === "number") {
      node = node.items[segment];
      offset = (node as { range?: [number] } | undefined)?.range?.[0] ?? offset;
    } else {
      break;
    }
  }
  return offset === undefined ? undefined : lineCounter.linePos(offset).line;
}

function parseNumber(value: string): unknown {
  // A value that is not a plain number stays a string, so validation reports it as found.
  return /^-?\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : value;
}

function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** Matches `hf:`, `https:` and other URIs that a worker downloads rather than reads from disk. */
function hasUriScheme(model: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(model);
}

function resolveModelPath(model: string, directory: string): string {
  return hasUriScheme(model) ? model : path.resolve(directory, model);
}

/** Returns the model's name without folders, `.gguf` or `hf:` quant suffix: `/m/npc-Q4_K_M.gguf` gives `npc-Q4_K_M`. */
function modelBaseName(model: string): string {
  if (model.startsWith("hf:")) {
    const withoutQuant = model.slice("hf:".length).replace(/:[^/]*$/, "");
    return (withoutQuant.split("/").at(-1) ?? withoutQuant).replace(/[-.]gguf$/i, "");
  }
  return path.basename(model).replace(/\.gguf$/i, "");
}

/** Lowercases a name and replaces everything else than letters, digits and dashes, to fit a DNS label. */
function dnsLabel(name: string): string {
  const label = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return label === "" ? "model" : label;
}

function quantFromUri(model: string): string {
  const match = /^hf:[^:]+:([A-Za-z0-9_]+)$/.exec(model);
  return match?.[1]?.toUpperCase() ?? "default";
}

async function quantFromFile(modelPath: string): Promise<string> {
  if (!existsSync(modelPath)) throw new ConfigError(`--model ${modelPath}`, [{ path: "", message: `model file not found: ${modelPath}` }]);
  // Imported here so that loading a configuration file does not load the inference engine.
  const { readGgufQuant } = await import("../../worker/engine.ts");
  try {
    return (await readGgufQuant(modelPath)) ?? "default";
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(`--model ${modelPath}`, [{ path: "", message: `cannot read the GGUF header of ${modelPath}: ${reason}` }]);
  }
}
