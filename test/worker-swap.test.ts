import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { getLlama } from "node-llama-cpp";

import { parseWorkerOptions } from "../cli/commands/worker.ts";
import { freeRamBytes, planSwapMemory } from "../worker/memory.ts";
import { makeTinyModel } from "./support/models.ts";
import { readEvents, startTestWorker, type TestWorker } from "./support/worker.ts";

const keyVariable = "SPILLWAY_TEST_SWAP_ADMIN_KEY";
const adminKey = "swap-test-key";
process.env[keyVariable] = adminKey;

interface Readiness {
  state: string;
  quant: string | null;
  swapping: boolean;
  ladder: string[];
  decodeTokensPerSecond: Record<string, number>;
}

interface SwapBody {
  quant: string;
  previousQuant: string | null;
  mode: string;
  seconds: number;
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Models that never end a reply by themselves, so `max_tokens` sets every reply's length. */
async function makeLadder() {
  return [
    { quant: "F16", model: await makeTinyModel("swap-f16.gguf", { quant: "f16", eosWeight: -100 }) },
    { quant: "Q8_0", model: await makeTinyModel("swap-q8_0.gguf", { quant: "q8_0", eosWeight: -100 }) },
    { quant: "Q4_0", model: await makeTinyModel("swap-q4_0.gguf", { quant: "q4_0", eosWeight: -100 }) },
  ];
}

/** Posts to the admin endpoint; `authorization` null sends no header. */
function swapVariant(url: string, body: unknown, authorization: string | null = `Bearer ${adminKey}`): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (authorization !== null) headers.authorization = authorization;
  return fetch(`${url}/admin/variant`, { method: "POST", headers, body: JSON.stringify(body) });
}

async function readiness(url: string): Promise<{ status: number; body: Readiness }> {
  const response = await fetch(`${url}/readyz`);
  return { status: response.status, body: (await response.json()) as Readiness };
}

async function metricLines(url: string, prefix: string): Promise<string[]> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text.split("\n").filter((line) => line.startsWith(prefix));
}

async function metricValue(url: string, series: string): Promise<number | undefined> {
  const [line] = await metricLines(url, `${series} `);
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

async function waitFor(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function chat(url: string, stream: boolean, maxTokens: number): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "ladder", messages: [{ role: "user", content: "Tell a story." }], max_tokens: maxTokens, stream }),
  });
}

/** Starts a long stream and resolves once its first event arrived, so the stream occupies a slot on the serving variant. */
async function holdSlot(url: string, maxTokens: number) {
  const response = await chat(url, true, maxTokens);
  const reader = response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  let text = new TextDecoder().decode((await reader.read()).value);
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += new TextDecoder().decode(value);
    }
  })();
  return { quant: response.headers.get("x-spillway-quant"), rest };
}

interface Outcome {
  status: number;
  quant: string | null;
  complete: boolean;
}

/** Sends one request and checks its body is a whole reply: a stream ending in `[DONE]`, or a completion of `maxTokens`. */
async function completeRequest(url: string, stream: boolean): Promise<Outcome> {
  const maxTokens = 12;
  const response = await chat(url, stream, maxTokens);
  const quant = response.headers.get("x-spillway-quant");
  if (stream) {
    const events = await readEvents(response);
    return { status: response.status, quant, complete: events.at(-1) === "[DONE]" && !events.some((event) => typeof event === "object" && event !== null && "error" in event) };
  }
  const body = (await response.json()) as { choices?: Array<{ message: { content: string } }>; usage?: { completion_tokens: number } };
  return { status: response.status, quant, complete: typeof body.choices?.[0]?.message.content === "string" && body.usage?.completion_tokens === maxTokens };
}

