import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import type OpenAI from "openai";

import { makeTinyModel } from "./support/models.ts";
import { postRaw, readEvents, startTestWorker, type TestWorker } from "./support/worker.ts";

type Chunk = OpenAI.Chat.Completions.ChatCompletionChunk;

let worker: TestWorker;
/** A worker whose model never emits <|im_end|>, so every reply runs to its token limit. */
let endless: TestWorker;
const greeting: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "Greet the player." }];

before(async () => {
  worker = await startTestWorker();
  endless = await startTestWorker({ name: "endless" }, await makeTinyModel("endless.gguf", { eosWeight: -100 }));
});

after(async () => {
  await worker.worker.stop();
  await endless.worker.stop();
});

function chunksOf(events: unknown[]): Chunk[] {
  return events.filter((event): event is Chunk => event !== "[DONE]");
}

describe("chat completions, non-stream", () => {
  test("returns an OpenAI completion with usage", async () => {
    const completion = await worker.client.chat.completions.create({ model: "tiny", messages: greeting, max_tokens: 16, temperature: 0 });
    assert.match(completion.id, /^chatcmpl-/);
    assert.equal(completion.object, "chat.completion");
    assert.equal(completion.model, "tiny");
    assert.equal(completion.choices.length, 1);
    assert.equal(completion.choices[0]?.index, 0);
    assert.equal(completion.choices[0]?.message.role, "assistant");
    assert.equal(typeof completion.choices[0]?.message.content, "string");
    assert.ok(["stop", "length"].includes(completion.choices[0]?.finish_reason ?? ""));
    assert.ok(completion.usage !== undefined);
    assert.ok(completion.usage.prompt_tokens > 0);
    assert.ok(completion.usage.completion_tokens > 0);
    assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
  });

  test("max_tokens ends with finish_reason length", async () => {
    const completion = await endless.client.chat.completions.create({
      model: "endless",
      messages: greeting,
      max_completion_tokens: 5,
      temperature: 0,
    });
    assert.equal(completion.choices[0]?.finish_reason, "length");
    assert.equal(completion.usage?.completion_tokens, 5);
  });

  test("text content parts are joined", async () => {
    const parts = await worker.client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: [{ type: "text", text: "Greet the player." }] }],
      max_tokens: 8,
      temperature: 0,
    });
    const plain = await worker.client.chat.completions.create({ model: "tiny", messages: greeting, max_tokens: 8, temperature: 0 });
    assert.equal(parts.choices[0]?.message.content, plain.choices[0]?.message.content);
    assert.equal(parts.usage?.prompt_tokens, plain.usage?.prompt_tokens);
  });

  test("same seed gives the same sampled text", async () => {
    const request = { model: "tiny", messages: greeting, max_tokens: 24, temperature: 0.9, seed: 42 } as const;
    const first = await worker.client.chat.completions.create(request);
    const second = await worker.client.chat.completions.create(request);
    assert.equal(first.choices[0]?.message.content, second.choices[0]?.message.content);
  });

  test("stop sequence cuts the reply before it", async () => {
    const free = await endless.client.chat.completions.create({ model: "endless", messages: greeting, max_tokens: 40, temperature: 0 });
    const text = free.choices[0]?.message.content ?? "";
    assert.ok(text.length >= 10, `reply too short to pick a stop sequence from: ${JSON.stringify(text)}`);
    const stop = text.slice(3, 5);
    const stopped = await endless.client.chat.completions.create({
      model: "endless",
      messages: greeting,
      max_tokens: 40,
      temperature: 0,
      stop: [stop, "never in the reply"],
    });
    assert.equal(stopped.choices[0]?.finish_reason, "stop");
    assert.equal(stopped.choices[0]?.message.content, text.slice(0, text.indexOf(stop)));
  });

  test("penalties change greedy output", async () => {
    const request = { model: "endless", messages: greeting, max_tokens: 60, temperature: 0 };
    const plain = await endless.client.chat.completions.create(request);
    const penalized = await endless.client.chat.completions.create({ ...request, presence_penalty: 2, frequency_penalty: 2 });
    assert.notEqual(penalized.choices[0]?.message.content, plain.choices[0]?.message.content);
    assert.equal(penalized.usage?.completion_tokens, 60);
  });

  test("x-request-id is echoed or generated", async () => {
    const echoed = await postRaw(worker.url, JSON.stringify({ model: "tiny", messages: greeting, max_tokens: 1 }), { "x-request-id": "quest-42" });
    assert.equal(echoed.headers.get("x-request-id"), "quest-42");
    const replaced = await postRaw(worker.url, JSON.stringify({ model: "tiny", messages: greeting, max_tokens: 1 }), { "x-request-id": "bad id\twith spaces" });
    assert.match(replaced.headers.get("x-request-id") ?? "", /^req_[0-9a-f]{24}$/);
  });
});

