import path from "node:path";
import { parseArgs } from "node:util";

import { usableCpuCount } from "../worker/threads.ts";

export interface BenchOptions {
  /** CPU threads for every engine in the run: in-process, worker and llama-server. */
  threads: number;
  layers: number;
  embedding: number;
  maxTokens: number;
  /** Measured requests per scenario after the warm-up, rounded up to whole batches at high concurrency. */
  requests: number;
  /** Slots of the worker, `--parallel` of llama-server, and the high concurrency level. */
  concurrency: number;
  /** Tokens of context per slot. */
  contextSize: number;
  /** The llama-server binary. The default is where `scripts/build-llama-server.sh` puts it. */
  llamaServer: string;
  /** Whether `--llama-server` was given, so a missing binary is an error rather than a skipped row. */
  llamaServerRequired: boolean;
  quick: boolean;
  out: string | undefined;
}

export const usage = `Usage: npm run bench:worker -- [options]

Measures node-llama-cpp in-process, the Spillway worker over HTTP and llama-server on one tiny model.

Options:
  --threads <n>        CPU threads everywhere (default: the CPUs this process may use)
  --layers <n>         Transformer blocks of the generated model (default 8)
  --embedding <n>      Embedding width, a multiple of 32 (default 512)
  --max-tokens <n>     Tokens every reply decodes (default 128)
  --requests <n>       Measured requests per scenario, rounded up to whole batches at high
                       concurrency (default 24)
  --concurrency <n>    Worker slots, llama-server --parallel and the high concurrency level (default 8)
  --context-size <n>   Tokens of context per slot (default 1024)
  --llama-server <path>  llama-server binary (default .cache/llama.cpp/build/bin/llama-server)
  --quick              Smoke mode: a 2x64 model, 16 tokens, 2 requests per scenario
  --out <file>         Also write the markdown report to this file
  --help               Show this help
`;

const repositoryRoot = path.resolve(import.meta.dirname, "..");
export const defaultLlamaServerPath = path.join(repositoryRoot, ".cache", "llama.cpp", "build", "bin", "llama-server");

/** Parses argv. Returns undefined after printing the help when `--help` is given. */
export function parseBenchOptions(args: string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      threads: { type: "string" },
      layers: { type: "string" },
      embedding: { type: "string" },
      "max-tokens": { type: "string" },
      requests: { type: "string" },
      concurrency: { type: "string" },
      "context-size": { type: "string" },
      "llama-server": { type: "string" },
      quick: { type: "boolean", default: false },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(usage);
    return undefined;
  }
  const quick = values.quick;
  const embedding = parseWholeNumber(values.embedding, "--embedding", quick ? 64 : 512, 32, 1024);
  if (embedding % 32 !== 0) throw new Error(`Invalid value for --embedding: ${embedding}. Expected a multiple of 32.`);
  const maxTokens = parseWholeNumber(values["max-tokens"], "--max-tokens", quick ? 16 : 128, 2, 4096);
  const contextSize = parseWholeNumber(values["context-size"], "--context-size", quick ? 256 : 1024, 64, 65_536);
  if (contextSize < maxTokens + 128) {
    throw new Error(`--context-size ${contextSize} leaves no room for the prompt. Use at least --max-tokens + 128.`);
  }
  return {
    threads: parseWholeNumber(values.threads, "--threads", usableCpuCount(), 1, 256),
    layers: parseWholeNumber(values.layers, "--layers", quick ? 2 : 8, 1, 32),
    embedding,
    maxTokens,
    requests: parseWholeNumber(values.requests, "--requests", quick ? 2 : 24, 1, 10_000),
    concurrency: parseWholeNumber(values.concurrency, "--concurrency", 8, 2, 256),
    contextSize,
    llamaServer: values["llama-server"] ?? defaultLlamaServerPath,
    llamaServerRequired: values["llama-server"] !== undefined,
    quick,
    out: values.out,
  };
}

function parseWholeNumber(value: string | undefined, option: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!/^\d+$/.test(value.trim()) || parsed < min || parsed > max) {
    throw new Error(`Invalid value for ${option}: '${value}'. Expected a whole number from ${min} to ${max}.`);
  }
  return parsed;
}