describe("variant swap", () => {
  let worker: TestWorker;

  before(async () => {
    worker = await startTestWorker({ name: "ladder", variants: await makeLadder(), slots: 4, maxQueue: 32, contextSize: 4096, swapMode: "overlap", adminKeyEnv: keyVariable });
  });

  after(async () => {
    await worker.worker.stop();
  });

  test("swaps under load without a failed request", async () => {
    const outcomes: Outcome[] = [];
    let running = true;
    const clients = Array.from({ length: 6 }, async (_, client) => {
      for (let round = 0; running; round++) outcomes.push(await completeRequest(worker.url, (client + round) % 2 === 0));
    });
    const results: SwapBody[] = [];
    for (const quant of ["Q8_0", "Q4_0", "F16"]) {
      const before = outcomes.length;
      await waitFor(() => outcomes.length >= before + 8, "requests between swaps");
      const response = await swapVariant(worker.url, { quant });
      assert.equal(response.status, 200);
      results.push((await response.json()) as SwapBody);
    }
    const before = outcomes.length;
    await waitFor(() => outcomes.length >= before + 8, "requests after the last swap");
    running = false;
    await Promise.all(clients);

    assert.ok(outcomes.length >= 30, `${outcomes.length} requests`);
    assert.deepEqual(outcomes.filter((outcome) => outcome.status !== 200), []);
    assert.deepEqual(outcomes.filter((outcome) => !outcome.complete), []);
    assert.deepEqual(new Set(outcomes.map((outcome) => outcome.quant)), new Set(["F16", "Q8_0", "Q4_0"]));
    assert.deepEqual(results.map((result) => [result.previousQuant, result.quant, result.mode]), [
      ["F16", "Q8_0", "overlap"],
      ["Q8_0", "Q4_0", "overlap"],
      ["Q4_0", "F16", "overlap"],
    ]);
  });

  test("decode rates appear per variant", async () => {
    const { body } = await readiness(worker.url);
    assert.deepEqual(Object.keys(body.decodeTokensPerSecond).sort(), ["F16", "Q4_0", "Q8_0"]);
    assert.ok(Object.values(body.decodeTokensPerSecond).every((rate) => rate > 0));
    const gauges = await metricLines(worker.url, "spillway_worker_decode_tokens_per_second{");
    assert.equal(gauges.length, 3);
  });

  test("readyz and metrics follow a slow swap", async () => {
    const holder = await holdSlot(worker.url, 1500);
    assert.equal(holder.quant, "F16");
    const swapping = swapVariant(worker.url, { quant: "Q4_0" });
    await waitFor(async () => (await readiness(worker.url)).body.quant === "Q4_0", "new requests to go to Q4_0");

    const during = await readiness(worker.url);
    assert.equal(during.status, 200);
    assert.equal(during.body.swapping, true);
    assert.deepEqual(during.body.ladder, ["F16", "Q8_0", "Q4_0"]);
    assert.equal(await metricValue(worker.url, "spillway_worker_swap_in_progress"), 1);
    assert.deepEqual(await metricLines(worker.url, "spillway_worker_model_info{"), ['spillway_worker_model_info{model="ladder",quant="Q4_0"} 1']);
    const concurrent = await swapVariant(worker.url, { quant: "Q8_0" });
    assert.equal(concurrent.status, 409);
    assert.equal(((await concurrent.json()) as ErrorBody).error.code, "swap_in_progress");

    assert.match(await holder.rest, /data: \[DONE\]\n\n$/, "the in-flight stream finishes on the old variant");
    const response = await swapping;
    assert.equal(response.status, 200);
    const result = (await response.json()) as SwapBody;
    assert.equal(result.previousQuant, "F16");
    assert.ok(result.seconds > 0);
    assert.equal((await readiness(worker.url)).body.swapping, false);
    assert.equal(await metricValue(worker.url, "spillway_worker_swap_in_progress"), 0);
    assert.equal(await metricValue(worker.url, 'spillway_worker_variant_swaps_total{from="F16",to="Q4_0"}'), 1);
  });

  test("swap to the current variant answers at once", async () => {
    const response = await swapVariant(worker.url, { quant: "q4_0" });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { quant: "Q4_0", previousQuant: "Q4_0", mode: "none", seconds: 0 });
  });

  test("unknown quant is a 400 naming quant", async () => {
    const response = await swapVariant(worker.url, { quant: "Q2_K" });
    assert.equal(response.status, 400);
    const body = (await response.json()) as ErrorBody;
    assert.equal(body.error.param, "quant");
    assert.match(body.error.message, /F16, Q8_0, Q4_0/);
  });

  test("missing quant is a 400 naming quant", async () => {
    const response = await swapVariant(worker.url, {});
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as ErrorBody).error.param, "quant");
  });

  test("missing admin key is a 401", async () => {
    const response = await swapVariant(worker.url, { quant: "F16" }, null);
    assert.equal(response.status, 401);
    assert.equal(((await response.json()) as ErrorBody).error.code, "invalid_api_key");
  });

  test("wrong admin key is a 401", async () => {
    const response = await swapVariant(worker.url, { quant: "F16" }, "Bearer not-the-key");
    assert.equal(response.status, 401);
    assert.equal(((await response.json()) as ErrorBody).error.type, "authentication_error");
  });
});

