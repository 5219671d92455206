import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { APIError } from "openai";
import type OpenAI from "openai";

import { metricSample, startTestGateway, usageSummary, waitForReady, type TestGateway } from "./support/gateway.ts";
import { makeTinyModel } from "./support/models.ts";
import { readEvents } from "./support/worker.ts";

type Chunk = OpenAI.Chat.Completions.ChatCompletionChunk;

const keys = { STUDIO_A_KEY: "key-studio-a", STUDIO_B_KEY: "key-studio-b", SPILLWAY_ADMIN_KEY: "key-admin" };
let gateway: TestGateway;
let studioA: OpenAI;

before(async () => {
  const tiny = await makeTinyModel("gateway.gguf");
  gateway = await startTestGateway(
    {
      auth: {
        keys: [
          { name: "studio-a", keyEnv: "STUDIO_A_KEY" },
          { name: "studio-b", keyEnv: "STUDIO_B_KEY" },
        ],
      },
      pools: [{ name: "npc", aliases: ["gpt-4o-mini"], variants: [{ quant: "Q8_0", model: tiny }], replicas: { min: 1, max: 1 }, slotsPerReplica: 2, costPerReplicaHourUsd: 3.6 }],
      overflow: { enabled: false },
    },
    keys,
  );
  await waitForReady(gateway, "npc");
  studioA = gateway.client(keys.STUDIO_A_KEY);
});

after(async () => {
  await gateway.stop();
});

const greeting: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "Greet the player." }];

function post(body: unknown, apiKey: string = keys.STUDIO_A_KEY): Promise<Response> {
  return fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

describe("gateway, local pool", () => {
  test("alias routes to the pool's replica", async () => {
    const { data, response } = await studioA.chat.completions
      .create({ model: "gpt-4o-mini", messages: greeting, max_tokens: 8, temperature: 0 })
      .withResponse();
    assert.equal(response.headers.get("x-spillway-backend"), "local");
    assert.equal(response.headers.get("x-spillway-pool"), "npc");
    assert.equal(response.headers.get("x-spillway-quant"), "Q8_0");
    assert.match(response.headers.get("x-request-id") ?? "", /^req_/);
    assert.equal(data.model, "gpt-4o-mini");
    assert.ok((data.usage?.completion_tokens ?? 0) > 0);
  });

  test("model list shows pools, aliases and auto", async () => {
    const models = await studioA.models.list();
    assert.deepEqual(models.data.map((model) => model.id).sort(), ["auto", "gpt-4o-mini", "npc"]);
  });

  test("stream without include_usage has no usage chunk", async () => {
    const response = await post({ model: "npc", messages: greeting, max_tokens: 8, stream: true });
    const events = await readEvents(response);
    assert.equal(events.at(-1), "[DONE]");
    const chunks = events.filter((event): event is Chunk => event !== "[DONE]");
    for (const chunk of chunks) {
      assert.equal(chunk.choices.length, 1);
      assert.equal("usage" in chunk, false);
    }
    assert.equal(chunks[0]?.choices[0]?.delta.role, "assistant");
    assert.notEqual(chunks.at(-1)?.choices[0]?.finish_reason, null);
  });

  test("stream with include_usage ends with usage", async () => {
    const response = await post({ model: "npc", messages: greeting, max_tokens: 8, stream: true, stream_options: { include_usage: true } });
    const chunks = (await readEvents(response)).filter((event): event is Chunk => event !== "[DONE]");
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage !== null && last.usage !== undefined);
    for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.usage, null);
  });

  test("metered tokens equal the client's usage", async () => {
    const before = await usageSummary(gateway, "tenant", keys.SPILLWAY_ADMIN_KEY);
    const studioB = gateway.client(keys.STUDIO_B_KEY);
    const plain = await studioB.chat.completions.create({ model: "npc", messages: greeting, max_tokens: 12, temperature: 0 });
    const stream = await studioB.chat.completions.create({ model: "npc", messages: greeting, max_tokens: 12, stream: true, stream_options: { include_usage: true } });
    let streamUsage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) if (chunk.usage) streamUsage = chunk.usage;
    const afterwards = await usageSummary(gateway, "tenant", keys.SPILLWAY_ADMIN_KEY);

    const row = (summary: typeof before) => summary.data.find((entry) => entry.key === "studio-b");
    const delta = (field: "requests" | "promptTokens" | "completionTokens") => (row(afterwards)?.[field] ?? 0) - (row(before)?.[field] ?? 0);
    assert.equal(delta("requests"), 2);
    assert.equal(delta("promptTokens"), (plain.usage?.prompt_tokens ?? 0) + (streamUsage?.prompt_tokens ?? 0));
    assert.equal(delta("completionTokens"), (plain.usage?.completion_tokens ?? 0) + (streamUsage?.completion_tokens ?? 0));
    assert.ok((row(afterwards)?.geminiEquivalentUsd ?? 0) > 0, "local tokens carry a gemini-equivalent");
  });

  test("local spend accrues from replica time", async () => {
    // 3.6 USD per replica hour is 0.001 USD per second of one live replica.
    const deadline = Date.now() + 5000;
    let total = 0;
    while (Date.now() < deadline && total <= 0) {
      const summary = await usageSummary(gateway, "backend", keys.SPILLWAY_ADMIN_KEY);
      total = summary.data.find((entry) => entry.key === "local")?.spendUsd ?? 0;
      if (total <= 0) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(total > 0, "replica time is billed to local spend");
    // The pool gauges refresh once a second.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.equal(await metricSample(gateway, 'spillway_pool_replicas{pool="npc",state="ready"}'), 1);
  });
});

