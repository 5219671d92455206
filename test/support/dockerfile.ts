/**
 * A reader for the subset of Dockerfile and .dockerignore syntax that docker/Dockerfile uses, so tests
 * can check the images against the repository without a Docker engine. It follows the Dockerfile
 * reference: `\` continues a line, a line starting with `#` is a comment (also inside a continued
 * instruction), and exec-form arguments are JSON arrays.
 */

export interface Instruction {
  keyword: string;
  /** The arguments as written, with continuations joined by a space. */
  text: string;
  line: number;
}

export interface Stage {
  name: string;
  /** The image or earlier stage after FROM, with `${ARG}` references left unexpanded. */
  from: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARG instructions before the first FROM, with their defaults. */
  globalArgs: Map<string, string | undefined>;
  stages: Stage[];
}

export function parseDockerfile(text: string): Dockerfile {
  const globalArgs = new Map<string, string | undefined>();
  const stages: Stage[] = [];
  for (const instruction of joinInstructions(text)) {
    if (instruction.keyword === "FROM") {
      const words = instruction.text.split(/\s+/).filter((word) => !word.startsWith("--"));
      const alias = words.length >= 3 && words[1]!.toUpperCase() === "AS" ? words[2]! : String(stages.length);
      stages.push({ name: alias, from: words[0]!, instructions: [] });
    } else if (stages.length === 0) {
      if (instruction.keyword !== "ARG") throw new Error(`Line ${instruction.line}: only ARG may come before the first FROM, found ${instruction.keyword}.`);
      const [name, value] = splitOnce(instruction.text, "=");
      globalArgs.set(name, value);
    } else {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { globalArgs, stages };
}

function joinInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending: { parts: string[]; line: number } | undefined;
  text.split("\n").forEach((raw, index) => {
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const continued = trimmed.endsWith("\\");
    const part = continued ? trimmed.slice(0, -1).trim() : trimmed;
    pending ??= { parts: [], line: index + 1 };
    pending.parts.push(part);
    if (continued) return;
    const joined = pending.parts.join(" ");
    const [keyword, rest] = splitOnce(joined, " ");
    instructions.push({ keyword: keyword.toUpperCase(), text: (rest ?? "").trim(), line: pending.line });
    pending = undefined;
  });
  if (pending !== undefined) throw new Error(`Line ${pending.line}: the instruction ends with a line continuation.`);
  return instructions;
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const index = text.indexOf(separator);
  return index < 0 ? [text, undefined] : [text.slice(0, index), text.slice(index + separator.length)];
}

/** Returns the stages a target is built from, the base first and the target last. */
export function stageChain(dockerfile: Dockerfile, target: string): Stage[] {
  const chain: Stage[] = [];
  let name: string | undefined = target;
  while (name !== undefined) {
    const stage = dockerfile.stages.find((candidate) => candidate.name === name);
    if (stage === undefined) break;
    chain.unshift(stage);
    name = stage.from;
  }
  if (chain.length === 0) throw new Error(`No stage named ${target}.`);
  return chain;
}

/** Returns the instructions with this keyword across a target's stage chain, in build order. */
export function instructionsOf(dockerfile: Dockerfile, target: string, keyword: string): Instruction[] {
  return stageChain(dockerfile, target).flatMap((stage) => stage.instructions.filter((instruction) => instruction.keyword === keyword));
}

/** Parses the exec-form (JSON array) arguments of CMD or ENTRYPOINT, or of a HEALTHCHECK's CMD. */
export function execForm(instruction: Instruction): string[] {
  const json = instruction.keyword === "HEALTHCHECK" ? instruction.text.replace(/^(--\S+\s+)*CMD\s+/, "") : instruction.text;
  const parsed: unknown = JSON.parse(json);
  if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === "string")) {
    throw new Error(`Line ${instruction.line}: ${instruction.keyword} is not in exec form (a JSON array of strings).`);
  }
  return parsed;
}

export interface CopyInstruction {
  from?: string;
  sources: string[];
  destination: string;
  line: number;
}

export function parseCopy(instruction: Instruction): CopyInstruction {
  const words = instruction.text.split(/\s+/);
  const flags = words.filter((word) => word.startsWith("--"));
  const paths = words.filter((word) => !word.startsWith("--"));
  const from = flags.find((flag) => flag.startsWith("--from="))?.slice("--from=".length);
  const copy: CopyInstruction = { sources: paths.slice(0, -1), destination: paths.at(-1)!, line: instruction.line };
  if (from !== undefined) copy.from = from;
  return copy;
}

/** Parses the key="value" pairs of a LABEL instruction. */
export function parseLabels(instruction: Instruction): Map<string, string> {
  return new Map([...instruction.text.matchAll(/([\w.-]+)="([^"]*)"/g)].map((match) => [match[1]!, match[2]!]));
}

/**
 * Tells whether a .dockerignore keeps a path out of the build context. As Docker does, a pattern matches a
 * path or any of its parent folders, `*` and `?` stay within one path segment, `**` spans any number of
 * them, and the last matching pattern decides (`!` re-includes).
 */
export function isIgnored(dockerignore: string, relativePath: string): boolean {
  const patterns = dockerignore
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  const candidates = relativePath.split("/").map((_, index, segments) => segments.slice(0, index + 1).join("/"));
  let ignored = false;
  for (const pattern of patterns) {
    const negated = pattern.startsWith("!");
    const expression = patternToRegExp(negated ? pattern.slice(1) : pattern);
    if (candidates.some((candidate) => expression.test(candidate))) ignored = !negated;
  }
  return ignored;
}

function patternToRegExp(pattern: string): RegExp {
  const cleaned = pattern.replace(/^\/+|\/+$/g, "");
  let source = "";
  for (let index = 0; index < cleaned.length; index++) {
    const character = cleaned[index]!;
    if (cleaned.startsWith("**/", index)) {
      source += "(?:.*/)?";
      index += 2;
    } else if (cleaned.startsWith("**", index)) {
      source += ".*";
      index += 1;
    } else if (character === "*") {
      source += "[^/]*";
    } else if (character === "?") {
      source += "[^/]";
    } else {
      source += character.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${source}$`);
}