describe("drain-mode swap", () => {
  let worker: TestWorker;

  before(async () => {
    const [f16, , q4] = await makeLadder();
    worker = await startTestWorker({ name: "ladder", variants: [f16!, q4!], slots: 1, maxQueue: 2, contextSize: 4096, swapMode: "drain", adminKeyEnv: keyVariable, drainSeconds: 1 });
  });

  after(async () => {
    await worker.worker.stop();
  });

  test("readiness drops until the new variant serves", async () => {
    const holder = await holdSlot(worker.url, 1500);
    const swapping = swapVariant(worker.url, { quant: "Q4_0" });
    await waitFor(async () => (await readiness(worker.url)).status === 503, "readiness to drop");
    const during = await readiness(worker.url);
    assert.equal(during.body.state, "swapping");
    assert.equal(during.body.swapping, true);

    const queued = completeRequest(worker.url, false);
    await waitFor(async () => (await metricValue(worker.url, "spillway_worker_queue_depth")) === 1, "a request to queue");
    assert.match(await holder.rest, /data: \[DONE\]\n\n$/);
    const result = (await (await swapping).json()) as SwapBody;
    assert.equal(result.mode, "drain");
    const outcome = await queued;
    assert.equal(outcome.status, 200);
    assert.equal(outcome.quant, "Q4_0");
    assert.ok(outcome.complete);
    const after = await readiness(worker.url);
    assert.equal(after.status, 200);
    assert.equal(after.body.state, "ready");
    assert.equal(after.body.quant, "Q4_0");
  });

  test("shutdown during a swap still stops", async () => {
    const target = (await readiness(worker.url)).body.quant === "F16" ? "Q4_0" : "F16";
    const holder = await holdSlot(worker.url, 3000);
    const swapping = swapVariant(worker.url, { quant: target }).then((response) => response.status, () => "closed");
    await waitFor(async () => (await readiness(worker.url)).body.swapping, "the swap to start");
    await worker.worker.stop();
    await holder.rest;
    assert.ok(["closed", 200, 503].includes(await swapping));
    await assert.rejects(fetch(`${worker.url}/healthz`), "the server is closed");
  });
});

describe("admin without a key", () => {
  const unsetVariable = "SPILLWAY_TEST_UNSET_ADMIN_KEY";
  let worker: TestWorker;

  before(async () => {
    delete process.env[unsetVariable];
    worker = await startTestWorker({ name: "ladder", adminKeyEnv: unsetVariable });
  });

  after(async () => {
    await worker.worker.stop();
  });

  test("admin endpoint is a 403 naming the variable", async () => {
    const response = await swapVariant(worker.url, { quant: "Q8_0" });
    assert.equal(response.status, 403);
    const body = (await response.json()) as ErrorBody;
    assert.equal(body.error.code, "admin_disabled");
    assert.match(body.error.message, new RegExp(unsetVariable));
  });

  test("one-model ladder comes from the GGUF", async () => {
    const { body } = await readiness(worker.url);
    assert.deepEqual(body.ladder, ["Q8_0"]);
    assert.equal(body.swapping, false);
  });
});

describe("failed swap", () => {
  let worker: TestWorker;

  before(async () => {
    const good = await makeTinyModel("swap-good.gguf");
    const broken = path.join(path.dirname(good), "broken.gguf");
    writeFileSync(broken, "not a GGUF file");
    worker = await startTestWorker({ name: "ladder", variants: [{ quant: "Q8_0", model: good }, { quant: "Q4_K_M", model: broken }], swapMode: "drain", adminKeyEnv: keyVariable });
  });

  after(async () => {
    await worker.worker.stop();
  });

  test("failed load reloads the previous variant", async () => {
    const response = await swapVariant(worker.url, { quant: "Q4_K_M" });
    assert.equal(response.status, 500);
    const body = (await response.json()) as ErrorBody;
    assert.equal(body.error.code, "swap_failed");
    assert.match(body.error.message, /serves Q8_0 again/);
    const after = await readiness(worker.url);
    assert.equal(after.status, 200);
    assert.equal(after.body.quant, "Q8_0");
    assert.equal((await completeRequest(worker.url, false)).status, 200);
  });
});

