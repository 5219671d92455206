import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, test } from "node:test";

import { makeTinyModel } from "./support/models.ts";

const cli = new URL("../bin/spillway.js", import.meta.url).pathname;

interface SpawnedWorker {
  child: ChildProcessWithoutNullStreams;
  url: string;
  logs: Array<Record<string, unknown>>;
}

/** Starts `spillway worker` as a user would, and waits for its "worker ready" log line. */
async function spawnWorker(args: string[], env: Record<string, string> = {}): Promise<SpawnedWorker> {
  const child = spawn(process.execPath, [cli, "worker", "--port", "0", "--threads", "1", "--gpu", "false", ...args], {
    env: { ...process.env, ...env },
  });
  const logs: Array<Record<string, unknown>> = [];
  let url: string | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      logs.push(entry);
      if (entry.msg === "worker listening") url = entry.url as string;
      if (entry.msg === "worker ready") resolve();
    });
    child.once("exit", (code) => reject(new Error(`worker exited with ${code} before it was ready`)));
  });
  await ready;
  assert.ok(url !== undefined);
  return { child, url, logs };
}

describe("worker process", () => {
  test("SIGTERM drains in-flight streams, then exits 0", async () => {
    const model = await makeTinyModel("endless.gguf", { eosWeight: -100 });
    const worker = await spawnWorker(["--model", model, "--name", "endless", "--drain-seconds", "20"]);

    const response = await fetch(`${worker.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "endless", messages: [{ role: "user", content: "story" }], max_tokens: 1500, stream: true }),
    });
    const reader = (response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>);
    await reader.read();
    const exited = once(worker.child, "exit");
    worker.child.kill("SIGTERM");

    await waitForDraining(worker.url);
    const readiness = await fetch(`${worker.url}/readyz`);
    assert.equal(readiness.status, 503);
    assert.equal(((await readiness.json()) as { state: string }).state, "draining");
    const rejected = await fetch(`${worker.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "endless", messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(rejected.status, 503);
    assert.equal(((await rejected.json()) as { error: { code: string } }).error.code, "worker_not_ready");

    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    assert.ok(rest.trimEnd().endsWith("data: [DONE]"), "the in-flight stream finished normally");
    assert.match(rest, /"finish_reason":"length"/);
    const [code] = (await exited) as [number];
    assert.equal(code, 0);
    assert.ok(worker.logs.some((entry) => entry.msg === "worker stopped"));
  });

  test("SIGTERM after Ctrl-C keeps draining", async () => {
    const model = await makeTinyModel("endless.gguf", { eosWeight: -100 });
    const worker = await spawnWorker(["--model", model, "--name", "endless", "--drain-seconds", "20"]);
    const response = await fetch(`${worker.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "endless", messages: [{ role: "user", content: "story" }], max_tokens: 600, stream: true }),
    });
    const reader = response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    await reader.read();
    const exited = once(worker.child, "exit");

    // What a terminal's Ctrl-C under `spillway up` does: SIGINT to the worker, then SIGTERM from the gateway.
    worker.child.kill("SIGINT");
    await waitForDraining(worker.url);
    worker.child.kill("SIGTERM");

    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    assert.ok(rest.trimEnd().endsWith("data: [DONE]"), "the in-flight stream finished normally");
    const [code] = (await exited) as [number];
    assert.equal(code, 0, "the worker exits 0 after draining");
  });

  test("drain timeout ends streams with an error event", async () => {
    const model = await makeTinyModel("endless.gguf", { eosWeight: -100 });
    const worker = await spawnWorker(["--model", model, "--name", "endless", "--drain-seconds", "0", "--context-size", "8192"]);
    const response = await fetch(`${worker.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "endless", messages: [{ role: "user", content: "story" }], max_tokens: 8000, stream: true }),
    });
    const exited = once(worker.child, "exit");
    const reader = (response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>);
    await reader.read();
    worker.child.kill("SIGTERM");
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    assert.match(rest, /"code":"worker_shutting_down"/);
    assert.doesNotMatch(rest, /\[DONE\]/);
    const [code] = (await exited) as [number];
    assert.equal(code, 0);
  });

  test("logs carry the request id, never the prompt", async () => {
    const model = await makeTinyModel("worker.gguf");
    const worker = await spawnWorker(["--model", model, "--name", "tiny"], { SPILLWAY_LOG_LEVEL: "debug" });
    const secret = "the dragon hides under the mill";
    const response = await fetch(`${worker.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "quest-7" },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: secret }], max_tokens: 8 }),
    });
    const body = (await response.json()) as { choices: Array<{ message: { content: string } }> };
    const exited = once(worker.child, "exit");
    worker.child.kill("SIGTERM");
    await exited;
    const requestLogs = worker.logs.filter((entry) => entry.requestId === "quest-7");
    assert.ok(requestLogs.length > 0, "the request's log lines carry its id");
    const everything = JSON.stringify(worker.logs);
    assert.ok(!everything.includes(secret), "the prompt is not logged");
    const reply = body.choices[0]?.message.content ?? "";
    if (reply.length >= 8) assert.ok(!everything.includes(reply), "the completion is not logged");
  });

  test("bad option exits 2 with a message", async () => {
    const child = spawn(process.execPath, [cli, "worker", "--model", "/tmp/x.gguf", "--slots", "zero"]);
    let stderr = "";
    child.stderr.on("data", (data: Buffer) => {
      stderr += data.toString();
    });
    const [code] = (await once(child, "exit")) as [number];
    assert.equal(code, 2);
    assert.match(stderr, /--slots/);
  });

  test("missing model file exits 1 with the path", async () => {
    const child = spawn(process.execPath, [cli, "worker", "--model", "/nonexistent/model.gguf", "--port", "0", "--gpu", "false"]);
    let stdout = "";
    child.stdout.on("data", (data: Buffer) => {
      stdout += data.toString();
    });
    const [code] = (await once(child, "exit")) as [number];
    assert.equal(code, 1);
    assert.match(stdout, /model failed to load/);
    assert.match(stdout, /\/nonexistent\/model\.gguf/);
  });
});

async function waitForDraining(url: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const response = await fetch(`${url}/readyz`);
    if (response.status === 503) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail("the worker never reported draining");
}
