import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { APIError } from "openai";
import type OpenAI from "openai";

import { metricSample, startTestGateway, usageSummary, waitForReady, type TestGateway } from "./support/gateway.ts";
import { MockGemini, defaultText } from "./support/mock-gemini.ts";
import { makeTinyModel } from "./support/models.ts";
import { readEvents, startTestWorker, type TestWorker } from "./support/worker.ts";

type Chunk = OpenAI.Chat.Completions.ChatCompletionChunk;

const keys = {
  OPEN_KEY: "key-open",
  THRIFTY_KEY: "key-thrifty",
  STRICT_KEY: "key-strict",
  SPILLWAY_ADMIN_KEY: "key-admin",
};
let mock: MockGemini;
let gateway: TestGateway;
let lowRung: TestWorker;
let client: OpenAI;

before(async () => {
  mock = await MockGemini.start();
  const tiny = await makeTinyModel("overflow.gguf");
  const tinyQ4 = await makeTinyModel("overflow-q4.gguf", { quant: "q4_0" });
  const endless = await makeTinyModel("overflow-endless.gguf", { eosWeight: -100 });
  gateway = await startTestGateway(
    {
      auth: {
        keys: [
          { name: "open", keyEnv: "OPEN_KEY" },
          { name: "thrifty", keyEnv: "THRIFTY_KEY", budgetUsdPerDay: 0.000001, onBudgetExhausted: "local_only" },
          { name: "strict", keyEnv: "STRICT_KEY", budgetUsdPerDay: 0.000001, onBudgetExhausted: "reject" },
        ],
      },
      pools: [
        { name: "busy", variants: [{ quant: "Q8_0", model: endless }], replicas: { min: 1, max: 1 }, slotsPerReplica: 1, queueSize: 0, contextSize: 4096 },
        { name: "cold", variants: [{ quant: "Q8_0", model: tiny }], replicas: { min: 0, max: 1 } },
        {
          name: "ladder",
          variants: [{ quant: "Q8_0", model: tiny }, { quant: "Q4_0", model: tinyQ4 }],
          qualityFloors: { json_schema: "Q8_0" },
          replicas: { min: 0, max: 1 },
        },
        { name: "ghost", variants: [{ quant: "Q8_0", model: tiny }], replicas: { min: 0, max: 1 } },
      ],
      overflow: {
        enabled: true,
        gemini: { baseUrl: mock.baseUrl, apiKeyEnv: "MOCK_GEMINI_KEY", maxAttempts: 3, circuitBreaker: { failureThreshold: 50, coolDownSeconds: 60 } },
      },
    },
    { ...keys, MOCK_GEMINI_KEY: mock.apiKey },
  );
  await waitForReady(gateway, "busy");
  // The runtime starts replicas on the top rung only, so a low-rung replica is added to the table by hand,
  // as the ladder would leave it after a step down.
  lowRung = await startTestWorker({ name: "ladder" }, tinyQ4);
  gateway.controller.table.upsert({ id: "ladder-low", pool: "ladder", url: lowRung.url, quant: "Q4_0", rung: 1, state: "ready", slots: 2 });
  // A replica that the table lists as ready but that refuses connections.
  gateway.controller.table.upsert({ id: "ghost-0", pool: "ghost", url: "http://127.0.0.1:9", quant: "Q8_0", rung: 0, state: "ready", slots: 2 });
  client = gateway.client(keys.OPEN_KEY);
});

after(async () => {
  await gateway.stop();
  await lowRung.worker.stop();
  await mock.close();
});

const hello: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "Hello there." }];
const hugePrompt: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "lore ".repeat(6000) }];

async function overflowCount(pool: string, reason: string): Promise<number> {
  return metricSample(gateway, `spillway_overflow_total{pool="${pool}",reason="${reason}"}`);
}