describe("swap memory plan", () => {
  const engine = { slots: 4, threads: 1, contextSize: 4096, modelsDirectory: "/nonexistent", gpu: false as const };

  test("estimate comes from the GGUF", async () => {
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: 1 });
    try {
      const plan = await planSwapMemory(llama, await makeTinyModel("plan.gguf"), engine);
      assert.equal(plan.estimate, "gguf");
      assert.ok(plan.ram.requiredBytes > 0);
      assert.ok(plan.ram.marginBytes >= llama.ramPaddingSize);
      assert.equal(plan.mode, plan.ram.requiredBytes + plan.ram.marginBytes <= plan.ram.freeBytes ? "overlap" : "drain");
    } finally {
      await llama.dispose();
    }
  });

  test("unreadable GGUF falls back to its file size", async () => {
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: 1 });
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-plan-"));
    try {
      const file = path.join(directory, "broken.gguf");
      writeFileSync(file, "x".repeat(1000));
      const plan = await planSwapMemory(llama, file, engine);
      assert.equal(plan.estimate, "file size");
      assert.equal(plan.ram.requiredBytes, 1000);
    } finally {
      rmSync(directory, { recursive: true, force: true });
      await llama.dispose();
    }
  });
});

describe("worker options", () => {
  let first: string;
  let second: string;

  before(async () => {
    first = await makeTinyModel("option-f16.gguf", { quant: "f16" });
    second = await makeTinyModel("option-q4_0.gguf", { quant: "q4_0" });
  });

  test("variants form the ladder", () => {
    const options = parseWorkerOptions(["--variant", `f16=${first}`, "--variant", `Q4_0=${second}`, "--start-variant", "Q4_0", "--threads", "1"]);
    assert.deepEqual(options?.variants, [{ quant: "F16", model: first }, { quant: "Q4_0", model: second }]);
    assert.equal(options?.startVariant, "Q4_0");
    assert.equal(options?.name, "option");
    assert.equal(options?.model, undefined);
  });

  test("unknown quant is a usage error", () => {
    assert.throws(() => parseWorkerOptions(["--variant", `Q9_X=${first}`]), /Unknown quantization 'Q9_X'/);
  });

  test("duplicate quant is a usage error", () => {
    assert.throws(() => parseWorkerOptions(["--variant", `F16=${first}`, "--variant", `f16=${second}`]), /given twice/);
  });

  test("missing file is a usage error", () => {
    assert.throws(() => parseWorkerOptions(["--variant", "Q8_0=/nonexistent/model.gguf"]), /no model file at \/nonexistent\/model\.gguf/);
  });

  test("start variant off the ladder is a usage error", () => {
    assert.throws(() => parseWorkerOptions(["--variant", `F16=${first}`, "--start-variant", "Q8_0"]), /not on the ladder/);
  });

  test("start variant from the environment", () => {
    const ladderArgs = ["--variant", `F16=${first}`, "--variant", `Q4_0=${second}`, "--start-variant-env", "SPILLWAY_TEST_START_VARIANT"];
    process.env.SPILLWAY_TEST_START_VARIANT = "q4_0";
    try {
      assert.equal(parseWorkerOptions(ladderArgs)?.startVariant, "Q4_0", "a rung named in the variable is the start variant");
      process.env.SPILLWAY_TEST_START_VARIANT = "Q8_0";
      assert.equal(parseWorkerOptions(ladderArgs)?.startVariant, undefined, "a quant off the ladder is ignored");
      assert.equal(parseWorkerOptions([...ladderArgs, "--start-variant", "F16"])?.startVariant, "F16", "--start-variant wins");
    } finally {
      delete process.env.SPILLWAY_TEST_START_VARIANT;
    }
    assert.equal(parseWorkerOptions(ladderArgs)?.startVariant, undefined, "an unset variable leaves the first rung");
  });

  test("model and variant together is a usage error", () => {
    assert.throws(() => parseWorkerOptions(["--model", first, "--variant", `F16=${first}`]), /either --model or --variant/);
  });

  test("unknown swap mode is a usage error", () => {
    assert.throws(() => parseWorkerOptions(["--model", first, "--swap-mode", "fast"]), /--swap-mode/);
  });
});

describe("free memory", () => {
  let directory: string;

  before(() => {
    directory = mkdtempSync(path.join(tmpdir(), "spillway-cgroup-"));
    writeFileSync(path.join(directory, "memory.current"), "400000\n");
  });

  after(() => {
    rmSync(directory, { recursive: true, force: true });
  });

  test("cgroup limit caps free RAM", () => {
    writeFileSync(path.join(directory, "memory.max"), "1000000\n");
    assert.equal(freeRamBytes(directory), 600_000);
  });

  test("unlimited cgroup leaves system free RAM", () => {
    writeFileSync(path.join(directory, "memory.max"), "max\n");
    assert.ok(freeRamBytes(directory) > 1_000_000);
  });
});