describe("gateway, errors", () => {
  test("missing key is 401 invalid_api_key", async () => {
    const response = await fetch(`${gateway.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "npc", messages: greeting }) });
    assert.equal(response.status, 401);
    const body = (await response.json()) as { error: { code: string; type: string } };
    assert.equal(body.error.code, "invalid_api_key");
    assert.equal(body.error.type, "authentication_error");
  });

  test("wrong key is rejected by the SDK", async () => {
    await assert.rejects(gateway.client("not-a-key").chat.completions.create({ model: "npc", messages: greeting }), (error: unknown) => {
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 401);
      assert.equal(error.code, "invalid_api_key");
      return true;
    });
  });

  test("unknown model is 404 model_not_found", async () => {
    const response = await post({ model: "gpt-5", messages: greeting });
    assert.equal(response.status, 404);
    const body = (await response.json()) as { error: { code: string; param: string; message: string } };
    assert.equal(body.error.code, "model_not_found");
    assert.equal(body.error.param, "model");
    assert.match(body.error.message, /npc/);
  });

  test("oversized body is 413", async () => {
    const response = await post({ model: "npc", messages: [{ role: "user", content: "x".repeat(5 * 1024 * 1024) }] });
    assert.equal(response.status, 413);
    const body = (await response.json()) as { error: { code: string } };
    assert.equal(body.error.code, "request_too_large");
  });

  test("invalid field names the param", async () => {
    const response = await post({ model: "npc", messages: greeting, temperature: "hot" });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { param: string } };
    assert.equal(body.error.param, "temperature");
  });

  test("worker rejection is the client's error", async () => {
    const upstreamSeries = 'spillway_upstream_errors_total{backend="local",code="400"}';
    const requestSeries = 'spillway_requests_total{pool="npc",backend="local",code="400"}';
    const upstreamBefore = await metricSample(gateway, upstreamSeries);
    const requestsBefore = await metricSample(gateway, requestSeries);
    const schema = { type: "object", properties: { name: { type: "string", pattern: "^[A-Z]" } }, required: ["name"] };
    const response = await post({ model: "npc", messages: greeting, response_format: { type: "json_schema", json_schema: { name: "npc", schema } } });
    assert.equal(response.status, 400, "the worker's 400 reaches the client");
    const body = (await response.json()) as { error: { message: string } };
    assert.match(body.error.message, /pattern/, "the message names the keyword");
    assert.equal(await metricSample(gateway, upstreamSeries), upstreamBefore, "no upstream error is counted");
    assert.equal(await metricSample(gateway, requestSeries), requestsBefore + 1, "the reply is counted as a local 400");
  });

  test("usage endpoint needs the admin key", async () => {
    const anonymous = await fetch(`${gateway.url}/v1/spillway/usage`);
    assert.equal(anonymous.status, 401);
    const tenant = await fetch(`${gateway.url}/v1/spillway/usage`, { headers: { authorization: `Bearer ${keys.STUDIO_A_KEY}` } });
    assert.equal(tenant.status, 401);
  });

  test("full pool without overflow is 429 with Retry-After", async () => {
    const endless = await makeTinyModel("gateway-endless.gguf", { eosWeight: -100 });
    const busy = await startTestGateway({
      pools: [{ name: "busy", variants: [{ quant: "Q8_0", model: endless }], replicas: { min: 1, max: 1 }, slotsPerReplica: 1, queueSize: 0, contextSize: 4096 }],
      overflow: { enabled: false },
    });
    try {
      await waitForReady(busy, "busy");
      const holder = new AbortController();
      const holding = await fetch(`${busy.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "busy", messages: greeting, max_tokens: 3000, stream: true }),
        signal: holder.signal,
      });
      const reader = holding.body!.getReader();
      await reader.read();
      const rejected = await fetch(`${busy.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "busy", messages: greeting, max_tokens: 2 }) });
      assert.equal(rejected.status, 429);
      assert.ok(Number(rejected.headers.get("retry-after")) >= 1);
      const body = (await rejected.json()) as { error: { code: string; type: string } };
      assert.equal(body.error.code, "rate_limit_exceeded");
      assert.equal(body.error.type, "rate_limit_error");
      assert.equal(await metricSample(busy, 'spillway_requests_total{pool="busy",backend="gateway",code="429"}'), 1, "the rejection is counted");
      holder.abort();
    } finally {
      await busy.stop();
    }
  });
});
