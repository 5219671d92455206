import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { makeTinyModel } from "./support/models.ts";
import { postRaw, startTestWorker, type TestWorker } from "./support/worker.ts";

let worker: TestWorker;

before(async () => {
  // One slot, one queue place, and a model that never ends a reply, so requests keep the slot until they are aborted.
  const endless = await makeTinyModel("endless.gguf", { eosWeight: -100 });
  worker = await startTestWorker({ name: "endless", slots: 1, maxQueue: 1, contextSize: 4096 }, endless);
});

after(async () => {
  await worker.worker.stop();
});

function longStream(signal: AbortSignal): Promise<Response> {
  return fetch(`${worker.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "endless", messages: [{ role: "user", content: "Tell a long story." }], max_tokens: 3000, stream: true }),
    signal,
  });
}

async function metricValue(name: string): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  const line = text.split("\n").find((entry) => entry.startsWith(`${name} `));
  assert.ok(line !== undefined, `metric ${name} not found`);
  return Number(line.split(" ")[1]);
}

async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function readFirstEvent(response: Response): Promise<void> {
  const reader = (response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>);
  const { value } = await reader.read();
  assert.ok(value !== undefined, "the stream sent a first event");
  assert.ok(new TextDecoder().decode(value).startsWith("data: "));
  reader.releaseLock();
}

describe("slots and queue", () => {
  test("client abort frees the slot", async () => {
    const completionsBefore = await metricValue('spillway_worker_tokens_total{kind="completion"}');
    const controller = new AbortController();
    const response = await longStream(controller.signal);
    await readFirstEvent(response);
    assert.equal(await metricValue('spillway_worker_slots{state="busy"}'), 1);

    controller.abort();
    await waitFor(async () => (await metricValue('spillway_worker_slots{state="busy"}')) === 0, "the slot to be freed");
    const decoded = (await metricValue('spillway_worker_tokens_total{kind="completion"}')) - completionsBefore;
    assert.ok(decoded < 3000, `generation stopped early (${decoded} tokens decoded)`);

    const next = await worker.client.chat.completions.create({ model: "endless", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    assert.equal(next.choices[0]?.finish_reason, "length");
  });

  test("full queue answers 429 with Retry-After", async () => {
    const holder = new AbortController();
    const waiter = new AbortController();
    const holding = await longStream(holder.signal);
    await readFirstEvent(holding);
    const queued = longStream(waiter.signal);
    await waitFor(async () => (await metricValue("spillway_worker_queue_depth")) === 1, "the second request to queue");

    const rejected = await postRaw(worker.url, JSON.stringify({ model: "endless", messages: [{ role: "user", content: "hi" }], max_tokens: 1 }));
    assert.equal(rejected.status, 429);
    const retryAfter = Number(rejected.headers.get("retry-after"));
    assert.ok(Number.isInteger(retryAfter), `Retry-After ${retryAfter} is whole seconds`);
    assert.ok(retryAfter >= 1, `Retry-After ${retryAfter} is at least 1 s`);
    assert.ok(retryAfter <= 60, `Retry-After ${retryAfter} is at most 60 s`);
    const body = (await rejected.json()) as { error: { type: string; code: string } };
    assert.equal(body.error.type, "rate_limit_error");
    assert.equal(body.error.code, "rate_limit_exceeded");

    holder.abort();
    const queuedResponse = await queued;
    assert.equal(queuedResponse.status, 200, "the queued request gets the slot once it is free");
    waiter.abort();
    await waitFor(async () => (await metricValue('spillway_worker_slots{state="busy"}')) === 0, "both requests to end");
  });

  test("queued request that disconnects leaves the queue", async () => {
    const holder = new AbortController();
    const holding = await longStream(holder.signal);
    await readFirstEvent(holding);
    const waiter = new AbortController();
    const queued = longStream(waiter.signal).catch((error: unknown) => error);
    await waitFor(async () => (await metricValue("spillway_worker_queue_depth")) === 1, "the request to queue");
    waiter.abort();
    await queued;
    await waitFor(async () => (await metricValue("spillway_worker_queue_depth")) === 0, "the queue to empty");
    holder.abort();
    await waitFor(async () => (await metricValue('spillway_worker_slots{state="busy"}')) === 0, "the slot to be freed");
  });

  test("parallel slots both decode", async () => {
    const model = await makeTinyModel("parallel.gguf", { eosWeight: -100 });
    const parallel = await startTestWorker({ name: "parallel", slots: 2, maxQueue: 0 }, model);
    try {
      const request = { model: "parallel", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 24, temperature: 0 };
      const [first, second] = await Promise.all([parallel.client.chat.completions.create(request), parallel.client.chat.completions.create(request)]);
      assert.equal(first.usage?.completion_tokens, 24);
      assert.equal(second.usage?.completion_tokens, 24);
      assert.equal(first.choices[0]?.message.content, second.choices[0]?.message.content);
    } finally {
      await parallel.worker.stop();
    }
  });
});
