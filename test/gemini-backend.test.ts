import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";

import OpenAI, { APIError } from "openai";
import { pino } from "pino";

import type { RawChatRequest } from "../api/chat-request.ts";
import { CircuitBreaker, type CircuitState } from "../controller/backends/circuit-breaker.ts";
import { GeminiBackend, resolveGeminiApiKey, type GeminiBackendOptions } from "../controller/backends/gemini.ts";
import { SignatureCache } from "../controller/backends/gemini-signatures.ts";
import { BackendError, type BackendReply, type ChatCompletion, type ChatCompletionChunk } from "../controller/backends/types.ts";
import { geminiSchema, type GeminiConfig } from "../controller/config/schema.ts";
import { acceptedFields, defaultText, MockGemini, type MockGeminiOptions } from "./support/mock-gemini.ts";

type ConfigOverrides = Partial<Omit<GeminiConfig, "circuitBreaker">> & {
  circuitBreaker?: { failureThreshold: number; coolDownSeconds: number };
};

interface Harness {
  mock: MockGemini;
  backend: GeminiBackend;
  /** Delays the backend asked to wait between attempts, in milliseconds. */
  sleeps: number[];
  logs: string[];
}

const user = [{ role: "user" as const, content: "What is the weather in Lyon?" }];
const weatherTool = {
  type: "function" as const,
  function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
};

/** Starts a mock and a backend aimed at it; waits between attempts are recorded and skipped unless `realSleep`. */
async function harness(
  t: TestContext,
  config: ConfigOverrides = {},
  options: Partial<GeminiBackendOptions> & { mock?: MockGeminiOptions; realSleep?: boolean } = {},
): Promise<Harness> {
  const { mock: mockOptions, realSleep, ...backendOptions } = options;
  const mock = await MockGemini.start(mockOptions);
  t.after(() => mock.close());
  const sleeps: number[] = [];
  const logs: string[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => logs.push(line) });
  const parsed = geminiSchema.parse({ baseUrl: mock.baseUrl, connectTimeoutSeconds: 2, idleTimeoutSeconds: 2, ...config });
  const backend = new GeminiBackend(parsed, {
    logger,
    apiKey: mock.apiKey,
    sleep: async (milliseconds) => {
      sleeps.push(milliseconds);
      if (realSleep === true) await new Promise((resolve) => setTimeout(resolve, milliseconds));
    },
    ...backendOptions,
  });
  return { mock, backend, sleeps, logs };
}

function call(request: RawChatRequest, signal: AbortSignal = new AbortController().signal) {
  return { request, requestId: "request-1", signal };
}

function completionOf(reply: BackendReply): ChatCompletion {
  assert.equal(reply.kind, "completion");
  return reply.completion;
}

