import { existsSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import {
  findInvalidOption,
  tinyModelDefaults,
  tinyModelLimits,
  tinyModelQuants,
  writeTinyModel,
  type TinyModelOptions,
  type TinyModelQuant,
  type TinyModelSummary,
} from "../../worker/tiny-model/index.ts";
import { UsageError } from "../options.ts";

const defaults = tinyModelDefaults;
const limits = tinyModelLimits;

const help = `Usage: spillway tiny-model --out <file> [options]

Writes a small llama GGUF model with random weights, for offline tests and smoke tests.
Its replies are printable ASCII nonsense, and the same options always give the same file.

Options:
  --out <file>            Path of the GGUF file to write; an existing file is replaced (required)
  --quant <type>          Weight type: ${tinyModelQuants.join(", ")} (default ${defaults.quant})
  --layers <n>            Transformer blocks, ${limits.layers.min} to ${limits.layers.max} (default ${defaults.layers})
  --embedding <n>         Hidden size, a multiple of ${limits.embedding.multipleOf} from ${limits.embedding.min} to ${limits.embedding.max} (default ${defaults.embedding})
  --seed <n>              Seed of the random weights, ${limits.seed.min} to ${limits.seed.max} (default ${defaults.seed})
  --eos-weight <w>        How strongly replies tend to end: higher ends sooner, 0 or less
                          rarely ends before the token limit; write negative values as
                          --eos-weight=-1 (default ${defaults.eosWeight})
  --context-length <n>    Trained context length in tokens, written to the metadata (default ${defaults.contextLength})
  --help                  Show this help
`;

/** Command-line option name of each `TinyModelOptions` field, for error messages. */
const optionNames = {
  outPath: "out",
  quant: "quant",
  layers: "layers",
  embedding: "embedding",
  seed: "seed",
  eosWeight: "eos-weight",
  contextLength: "context-length",
} as const satisfies Record<keyof TinyModelOptions, string>;

/** Parses `spillway tiny-model` arguments. Returns undefined after printing the help for --help. */
export function parseTinyModelOptions(args: string[]): TinyModelOptions | undefined {
  const values = parseCommandLine(args);
  if (values.help) {
    process.stdout.write(help);
    return undefined;
  }
  if (values.out === undefined || values.out === "") {
    throw new UsageError("Missing --out. Pass the path of the GGUF file to write, for example --out /tmp/tiny.gguf.");
  }
  const directory = path.dirname(path.resolve(values.out));
  if (!existsSync(directory)) {
    throw new UsageError(`Invalid value for --out: '${values.out}'. The directory ${directory} does not exist.`);
  }

  const options: TinyModelOptions = {
    outPath: values.out,
    quant: (values.quant ?? defaults.quant) as TinyModelQuant,
    layers: parseWholeNumber(values.layers, defaults.layers),
    embedding: parseWholeNumber(values.embedding, defaults.embedding),
    seed: parseWholeNumber(values.seed, defaults.seed),
    eosWeight: parseDecimal(values["eos-weight"], defaults.eosWeight),
    contextLength: parseWholeNumber(values["context-length"], defaults.contextLength),
  };
  const invalid = findInvalidOption(options);
  if (invalid !== undefined) {
    const name = optionNames[invalid.option];
    const raw = values[name] ?? String(options[invalid.option]);
    throw new UsageError(`Invalid value for --${name}: '${raw}'. Expected ${invalid.expected}.`);
  }
  return options;
}

export async function runTinyModelCommand(args: string[]): Promise<void> {
  const options = parseTinyModelOptions(args);
  if (options === undefined) {
    return;
  }
  const summary = await writeTinyModel(options);
  process.stdout.write(`${describeSummary(summary)}\n`);
}

/** Formats the one-line report printed after a model is written. */
export function describeSummary(summary: TinyModelSummary): string {
  const shape = `${summary.layers} layers, embedding ${summary.embedding}, ${summary.headCount} heads`;
  const parameters = summary.parameters.toLocaleString("en-US");
  return `Wrote ${summary.outPath}: ${summary.quant}, ${formatBytes(summary.bytes)}, ${parameters} parameters (${shape})`;
}

function parseCommandLine(args: string[]) {
  try {
    const { values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        out: { type: "string" },
        quant: { type: "string" },
        layers: { type: "string" },
        embedding: { type: "string" },
        seed: { type: "string" },
        "eos-weight": { type: "string" },
        "context-length": { type: "string" },
        help: { type: "boolean", default: false },
      },
    });
    return values;
  } catch (error) {
    if (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS")) {
      const sentence = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
      throw new UsageError(`${sentence} Run \`spillway tiny-model --help\` for the options.`);
    }
    throw error;
  }
}

/** Returns NaN for text that is not a whole number, so validation reports it with the accepted range. */
function parseWholeNumber(value: string | undefined, fallback: number): number {
  if (value === undefined) {
    return fallback;
  }
  return /^-?\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
}

function parseDecimal(value: string | undefined, fallback: number): number {
  if (value === undefined) {
    return fallback;
  }
  return /^-?(\d+\.?\d*|\.\d+)(e-?\d+)?$/i.test(value.trim()) ? Number(value) : Number.NaN;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) {
    return `${(bytes / 1024).toFixed(1)} KiB`;
  }
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}
