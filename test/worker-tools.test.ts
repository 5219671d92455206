import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import type OpenAI from "openai";

import { postRaw, readEvents, startTestWorker, type TestWorker } from "./support/worker.ts";

type Chunk = OpenAI.Chat.Completions.ChatCompletionChunk;
type Tool = OpenAI.Chat.Completions.ChatCompletionTool;

let worker: TestWorker;

// Small enums keep the tiny model's arguments short, so calls finish well inside max_tokens.
const giveItem: Tool = {
  type: "function",
  function: {
    name: "give_item",
    description: "Give the player an item.",
    parameters: {
      type: "object",
      properties: {
        item: { type: "string", enum: ["sword", "shield", "potion"] },
        count: { type: "integer", enum: [1, 2, 3] },
      },
      required: ["item", "count"],
      additionalProperties: false,
    },
  },
};
const openDoor: Tool = {
  type: "function",
  function: {
    name: "open_door",
    description: "Open a door.",
    parameters: { type: "object", properties: { door: { type: "string", enum: ["north", "south"] } }, required: ["door"] },
  },
};
const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "I need a weapon." }];

before(async () => {
  worker = await startTestWorker();
});

after(async () => {
  await worker.worker.stop();
});

describe("tool calls", () => {
  test("tool_choice required returns a tool call", async () => {
    const completion = await worker.client.chat.completions.create({
      model: "tiny",
      messages,
      tools: [giveItem, openDoor],
      tool_choice: "required",
      max_tokens: 64,
      temperature: 0,
    });
    const choice = completion.choices[0]!;
    assert.equal(choice.finish_reason, "tool_calls");
    const calls = choice.message.tool_calls ?? [];
    assert.equal(calls.length, 1);
    const call = calls[0]!;
    assert.equal(call.type, "function");
    assert.match(call.id, /^call_[0-9a-f]{24}$/);
    assert.ok(call.type === "function" && ["give_item", "open_door"].includes(call.function.name));
    assert.equal(typeof (call.type === "function" ? call.function.arguments : undefined), "string");
    const args = JSON.parse(call.type === "function" ? call.function.arguments : "") as Record<string, unknown>;
    assert.equal(typeof args, "object");
  });

  test("named tool_choice calls that function", async () => {
    const completion = await worker.client.chat.completions.create({
      model: "tiny",
      messages,
      tools: [giveItem, openDoor],
      tool_choice: { type: "function", function: { name: "open_door" } },
      max_tokens: 64,
      temperature: 0,
    });
    const call = completion.choices[0]?.message.tool_calls?.[0];
    assert.equal(completion.choices[0]?.finish_reason, "tool_calls");
    assert.ok(call?.type === "function");
    assert.equal(call.function.name, "open_door");
    assert.equal(call.function.arguments, call.function.arguments.trim());
    const args = JSON.parse(call.function.arguments) as { door: string };
    assert.ok(["north", "south"].includes(args.door));
  });

  test("tool_choice none answers in text", async () => {
    const completion = await worker.client.chat.completions.create({
      model: "tiny",
      messages,
      tools: [giveItem],
      tool_choice: "none",
      max_tokens: 16,
      temperature: 0,
    });
    assert.equal(completion.choices[0]?.message.tool_calls, undefined);
    assert.notEqual(completion.choices[0]?.finish_reason, "tool_calls");
    assert.equal(typeof completion.choices[0]?.message.content, "string");
  });

  test("tool_choice auto accepts either answer", async () => {
    const completion = await worker.client.chat.completions.create({ model: "tiny", messages, tools: [giveItem], max_tokens: 32, temperature: 0 });
    const choice = completion.choices[0]!;
    if (choice.message.tool_calls !== undefined) assert.equal(choice.finish_reason, "tool_calls");
    else assert.notEqual(choice.finish_reason, "tool_calls");
  });

  test("streamed tool call follows the delta contract", async () => {
    const response = await postRaw(
      worker.url,
      JSON.stringify({ model: "tiny", messages, tools: [giveItem], tool_choice: "required", max_tokens: 64, temperature: 0, stream: true }),
    );
    const chunks = (await readEvents(response)).filter((event): event is Chunk => event !== "[DONE]");
    const deltas = chunks.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls ?? []);
    assert.ok(deltas.length >= 2);
    const [first, ...rest] = deltas;
    assert.equal(first?.index, 0);
    assert.match(first?.id ?? "", /^call_/);
    assert.equal(first?.type, "function");
    assert.equal(first?.function?.name, "give_item");
    for (const delta of rest) {
      assert.equal(delta.index, 0);
      assert.equal(delta.id, undefined);
    }
    const args = deltas.map((delta) => delta.function?.arguments ?? "").join("");
    assert.doesNotThrow(() => JSON.parse(args));
    assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, "tool_calls");
    for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.choices[0]?.finish_reason, null);
  });

  test("SDK stream helper accumulates tool calls", async () => {
    const runner = worker.client.chat.completions.stream({
      model: "tiny",
      messages,
      tools: [giveItem],
      tool_choice: "required",
      max_tokens: 64,
      temperature: 0,
    });
    const final = await runner.finalChatCompletion();
    const call = final.choices[0]?.message.tool_calls?.[0];
    assert.equal(final.choices[0]?.finish_reason, "tool_calls");
    assert.ok(call?.type === "function");
    assert.equal(call.function.name, "give_item");
    const args = JSON.parse(call.function.arguments) as { item: string; count: number };
    assert.ok(["sword", "shield", "potion"].includes(args.item));
    assert.ok([1, 2, 3].includes(args.count));
  });

  test("stream and non-stream give the same call", async () => {
    const request = { model: "tiny", messages, tools: [giveItem], tool_choice: "required" as const, max_tokens: 64, temperature: 0 };
    const plain = await worker.client.chat.completions.create(request);
    const streamed = await worker.client.chat.completions.stream(request).finalChatCompletion();
    const plainCall = plain.choices[0]?.message.tool_calls?.[0];
    const streamedCall = streamed.choices[0]?.message.tool_calls?.[0];
    assert.ok(plainCall?.type === "function" && streamedCall?.type === "function");
    assert.equal(streamedCall.function.name, plainCall.function.name);
    assert.equal(streamedCall.function.arguments, plainCall.function.arguments);
  });

  test("follow-up turn with tool results", async () => {
    const first = await worker.client.chat.completions.create({
      model: "tiny",
      messages,
      tools: [giveItem],
      tool_choice: "required",
      max_tokens: 64,
      temperature: 0,
    });
    const assistant = first.choices[0]!.message;
    const call = assistant.tool_calls![0]!;
    const followUp = await worker.client.chat.completions.create({
      model: "tiny",
      messages: [...messages, assistant, { role: "tool", tool_call_id: call.id, content: '{"given": true}' }],
      tools: [giveItem],
      tool_choice: "none",
      max_tokens: 16,
      temperature: 0,
    });
    const withoutToolTurn = await worker.client.chat.completions.create({
      model: "tiny",
      messages,
      tools: [giveItem],
      tool_choice: "none",
      max_tokens: 1,
    });
    assert.equal(typeof followUp.choices[0]?.message.content, "string");
    assert.equal(followUp.choices[0]?.message.tool_calls, undefined);
    assert.ok((followUp.usage?.prompt_tokens ?? 0) > (withoutToolTurn.usage?.prompt_tokens ?? 0), "the tool turn is part of the prompt");
  });

  test("missing tool result is rejected", async () => {
    const response = await postRaw(
      worker.url,
      JSON.stringify({
        model: "tiny",
        messages: [
          ...messages,
          { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "give_item", arguments: "{}" } }] },
          { role: "user", content: "and?" },
        ],
      }),
    );
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { param: string; message: string } };
    assert.equal(body.error.param, "messages[1].tool_calls[0]");
    assert.match(body.error.message, /call_1/);
  });
});