async function chunksOf(reply: BackendReply): Promise<ChatCompletionChunk[]> {
  assert.equal(reply.kind, "stream");
  const chunks = [reply.first];
  for await (const chunk of reply.rest) chunks.push(chunk);
  return chunks;
}

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof BackendError, `expected a BackendError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a rejection");
}

/** Gives the mock's sockets time to see a disconnect the client made. */
async function letSocketsClose(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 50));
}

function sdkFor(mock: MockGemini): OpenAI {
  return new OpenAI({ baseURL: mock.baseUrl, apiKey: mock.apiKey, maxRetries: 0 });
}

describe("gemini request", () => {
  test("unknown fields not forwarded", async (t) => {
    const { mock, backend } = await harness(t);
    const dropped = {
      frequency_penalty: 0.5,
      presence_penalty: 0.1,
      seed: 7,
      logprobs: false,
      user: "someone",
      metadata: { task: "weather" },
      store: false,
      service_tier: "auto",
      parallel_tool_calls: true,
      prompt_cache_key: "key",
      safety_identifier: "someone",
    };
    const reply = await backend.send(call({ model: "auto", messages: user, temperature: 0.2, max_tokens: 50, ...dropped }));

    assert.equal(reply.kind, "completion");
    const sent = mock.requests[0]?.body ?? {};
    for (const field of Object.keys(dropped)) assert.equal(field in sent, false, `${field} was forwarded`);
    for (const field of Object.keys(sent)) assert.ok(acceptedFields.has(field), `${field} is not accepted by Gemini`);
    assert.equal(sent.temperature, 0.2);
    assert.equal(sent.max_tokens, 50);
    assert.equal(sent.model, "gemini-3-flash-preview");
  });

  test("plain client rejected for penalties", async (t) => {
    const { mock } = await harness(t);
    const error = await sdkFor(mock)
      .chat.completions.create({ model: mock.model, messages: user, frequency_penalty: 0.5 })
      .catch((caught: unknown) => caught);

    assert.ok(error instanceof APIError);
    assert.equal(error.status, 400);
    // The SDK finds an array where it expects an `error` object, so the structured fields are lost.
    assert.ok(Array.isArray(error.error));
    assert.equal(error.type, undefined);
  });

  test("bearer key sent", async (t) => {
    const { mock, backend } = await harness(t);
    await backend.send(call({ model: "auto", messages: user }));
    assert.equal(mock.requests[0]?.headers.authorization, `Bearer ${mock.apiKey}`);
  });

  test("reasoning_effort mapped", async (t) => {
    const { mock, backend } = await harness(t);
    const cases: [string, string | undefined][] = [
      ["minimal", "low"],
      ["none", "none"],
      ["high", "high"],
      ["xhigh", undefined],
    ];
    for (const [effort, expected] of cases) {
      await backend.send(call({ model: "auto", messages: user, reasoning_effort: effort }));
      assert.equal(mock.requests.at(-1)?.body.reasoning_effort, expected, `reasoning_effort ${effort}`);
    }
  });

  test("stream always requests usage", async (t) => {
    const { mock, backend } = await harness(t);
    await chunksOf(await backend.send(call({ model: "auto", messages: user, stream: true })));
    assert.deepEqual(mock.requests[0]?.body.stream_options, { include_usage: true });
  });

  test("developer role sent as system", async (t) => {
    const { mock, backend } = await harness(t);
    await backend.send(call({ model: "auto", messages: [{ role: "developer", content: "Be brief." }, ...user] }));
    const messages = mock.requests[0]?.body.messages as { role: string }[];
    assert.equal(messages[0]?.role, "system");
  });
});

describe("gemini errors", () => {
  test("array error unwrapped", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "error", status: 400, googleStatus: "INVALID_ARGUMENT", message: "Request contains an invalid argument." });
    const error = await rejection(backend.send(call({ model: "auto", messages: user })));

    assert.equal(error.status, 400);
    assert.equal(error.retryable, false);
    assert.deepEqual(Object.keys(error.body.error).sort(), ["code", "message", "param", "type"]);
    assert.equal(error.body.error.type, "invalid_request_error");
    assert.equal(error.body.error.code, "invalid_argument");
    assert.equal(error.body.error.param, null);
    assert.match(error.body.error.message, /Request contains an invalid argument\./);
    assert.equal(mock.requests.length, 1);
  });

  test("plain client loses array error", async (t) => {
    const { mock } = await harness(t);
    mock.enqueue({ kind: "error", status: 400, googleStatus: "INVALID_ARGUMENT", message: "Request contains an invalid argument." });
    const error = await sdkFor(mock)
      .chat.completions.create({ model: mock.model, messages: user })
      .catch((caught: unknown) => caught);

    assert.ok(error instanceof APIError);
    assert.ok(Array.isArray(error.error));
    assert.equal(error.type, undefined);
    assert.equal(error.code, undefined);
    assert.equal(error.param, undefined);
  });

  test("rejected key becomes 502", async (t) => {
    const { backend } = await harness(t, {}, { apiKey: "wrong-key" });
    const error = await rejection(backend.send(call({ model: "auto", messages: user })));

    assert.equal(error.status, 502);
    assert.equal(error.body.error.code, "upstream_authentication_failed");
    assert.equal(error.retryable, false);
  });
});

describe("gemini response repair", () => {
  test("non-stream tool call gets id", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "tool_call", name: "get_weather", arguments: '{"city":"Lyon"}' });
    const completion = completionOf(await backend.send(call({ model: "auto", messages: user, tools: [weatherTool] })));
    const choice = completion.choices[0];
    const toolCall = choice?.message.tool_calls?.[0];

    assert.match(toolCall?.id ?? "", /^call_[0-9a-f]{32}$/);
    assert.equal(toolCall?.type, "function");
    assert.equal(toolCall?.function.name, "get_weather");
    assert.equal(toolCall?.function.arguments, '{"city":"Lyon"}');
    assert.equal(choice?.finish_reason, "tool_calls");
    assert.equal("extra_content" in (toolCall ?? {}), false);
  });

  test("completion_tokens includes thinking", async (t) => {
    const { mock, backend } = await harness(t, {}, { mock: { thoughtTokens: 30 } });
    const raw = await sdkFor(mock).chat.completions.create({ model: mock.model, messages: user });
    const rawUsage = raw.usage;
    assert.ok(rawUsage !== undefined);
    // Gemini leaves the thinking tokens out of completion_tokens.
    assert.equal(rawUsage.total_tokens, rawUsage.prompt_tokens + rawUsage.completion_tokens + 30);

    const { usage } = completionOf(await backend.send(call({ model: "auto", messages: user })));
    assert.equal(usage.prompt_tokens, rawUsage.prompt_tokens);
    assert.equal(usage.total_tokens, rawUsage.total_tokens);
    assert.equal(usage.completion_tokens, rawUsage.total_tokens - rawUsage.prompt_tokens);
  });

  test("stream follows OpenAI contract", async (t) => {
    const { backend } = await harness(t);
    const chunks = await chunksOf(await backend.send(call({ model: "auto", messages: user, stream: true })));
    const content = chunks.slice(0, -2);
    const closing = chunks.at(-2);
    const usageChunk = chunks.at(-1);

    assert.ok(content.length >= 2);
    assert.equal(chunks[0]?.choices[0]?.delta.role, "assistant");
    for (const chunk of chunks.slice(1)) assert.equal(chunk.choices[0]?.delta.role, undefined);
    for (const chunk of content) assert.equal(chunk.choices[0]?.finish_reason, null);
    for (const chunk of content) assert.equal(chunk.usage, null);
    assert.equal(content.map((chunk) => chunk.choices[0]?.delta.content).join(""), defaultText);
    assert.deepEqual(closing?.choices[0]?.delta, {});
    assert.equal(closing?.choices[0]?.finish_reason, "stop");
    assert.equal(closing?.usage, null);
    assert.deepEqual(usageChunk?.choices, []);
    assert.ok(usageChunk?.usage);
    assert.equal(usageChunk.usage.completion_tokens, usageChunk.usage.total_tokens - usageChunk.usage.prompt_tokens);
    assert.equal(chunks.filter((chunk) => chunk.usage != null).length, 1);
    assert.equal(new Set(chunks.map((chunk) => chunk.id)).size, 1);
  });

  test("plain client sees usage on content", async (t) => {
    const { mock } = await harness(t);
    const stream = await sdkFor(mock).chat.completions.create({ model: mock.model, messages: user, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1);

    // Usage arrives unrequested, on a chunk that still has choices.
    assert.ok(last?.usage);
    assert.equal(last.choices.length, 1);
  });

  test("stream tool calls get index", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({
      kind: "tool_call",
      name: "get_weather",
      arguments: '{"city":"Lyon"}',
      parallel: [{ name: "get_weather", arguments: '{"city":"Nice"}' }],
    });
    const chunks = await chunksOf(await backend.send(call({ model: "auto", messages: user, tools: [weatherTool], stream: true })));
    const fragments = chunks.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls ?? []);

    assert.deepEqual(
      fragments.map((fragment) => fragment.index),
      [0, 1],
    );
    for (const fragment of fragments) assert.ok((fragment.id ?? "").length > 0);
    for (const fragment of fragments) assert.equal(fragment.type, "function");
    for (const fragment of fragments) assert.equal(fragment.function?.name, "get_weather");
    assert.equal(chunks[0]?.choices[0]?.delta.role, "assistant");
    assert.equal(chunks.at(-2)?.choices[0]?.finish_reason, "tool_calls");
  });
});

describe("gemini thought signatures", () => {
  async function followUp(backend: GeminiBackend, toolCallId: string, stream = false) {
    const messages: RawChatRequest["messages"] = [
      ...user,
      { role: "assistant", content: null, tool_calls: [{ id: toolCallId, type: "function", function: { name: "get_weather", arguments: '{"city":"Lyon"}' } }] },
      { role: "tool", tool_call_id: toolCallId, content: "Sunny, 24 °C" },
    ];
    return backend.send(call({ model: "auto", messages, tools: [weatherTool], stream }));
  }

  test("signature re-attached", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "tool_call", name: "get_weather", arguments: '{"city":"Lyon"}' });
    const first = completionOf(await backend.send(call({ model: "auto", messages: user, tools: [weatherTool] })));
    const toolCallId = first.choices[0]?.message.tool_calls?.[0]?.id ?? "";

    const reply = await followUp(backend, toolCallId);
    const sent = mock.requests[1]?.body.messages as { tool_calls?: { extra_content?: { google?: { thought_signature?: string } } }[] }[];

    assert.equal(reply.kind, "completion");
    assert.equal(sent[1]?.tool_calls?.[0]?.extra_content?.google?.thought_signature, mock.issuedSignatures[0]);
  });

  test("stream signature re-attached", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "tool_call", name: "get_weather", arguments: '{"city":"Lyon"}' });
    const chunks = await chunksOf(await backend.send(call({ model: "auto", messages: user, tools: [weatherTool], stream: true })));
    const toolCallId = chunks.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls ?? [])[0]?.id ?? "";

    const reply = await followUp(backend, toolCallId, true);
    await chunksOf(reply);
    const sent = mock.requests[1]?.body.messages as { tool_calls?: { extra_content?: { google?: { thought_signature?: string } } }[] }[];

    assert.equal(sent[1]?.tool_calls?.[0]?.extra_content?.google?.thought_signature, mock.issuedSignatures[0]);
  });

  test("plain client rejected without signature", async (t) => {
    const { mock } = await harness(t);
    mock.enqueue({ kind: "tool_call", name: "get_weather", arguments: '{"city":"Lyon"}' });
    const sdk = sdkFor(mock);
    const first = await sdk.chat.completions.create({ model: mock.model, messages: user, tools: [weatherTool] });
    const toolCall = first.choices[0]?.message.tool_calls?.[0];
    assert.ok(toolCall?.type === "function");
    // Rebuilding the assistant message from the typed fields loses Gemini's extra_content.
    const error = await sdk.chat.completions
      .create({
        model: mock.model,
        tools: [weatherTool],
        messages: [
          ...user,
          { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: toolCall.function }] },
          { role: "tool", tool_call_id: "call_1", content: "Sunny" },
        ],
      })
      .catch((caught: unknown) => caught);

    assert.ok(error instanceof APIError);
    assert.equal(error.status, 400);
  });

  test("cache evicts least recently used", () => {
    const cache = new SignatureCache(2);
    cache.set("call_a", "signature-a");
    cache.set("call_b", "signature-b");
    cache.get("call_a");
    cache.set("call_c", "signature-c");

    assert.equal(cache.size, 2);
    assert.equal(cache.get("call_b"), undefined);
    assert.equal(cache.get("call_a"), "signature-a");
    assert.equal(cache.get("call_c"), "signature-c");
  });

  test("unknown call sent as unsigned", async (t) => {
    const { mock, backend } = await harness(t);
    const reply = await followUp(backend, "call_from_local_model");
    const sent = mock.requests[0]?.body.messages as { tool_calls?: { extra_content?: { google?: { thought_signature?: string } } }[] }[];

    assert.equal(reply.kind, "completion");
    assert.equal(sent[1]?.tool_calls?.[0]?.extra_content?.google?.thought_signature, "skip_thought_signature_validator");
  });
});

describe("gemini retries", () => {
  test("429 waits for retryDelay", async (t) => {
    const { mock, backend, sleeps } = await harness(t, {}, { realSleep: true });
    mock.enqueue({ kind: "429", retryDelaySeconds: 1 });
    const started = performance.now();
    const reply = await backend.send(call({ model: "auto", messages: user }));

    assert.equal(reply.kind, "completion");
    assert.ok(performance.now() - started >= 1000);
    assert.deepEqual(sleeps, [1000]);
    assert.equal(mock.requests.length, 2);
  });

  test("429 beyond cap fails at once", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "429", retryDelaySeconds: 120 });
    const error = await rejection(backend.send(call({ model: "auto", messages: user })));

    assert.equal(error.status, 429);
    assert.equal(error.retryAfterSeconds, 120);
    assert.equal(error.retryable, true);
    assert.equal(error.body.error.type, "rate_limit_error");
    assert.equal(error.body.error.code, "rate_limit_exceeded");
    assert.equal(mock.requests.length, 1);
  });

  test("503 retried then succeeds", async (t) => {
    const { mock, backend, sleeps, logs } = await harness(t, {}, { random: () => 0.5 });
    mock.enqueue({ kind: "503" });
    const reply = await backend.send(call({ model: "auto", messages: user }));

    assert.equal(reply.kind, "completion");
    assert.equal(mock.requests.length, 2);
    assert.deepEqual(sleeps, [375]);
    assert.ok(logs.some((line) => line.includes("retrying Gemini request") && line.includes('"requestId":"request-1"')));
  });

  test("retries exhausted", async (t) => {
    const { mock, backend, sleeps } = await harness(t, { maxAttempts: 3 }, { random: () => 0 });
    mock.enqueue({ kind: "503" }, { kind: "503" }, { kind: "503" });
    const error = await rejection(backend.send(call({ model: "auto", messages: user })));

    assert.equal(error.status, 503);
    assert.equal(error.retryable, true);
    assert.equal(error.body.error.code, "unavailable");
    assert.equal(mock.requests.length, 3);
    assert.deepEqual(sleeps, [250, 500]);
  });

  test("cut before first chunk retried", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "cut", afterChunks: 0 });
    const chunks = await chunksOf(await backend.send(call({ model: "auto", messages: user, stream: true })));

    assert.equal(chunks.at(-2)?.choices[0]?.finish_reason, "stop");
    assert.equal(mock.requests.length, 2);
  });

  test("cut after first byte not retried", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "cut", afterChunks: 2 });
    const reply = await backend.send(call({ model: "auto", messages: user, stream: true }));
    const error = await rejection(chunksOf(reply));

    assert.equal(error.body.error.code, "upstream_stream_interrupted");
    assert.equal(mock.requests.length, 1);
  });

  test("idle timeout mid-stream", async (t) => {
    const { mock, backend } = await harness(t, { idleTimeoutSeconds: 0.3 });
    mock.enqueue({ kind: "stall", afterChunks: 2 });
    const reply = await backend.send(call({ model: "auto", messages: user, stream: true }));
    const started = performance.now();
    const error = await rejection(chunksOf(reply));

    assert.equal(error.status, 504);
    assert.equal(error.body.error.code, "upstream_idle_timeout");
    assert.ok(performance.now() - started < 1500);
    assert.equal(mock.requests.length, 1);
  });

  test("connect timeout retried", async (t) => {
    const { mock, backend } = await harness(t, { connectTimeoutSeconds: 0.2 });
    mock.enqueue({ kind: "slow", firstByteDelayMs: 1000 });
    const reply = await backend.send(call({ model: "auto", messages: user, stream: true }));
    await letSocketsClose();

    assert.equal(reply.kind, "stream");
    assert.equal(mock.requests.length, 2);
    assert.equal(mock.requests[0]?.disconnected, true);
  });

  test("non-stream waits past connect timeout", async (t) => {
    const { mock, backend } = await harness(t, { connectTimeoutSeconds: 0.2, idleTimeoutSeconds: 2 });
    mock.enqueue({ kind: "slow", firstByteDelayMs: 500 });
    const reply = await backend.send(call({ model: "auto", messages: user }));

    assert.equal(reply.kind, "completion");
    assert.equal(mock.requests.length, 1);
  });

  test("connect timeout is retryable", async (t) => {
    const { mock, backend } = await harness(t, { connectTimeoutSeconds: 0.2, maxAttempts: 1 });
    mock.enqueue({ kind: "slow", firstByteDelayMs: 1000 });
    const error = await rejection(backend.send(call({ model: "auto", messages: user, stream: true })));

    assert.equal(error.status, 504);
    assert.equal(error.body.error.code, "upstream_connect_timeout");
    assert.equal(error.retryable, true);
  });

  test("unreachable host is retryable", async (t) => {
    const { mock, backend } = await harness(t, { maxAttempts: 2 });
    await mock.close();
    const error = await rejection(backend.send(call({ model: "auto", messages: user })));

    assert.equal(error.status, 502);
    assert.equal(error.body.error.code, "upstream_unreachable");
    assert.equal(error.retryable, true);
  });
});

describe("gemini circuit", () => {
  test("opens after threshold", async (t) => {
    const states: CircuitState[] = [];
    const { mock, backend } = await harness(
      t,
      { maxAttempts: 1, circuitBreaker: { failureThreshold: 2, coolDownSeconds: 30 } },
      { onCircuitStateChange: (state) => states.push(state) },
    );
    mock.enqueue({ kind: "503" }, { kind: "503" });
    await rejection(backend.send(call({ model: "auto", messages: user })));
    await rejection(backend.send(call({ model: "auto", messages: user })));
    const started = performance.now();
    const error = await rejection(backend.send(call({ model: "auto", messages: user })));

    assert.deepEqual(states, ["open"]);
    assert.equal(backend.circuitState, "open");
    assert.equal(backend.available(), false);
    assert.equal(error.status, 503);
    assert.equal(error.body.error.code, "overflow_unavailable");
    assert.equal(error.retryable, false);
    assert.equal(error.retryAfterSeconds, 30);
    assert.ok(performance.now() - started < 50);
    assert.equal(mock.requests.length, 2);
  });

  test("half-opens then closes", async (t) => {
    let now = 0;
    const states: CircuitState[] = [];
    const { mock, backend, logs } = await harness(
      t,
      { maxAttempts: 1, circuitBreaker: { failureThreshold: 1, coolDownSeconds: 10 } },
      { now: () => now, onCircuitStateChange: (state) => states.push(state) },
    );
    mock.enqueue({ kind: "503" });
    await rejection(backend.send(call({ model: "auto", messages: user })));
    now = 9_999;
    assert.equal(backend.circuitState, "open");
    now = 10_000;
    assert.equal(backend.circuitState, "half_open");
    assert.equal(backend.available(), true);
    await backend.send(call({ model: "auto", messages: user }));

    assert.equal(backend.circuitState, "closed");
    assert.deepEqual(states, ["open", "half_open", "closed"]);
    assert.equal(logs.filter((line) => line.includes("Gemini circuit changed state") && line.includes('"level":30')).length, 3);
  });

  test("client errors leave it closed", async (t) => {
    const { mock, backend } = await harness(t, { circuitBreaker: { failureThreshold: 1, coolDownSeconds: 10 } });
    mock.enqueue({ kind: "error", status: 400, googleStatus: "INVALID_ARGUMENT", message: "Bad schema." });
    await rejection(backend.send(call({ model: "auto", messages: user })));
    assert.equal(backend.circuitState, "closed");
  });

  test("half-open admits one trial", () => {
    let now = 0;
    const breaker = new CircuitBreaker({ failureThreshold: 1, coolDownMs: 100, now: () => now });
    breaker.tryAcquire()?.failure();
    now = 100;
    const trial = breaker.tryAcquire();

    assert.ok(trial);
    assert.equal(breaker.wouldAdmit, false);
    assert.equal(breaker.tryAcquire(), undefined);
    trial.failure();
    assert.equal(breaker.state, "open");
    now = 150;
    assert.equal(breaker.tryAcquire(), undefined);
  });

  test("success resets failure count", () => {
    const breaker = new CircuitBreaker({ failureThreshold: 2, coolDownMs: 100 });
    breaker.tryAcquire()?.failure();
    breaker.tryAcquire()?.success();
    breaker.tryAcquire()?.failure();
    assert.equal(breaker.state, "closed");
  });
});

describe("gemini api key", () => {
  const secret = "AIzaSy-secret-test-key-0123456789";

  test("key absent from errors and logs", async (t) => {
    const { mock, backend, logs } = await harness(t, { maxAttempts: 2 }, { apiKey: secret });
    const wrongKey = await rejection(backend.send(call({ model: "auto", messages: user })));

    const echoing = await harness(t, { maxAttempts: 2 }, { mock: { apiKey: secret } });
    echoing.mock.enqueue(
      { kind: "error", status: 500, googleStatus: "INTERNAL", message: `Internal error for key ${secret}.` },
      { kind: "error", status: 500, googleStatus: "INTERNAL", message: `Internal error for key ${secret}.` },
    );
    const echoed = await rejection(echoing.backend.send(call({ model: "auto", messages: user })));

    assert.equal(mock.requests.length, 1);
    for (const error of [wrongKey, echoed]) {
      assert.equal(error.message.includes(secret), false);
      assert.equal(JSON.stringify(error.body).includes(secret), false);
    }
    assert.match(echoed.body.error.message, /\[redacted\]/);
    assert.ok(echoing.logs.length > 0);
    for (const line of [...logs, ...echoing.logs]) assert.equal(line.includes(secret), false);
  });

  test("resolved from environment", () => {
    assert.equal(resolveGeminiApiKey({ apiKeyEnv: "SPILLWAY_TEST_GEMINI_KEY" }, { SPILLWAY_TEST_GEMINI_KEY: ` ${secret}\n` }), secret);
    assert.equal(resolveGeminiApiKey({}, { GEMINI_API_KEY: secret }), secret);
  });

  test("missing variable named", () => {
    assert.throws(() => resolveGeminiApiKey({ apiKeyEnv: "SPILLWAY_TEST_GEMINI_KEY" }, {}), /SPILLWAY_TEST_GEMINI_KEY/);
    assert.throws(() => resolveGeminiApiKey({ apiKeyEnv: "SPILLWAY_TEST_GEMINI_KEY" }, { SPILLWAY_TEST_GEMINI_KEY: "  " }), /not set or empty/);
  });

  test("resolved from file", async (t) => {
    const directory = await mkdtemp(join(tmpdir(), "spillway-gemini-"));
    t.after(() => rm(directory, { recursive: true, force: true }));
    const file = join(directory, "key");
    await writeFile(file, `${secret}\n`);

    assert.equal(resolveGeminiApiKey({ apiKeyFile: file }), secret);
    assert.throws(() => resolveGeminiApiKey({ apiKeyFile: join(directory, "absent") }), /absent.*ENOENT/);
    await writeFile(file, "\n");
    assert.throws(() => resolveGeminiApiKey({ apiKeyFile: file }), /is empty/);
  });
});

describe("gemini abort", () => {
  test("abort before headers", async (t) => {
    const { mock, backend } = await harness(t);
    mock.enqueue({ kind: "slow", firstByteDelayMs: 2000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const error = await rejection(backend.send(call({ model: "auto", messages: user }, controller.signal)));
    await letSocketsClose();

    assert.equal(error.body.error.code, "request_aborted");
    assert.equal(mock.requests.length, 1);
    assert.equal(mock.requests[0]?.disconnected, true);
    assert.equal(backend.circuitState, "closed");
  });

  test("abort mid-stream ends iteration", async (t) => {
    const { mock, backend } = await harness(t, {}, { mock: { chunkIntervalMs: 100 } });
    const controller = new AbortController();
    const reply = await backend.send(call({ model: "auto", messages: user, stream: true }, controller.signal));
    controller.abort();
    const chunks = await chunksOf(reply);
    await letSocketsClose();

    assert.equal(chunks.length, 1);
    assert.equal(mock.requests[0]?.disconnected, true);
  });
});
