import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { describe, test } from "node:test";

import { makeTinyModel } from "./support/models.ts";

const cli = new URL("../bin/spillway.js", import.meta.url).pathname;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("spillway up", () => {
  test("serves a model and stops its workers on SIGTERM", async () => {
    const model = await makeTinyModel("up.gguf");
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-up-"));
    const child = spawn(process.execPath, [cli, "up", "--model", model, "--port", "0", "--state-file", path.join(directory, "usage.jsonl")], {
      env: { ...process.env, SPILLWAY_LOG_LEVEL: "info" },
    });
    const workerPids: number[] = [];
    let url: string | undefined;
    const ready = new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout }).on("line", (line) => {
        const entry = JSON.parse(line) as { msg?: string; url?: string; workerPid?: number };
        if (entry.msg === "gateway listening") url = entry.url;
        if (entry.msg === "replica starting" && entry.workerPid !== undefined) workerPids.push(entry.workerPid);
        if (entry.msg === "replica ready") resolve();
      });
      child.once("exit", (code) => reject(new Error(`spillway up exited with ${code} before a replica was ready`)));
    });
    await ready;
    assert.ok(url !== undefined);

    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "up", messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("x-spillway-backend"), "local");

    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const [code] = (await exited) as [number];
    assert.equal(code, 0);
    assert.equal(workerPids.length, 1);
    for (const pid of workerPids) assert.equal(processAlive(pid), false, `worker ${pid} stopped with the controller`);
  });

  test("workers exit when the controller is killed", async () => {
    const model = await makeTinyModel("up.gguf");
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-up-"));
    const child = spawn(process.execPath, [cli, "up", "--model", model, "--port", "0", "--state-file", path.join(directory, "usage.jsonl")]);
    const workerPid = await new Promise<number>((resolve, reject) => {
      let pid: number | undefined;
      createInterface({ input: child.stdout }).on("line", (line) => {
        const entry = JSON.parse(line) as { msg?: string; workerPid?: number };
        if (entry.msg === "replica starting") pid = entry.workerPid;
        if (entry.msg === "replica ready" && pid !== undefined) resolve(pid);
      });
      child.once("exit", (code) => reject(new Error(`spillway up exited with ${code} before a replica was ready`)));
    });
    child.kill("SIGKILL");
    const deadline = Date.now() + 15_000;
    while (processAlive(workerPid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(processAlive(workerPid), false, "the orphaned worker shut itself down");
  });

  test("bad config exits 1 naming the key", async () => {
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-up-"));
    const file = path.join(directory, "spillway.yaml");
    writeFileSync(file, "pools:\n  - name: npc\n    variants: [{ quant: Q4_K_M, model: a.gguf }]\n    replicas: { min: 3, max: 1 }\n");
    const child = spawn(process.execPath, [cli, "up", "--config", file]);
    let stderr = "";
    child.stderr.on("data", (data: Buffer) => {
      stderr += data.toString();
    });
    const [code] = (await once(child, "exit")) as [number];
    assert.equal(code, 1);
    assert.match(stderr, /pools\[0\]\.replicas\.min/);
  });

  test("unreachable model names the offline way", async () => {
    // HF_ENDPOINT points node-llama-cpp's downloads at a closed local port, so nothing leaves the machine.
    const child = spawn(
      process.execPath,
      [cli, "up", "--model", "hf:nobody/nothing-GGUF:Q4_K_M", "--models-dir", mkdtempSync(path.join(tmpdir(), "spillway-models-"))],
      { env: { ...process.env, HF_ENDPOINT: "http://127.0.0.1:9", MODEL_ENDPOINT: "http://127.0.0.1:9" } },
    );
    let stderr = "";
    child.stderr.on("data", (data: Buffer) => {
      stderr += data.toString();
    });
    const [code] = (await once(child, "exit")) as [number];
    assert.equal(code, 1);
    assert.match(stderr, /--model/);
    assert.match(stderr, /spillway tiny-model/);
  });
});

/** Runs the CLI to its exit and returns the exit code and standard error. */
async function runToExit(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args], { env });
  let stderr = "";
  child.stderr.on("data", (data: Buffer) => {
    stderr += data.toString();
  });
  const [code] = (await once(child, "exit")) as [number];
  return { code, stderr };
}

describe("startup errors", () => {
  test("missing tenant key variable", async () => {
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-up-"));
    const model = await makeTinyModel("up-startup.gguf");
    const file = path.join(directory, "spillway.yaml");
    writeFileSync(file, `auth: { keys: [{ name: studio, keyEnv: SPILLWAY_TEST_UNSET_KEY }] }\npools: [{ name: npc, variants: [{ quant: Q8_0, model: ${model} }] }]\n`);
    const { code, stderr } = await runToExit(["up", "--config", file, "--port", "0", "--state-file", path.join(directory, "usage.jsonl")]);
    assert.equal(code, 1, "exit code");
    assert.match(stderr, /set the environment variable SPILLWAY_TEST_UNSET_KEY/, "the message names the variable");
    assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
  });

  test("declared quant differs from the file", async () => {
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-up-"));
    const model = await makeTinyModel("up-startup.gguf");
    const file = path.join(directory, "spillway.yaml");
    writeFileSync(file, `pools: [{ name: npc, variants: [{ quant: Q4_K_M, model: ${model} }] }]\n`);
    const { code, stderr } = await runToExit(["up", "--config", file, "--port", "0", "--state-file", path.join(directory, "usage.jsonl")]);
    assert.equal(code, 1, "exit code");
    assert.match(stderr, /declares the variant Q4_K_M, but .* is Q8_0 by its GGUF header/, "the message names both quants");
  });

  test("controller without kubeconfig", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "spillway-home-"));
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, KUBECONFIG: "" };
    delete env.KUBERNETES_SERVICE_HOST;
    const missingDefault = await runToExit(["controller"], env);
    assert.equal(missingDefault.code, 1, "exit code without any kubeconfig");
    assert.match(missingDefault.stderr, /No Kubernetes configuration found.*--kubeconfig/, "the message says what to pass");

    const missingFile = await runToExit(["controller", "--kubeconfig", path.join(home, "nope")], env);
    assert.equal(missingFile.code, 2, "exit code for a missing --kubeconfig file");
    assert.match(missingFile.stderr, /--kubeconfig .*nope: no such file/, "the message names the file");
    assert.doesNotMatch(missingFile.stderr, /\n\s+at /, "no stack trace");
  });
});
