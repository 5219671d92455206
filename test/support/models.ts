import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { tinyModelDefaults, writeTinyModel, type TinyModelOptions } from "../../worker/tiny-model/index.ts";

let directory: string | undefined;

/** Writes a tiny model into a per-process temporary folder that is removed when the process exits. */
export async function makeTinyModel(fileName: string, options: Partial<Omit<TinyModelOptions, "outPath">> = {}): Promise<string> {
  if (directory === undefined) {
    const created = mkdtempSync(path.join(tmpdir(), "spillway-test-"));
    directory = created;
    process.on("exit", () => rmSync(created, { recursive: true, force: true }));
  }
  const outPath = path.join(directory, fileName);
  await writeTinyModel({ ...tinyModelDefaults, ...options, outPath });
  return outPath;
}
