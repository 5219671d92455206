import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const runFile = promisify(execFile);
const nodeLlamaCppDirectory = path.resolve(import.meta.dirname, "..", "node_modules", "node-llama-cpp");

/** Describes the machine and the software versions a run measured, for the report's environment table. */
export async function describeEnvironment(llamaServer: string | undefined): Promise<Record<string, string>> {
  const [nodeLlamaCppVersion, llamaCppCommit, serverVersion] = await Promise.all([
    readNodeLlamaCppVersion(),
    readBundledLlamaCppCommit(),
    llamaServer === undefined ? Promise.resolve("not run") : readLlamaServerVersion(llamaServer),
  ]);
  return {
    CPU: cpus()[0]?.model.trim() ?? "unknown",
    "CPU cores usable": String(availableParallelism()),
    Node: process.version,
    "node-llama-cpp": nodeLlamaCppVersion,
    "llama.cpp commit (node-llama-cpp bundle)": llamaCppCommit,
    "llama-server": serverVersion,
  };
}

/** Formats the 1-, 5- and 15-minute load averages as `uptime` prints them. */
export function formatLoadAverage(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(", ");
}

async function readNodeLlamaCppVersion(): Promise<string> {
  try {
    const manifest = JSON.parse(await readFile(path.join(nodeLlamaCppDirectory, "package.json"), "utf8")) as { version?: string };
    return manifest.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** Reads the commit of node-llama-cpp's llama.cpp bundle, the source of both engines in the benchmark. */
async function readBundledLlamaCppCommit(): Promise<string> {
  try {
    const bundle = path.join(nodeLlamaCppDirectory, "llama", "gitRelease.bundle");
    const { stdout } = await runFile("git", ["bundle", "list-heads", bundle]);
    return stdout.split(/\s/)[0] ?? "unknown";
  } catch {
    return "unknown (git could not read the bundle)";
  }
}

async function readLlamaServerVersion(binary: string): Promise<string> {
  try {
    const { stdout, stderr } = await runFile(binary, ["--version"]);
    const version = /version: (.+)/.exec(stdout + stderr)?.[1]?.trim();
    const displayedPath = path.relative(process.cwd(), binary) || binary;
    return version === undefined ? displayedPath : `${version} (${displayedPath})`;
  } catch {
    return `unknown (${binary})`;
  }
}