async function holdSlot(pool: string): Promise<AbortController> {
  const holder = new AbortController();
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${keys.OPEN_KEY}` },
    body: JSON.stringify({ model: pool, messages: hello, max_tokens: 3500, stream: true }),
    signal: holder.signal,
  });
  assert.equal(response.headers.get("x-spillway-backend"), "local", "the holding request runs locally");
  await response.body!.getReader().read();
  return holder;
}

describe("overflow reasons", () => {
  test("saturated pool overflows to gemini", async () => {
    const before = await overflowCount("busy", "saturated");
    const holder = await holdSlot("busy");
    try {
      const { data, response } = await client.chat.completions.create({ model: "busy", messages: hello, max_tokens: 20 }).withResponse();
      assert.equal(response.headers.get("x-spillway-backend"), "gemini");
      assert.equal(response.headers.get("x-spillway-pool"), "busy");
      assert.equal(data.choices[0]?.message.content, defaultText);
      assert.equal(data.model, "busy");
      assert.equal(await overflowCount("busy", "saturated"), before + 1);
      assert.equal(mock.requests.at(-1)?.body.model, mock.model, "gemini gets its own model id");
    } finally {
      holder.abort();
    }
  });

  test("prompt over the context overflows", async () => {
    const { response } = await client.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 }).withResponse();
    assert.equal(response.headers.get("x-spillway-backend"), "gemini");
    assert.equal(await overflowCount("busy", "context_length"), 1);
  });

  test("cold pool overflows, then serves locally", async () => {
    const { response } = await client.chat.completions.create({ model: "cold", messages: hello, max_tokens: 4 }).withResponse();
    assert.equal(response.headers.get("x-spillway-backend"), "gemini");
    assert.equal(await overflowCount("cold", "cold_start"), 1);
    await waitForReady(gateway, "cold");
    const { response: warm } = await client.chat.completions.create({ model: "cold", messages: hello, max_tokens: 4 }).withResponse();
    assert.equal(warm.headers.get("x-spillway-backend"), "local");
  });

  test("quality floor sends json_schema to gemini", async () => {
    const schema = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
    mock.enqueue({ kind: "text", text: '{"name": "Mira"}' });
    const { data, response } = await client.chat.completions
      .create({ model: "ladder", messages: hello, max_tokens: 30, response_format: { type: "json_schema", json_schema: { name: "npc", schema } } })
      .withResponse();
    assert.equal(response.headers.get("x-spillway-backend"), "gemini");
    assert.equal(data.choices[0]?.message.content, '{"name": "Mira"}');
    assert.equal(await overflowCount("ladder", "quality_floor"), 1);

    const { response: plain } = await client.chat.completions.create({ model: "ladder", messages: hello, max_tokens: 4 }).withResponse();
    assert.equal(plain.headers.get("x-spillway-backend"), "local", "requests without a floor use the low rung");
    assert.equal(plain.headers.get("x-spillway-quant"), "Q4_0");
  });

  test("unreachable replica overflows as local_error", async () => {
    const { response } = await client.chat.completions.create({ model: "ghost", messages: hello, max_tokens: 4 }).withResponse();
    assert.equal(response.headers.get("x-spillway-backend"), "gemini");
    assert.equal(await overflowCount("ghost", "local_error"), 1);
    assert.ok((await metricSample(gateway, 'spillway_upstream_errors_total{backend="local",code="502"}')) >= 1);
  });
});

describe("burst beyond local capacity", () => {
  test("every request succeeds and overflow shows up", async () => {
    const overflowBefore = await overflowCount("busy", "saturated");
    const spendBefore = await metricSample(gateway, 'spillway_spend_usd_total{pool="busy",backend="gemini",tenant="open"}');
    const burst = Array.from({ length: 12 }, () =>
      client.chat.completions.create({ model: "busy", messages: hello, max_tokens: 40 }).withResponse(),
    );
    const results = await Promise.allSettled(burst);
    const failures = results.filter((result) => result.status === "rejected");
    assert.equal(failures.length, 0, `failed: ${failures.map((failure) => String((failure).reason)).join("; ")}`);
    const backends = results.map((result) => (result as PromiseFulfilledResult<{ response: Response }>).value.response.headers.get("x-spillway-backend"));
    const overflowed = backends.filter((backend) => backend === "gemini").length;
    assert.ok(backends.includes("local"), "the local replica takes part");
    assert.ok(overflowed >= 6, `${overflowed} of 12 overflowed`);
    assert.equal(await overflowCount("busy", "saturated"), overflowBefore + overflowed);
    assert.ok((await metricSample(gateway, 'spillway_spend_usd_total{pool="busy",backend="gemini",tenant="open"}')) > spendBefore);
  });
});

describe("gemini through the gateway", () => {
  test("gemini spend is priced from the client's usage", async () => {
    const before = await usageSummary(gateway, "backend", keys.SPILLWAY_ADMIN_KEY);
    const completion = await client.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 });
    const after = await usageSummary(gateway, "backend", keys.SPILLWAY_ADMIN_KEY);
    const spend = (summary: typeof before) => summary.data.find((row) => row.key === "gemini")?.spendUsd ?? 0;
    const usage = completion.usage!;
    assert.equal(usage.completion_tokens, usage.total_tokens - usage.prompt_tokens, "thinking tokens are billed as output");
    const expected = (usage.prompt_tokens * 0.5 + usage.completion_tokens * 3) / 1_000_000;
    assert.ok(Math.abs(spend(after) - spend(before) - expected) < 1e-9, `spend ${spend(after) - spend(before)} vs ${expected}`);
  });

  test("stream strips gemini's unrequested usage", async () => {
    const response = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${keys.OPEN_KEY}` },
      body: JSON.stringify({ model: "busy", messages: hugePrompt, max_tokens: 20, stream: true }),
    });
    assert.equal(response.headers.get("x-spillway-backend"), "gemini");
    const chunks = (await readEvents(response)).filter((event): event is Chunk => event !== "[DONE]");
    for (const chunk of chunks) {
      assert.equal(chunk.choices.length, 1, "no usage-only chunk");
      assert.equal("usage" in chunk, false);
    }
    assert.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join(""), defaultText);
  });

  test("streamed gemini tool call works with the SDK helper", async () => {
    mock.enqueue({ kind: "tool_call", name: "give_item", arguments: '{"item":"sword"}' });
    const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
      { type: "function", function: { name: "give_item", parameters: { type: "object", properties: { item: { type: "string" } } } } },
    ];
    const final = await client.chat.completions.stream({ model: "busy", messages: hugePrompt, tools, max_tokens: 20 }).finalChatCompletion();
    const call = final.choices[0]?.message.tool_calls?.[0];
    assert.equal(final.choices[0]?.finish_reason, "tool_calls");
    assert.ok(call?.type === "function");
    assert.equal(call.function.name, "give_item");
    assert.match(call.id, /.+/);
    assert.deepEqual(JSON.parse(call.function.arguments), { item: "sword" });
  });

  test("gemini error reaches the SDK as an OpenAI error", async () => {
    mock.enqueue({ kind: "error", status: 400, googleStatus: "INVALID_ARGUMENT", message: "Request contains an invalid argument." });
    await assert.rejects(client.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 }), (error: unknown) => {
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 400);
      assert.match(error.message, /invalid argument/);
      return true;
    });
  });

  test("gemini 503 is retried before the first byte", async () => {
    const requestsBefore = mock.requests.length;
    mock.enqueue({ kind: "503" });
    const { response } = await client.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 }).withResponse();
    assert.equal(response.status, 200);
    assert.equal(mock.requests.length - requestsBefore, 2);
  });
});