describe("chat completions, stream", () => {
  test("length finish comes in its own closing chunk", async () => {
    const response = await postRaw(endless.url, JSON.stringify({ model: "endless", messages: greeting, max_tokens: 4, temperature: 0, stream: true }));
    const chunks = chunksOf(await readEvents(response));
    const contentChunks = chunks.filter((chunk) => (chunk.choices[0]?.delta.content ?? "") !== "");
    assert.ok(contentChunks.length >= 1);
    for (const chunk of contentChunks) assert.equal(chunk.choices[0]?.finish_reason, null);
    assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, "length");
    assert.deepEqual(chunks.at(-1)?.choices[0]?.delta, {});
  });

  test("chunks follow the OpenAI stream contract", async () => {
    const response = await postRaw(worker.url, JSON.stringify({ model: "tiny", messages: greeting, max_tokens: 12, temperature: 0, stream: true }));
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const events = await readEvents(response);
    assert.equal(events.at(-1), "[DONE]");
    const chunks = chunksOf(events);
    assert.ok(chunks.length >= 3);

    const [first] = chunks;
    assert.equal(first?.choices[0]?.delta.role, "assistant");
    for (const chunk of chunks) {
      assert.equal(chunk.id, first?.id);
      assert.equal(chunk.created, first?.created);
      assert.equal(chunk.object, "chat.completion.chunk");
      assert.equal(chunk.choices.length, 1, "no usage chunk when include_usage was not requested");
      assert.ok("finish_reason" in chunk.choices[0]!, "finish_reason key on every chunk");
      assert.equal("usage" in chunk, false);
    }
    const last = chunks.at(-1)!;
    assert.ok(["stop", "length"].includes(last.choices[0]?.finish_reason ?? ""));
    assert.deepEqual(last.choices[0]?.delta, {}, "the closing chunk carries no token");
    for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.choices[0]?.finish_reason, null);
  });

  test("include_usage adds one usage chunk at the end", async () => {
    const response = await postRaw(
      worker.url,
      JSON.stringify({ model: "tiny", messages: greeting, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } }),
    );
    const chunks = chunksOf(await readEvents(response));
    const usageChunk = chunks.at(-1)!;
    assert.deepEqual(usageChunk.choices, []);
    assert.ok(usageChunk.usage !== null && usageChunk.usage !== undefined);
    for (const chunk of chunks.slice(0, -1)) {
      assert.equal(chunk.usage, null);
      assert.equal(chunk.choices.length, 1);
    }
    assert.ok(chunks.at(-2)?.choices[0]?.finish_reason !== null);
  });

  test("stream and non-stream count the same tokens", async () => {
    const request = { model: "tiny", messages: greeting, max_tokens: 20, temperature: 0.7, seed: 7 };
    const plain = await worker.client.chat.completions.create(request);
    const stream = await worker.client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
    let content = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(content, plain.choices[0]?.message.content);
    assert.deepEqual(usage, plain.usage);
  });

  test("SDK stream helper builds the final completion", async () => {
    const runner = worker.client.chat.completions.stream({ model: "tiny", messages: greeting, max_tokens: 16, temperature: 0 });
    let streamed = "";
    runner.on("content", (delta) => {
      streamed += delta;
    });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0]?.message.content, streamed);
    assert.ok(["stop", "length"].includes(final.choices[0]?.finish_reason ?? ""));
  });

  test("stream_options without stream is rejected", async () => {
    const response = await postRaw(worker.url, JSON.stringify({ model: "tiny", messages: greeting, stream_options: { include_usage: true } }));
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { param: string } };
    assert.equal(body.error.param, "stream_options");
  });
});

describe("worker endpoints", () => {
  test("lists the served model", async () => {
    const models = await worker.client.models.list();
    assert.deepEqual(models.data.map((model) => model.id), ["tiny"]);
  });

  test("probes report liveness and readiness", async () => {
    const health = await fetch(`${worker.url}/healthz`);
    assert.equal(health.status, 200);
    const ready = await fetch(`${worker.url}/readyz`);
    assert.equal(ready.status, 200);
    const body = (await ready.json()) as { ready: boolean; state: string; quant: string };
    assert.equal(body.ready, true);
    assert.equal(body.state, "ready");
    assert.equal(body.quant, "Q8_0");
  });

  test("metrics expose the worker families", async () => {
    await worker.client.chat.completions.create({ model: "tiny", messages: greeting, max_tokens: 4 });
    const text = await (await fetch(`${worker.url}/metrics`)).text();
    for (const family of [
      'spillway_worker_slots{state="busy"}',
      'spillway_worker_slots{state="free"} 2',
      "spillway_worker_queue_depth 0",
      'spillway_worker_tokens_total{kind="prompt"}',
      'spillway_worker_tokens_total{kind="completion"}',
      "spillway_worker_time_per_output_token_seconds_bucket",
      "spillway_worker_kv_cache_usage_ratio",
      'spillway_worker_model_info{model="tiny",quant="Q8_0"} 1',
      "spillway_worker_model_load_seconds",
      'spillway_worker_requests_total{code="200"}',
    ]) {
      assert.ok(text.includes(family), `missing ${family}`);
    }
  });
});