describe("budgets", () => {
  test("local-only budget stops overflow", async () => {
    const thrifty = gateway.client(keys.THRIFTY_KEY);
    const first = await thrifty.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 }).withResponse();
    assert.equal(first.response.headers.get("x-spillway-backend"), "gemini");
    const requestsBefore = mock.requests.length;
    await assert.rejects(thrifty.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 }), (error: unknown) => {
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 400);
      assert.equal(error.code, "context_length_exceeded");
      return true;
    });
    assert.equal(mock.requests.length, requestsBefore, "no request reached gemini");
    const local = await thrifty.chat.completions.create({ model: "cold", messages: hello, max_tokens: 2 }).withResponse();
    assert.equal(local.response.headers.get("x-spillway-backend"), "local", "local serving goes on");
  });

  test("reject budget answers 429 budget_exceeded", async () => {
    const strict = gateway.client(keys.STRICT_KEY);
    await strict.chat.completions.create({ model: "busy", messages: hugePrompt, max_tokens: 20 });
    await assert.rejects(strict.chat.completions.create({ model: "cold", messages: hello, max_tokens: 2 }), (error: unknown) => {
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 429);
      assert.equal(error.code, "budget_exceeded");
      return true;
    });
  });
});

describe("failures mid-stream", () => {
  test("client abort is billed for the streamed tokens", async () => {
    const before = await usageSummary(gateway, "pool", keys.SPILLWAY_ADMIN_KEY);
    const controller = new AbortController();
    const response = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${keys.OPEN_KEY}` },
      body: JSON.stringify({ model: "busy", messages: hello, max_tokens: 3500, stream: true }),
      signal: controller.signal,
    });
    const reader = response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    let received = "";
    while ((received.match(/"content":"[^"]/g) ?? []).length < 20) {
      const { value } = await reader.read();
      received += new TextDecoder().decode(value);
    }
    controller.abort();
    const streamed = (received.match(/"content":"[^"]/g) ?? []).length;

    const busy = (summary: typeof before) => summary.data.find((row) => row.key === "busy");
    let after = before;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (busy(after)?.requests ?? 0) === (busy(before)?.requests ?? 0)) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      after = await usageSummary(gateway, "pool", keys.SPILLWAY_ADMIN_KEY);
    }
    assert.equal((busy(after)?.requests ?? 0) - (busy(before)?.requests ?? 0), 1, "the aborted request is billed once");
    const billed = (busy(after)?.completionTokens ?? 0) - (busy(before)?.completionTokens ?? 0);
    assert.ok(billed >= streamed, `billed ${billed} completion tokens for ${streamed} the client received`);
    assert.ok(billed < 3500, `generation stopped after the abort (billed ${billed})`);
    assert.ok((busy(after)?.promptTokens ?? 0) > (busy(before)?.promptTokens ?? 0), "the prompt is billed from the worker's count");
  });

  test("replica crash mid-stream ends with an error event", async () => {
    const before = await usageSummary(gateway, "pool", keys.SPILLWAY_ADMIN_KEY);
    const response = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${keys.OPEN_KEY}` },
      body: JSON.stringify({ model: "busy", messages: hello, max_tokens: 3500, stream: true }),
    });
    assert.equal(response.headers.get("x-spillway-backend"), "local");
    const reader = response.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    await reader.read();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const replica = gateway.controller.runtime.replicas().find((entry) => entry.pool === "busy");
    assert.ok(replica?.pid !== undefined, "the busy replica runs");
    process.kill(replica.pid, "SIGKILL");
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    assert.match(rest, /"error":/);
    assert.doesNotMatch(rest, /\[DONE\]/);

    const after = await usageSummary(gateway, "pool", keys.SPILLWAY_ADMIN_KEY);
    const busy = (summary: typeof before) => summary.data.find((row) => row.key === "busy");
    assert.equal((busy(after)?.requests ?? 0) - (busy(before)?.requests ?? 0), 1, "the cut request is billed once");
    const billed = (busy(after)?.completionTokens ?? 0) - (busy(before)?.completionTokens ?? 0);
    const received = (rest.match(/"content":"[^"]/g) ?? []).length;
    assert.ok(billed >= received, `billed ${billed} completion tokens for ${received} streamed after the first read`);
  });
});
