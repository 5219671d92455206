import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { RawChatRequest } from "../api/chat-request.ts";
import { ApiError } from "../api/errors.ts";
import { configSchema } from "../controller/config/schema.ts";
import { floorRung, requestClassOf, resolvePool } from "../controller/gateway/routing.ts";

const variants = [{ quant: "Q4_K_M", model: "a.gguf" }, { quant: "Q3_K_M", model: "b.gguf" }, { quant: "Q2_K", model: "c.gguf" }];
const config = configSchema.parse({
  pools: [
    { name: "npc", aliases: ["gpt-4o-mini"], variants, qualityFloors: { json_schema: "Q3_K_M", tools: "Q4_K_M", default: "Q2_K" } },
    { name: "quests", variants },
    { name: "classify", variants },
  ],
  routing: {
    auto: [
      { when: { responseFormat: "json_schema" }, pool: "quests" },
      { when: { task: "classify" }, pool: "classify" },
    ],
    defaultPool: "npc",
  },
});

function request(fields: Partial<RawChatRequest>): RawChatRequest {
  return { model: "auto", messages: [{ role: "user", content: "hi" }], ...fields };
}

const schemaFormat = { type: "json_schema", json_schema: { name: "quest", schema: { type: "object" } } } as const;
const tools = [{ type: "function", function: { name: "give" } }] as const;

describe("routing", () => {
  test("name and alias select a pool", () => {
    assert.equal(resolvePool(config, request({ model: "npc" })).name, "npc");
    assert.equal(resolvePool(config, request({ model: "gpt-4o-mini" })).name, "npc");
  });

  test("unknown model is model_not_found", () => {
    assert.throws(
      () => resolvePool(config, request({ model: "gpt-5" })),
      (error: unknown) => error instanceof ApiError && error.status === 404 && error.code === "model_not_found",
    );
  });

  test("auto follows rules in order", () => {
    assert.equal(resolvePool(config, request({ response_format: schemaFormat })).name, "quests");
    assert.equal(resolvePool(config, request({ metadata: { task: "classify" } })).name, "classify");
    assert.equal(resolvePool(config, request({})).name, "npc");
  });

  test("request class picks the strictest need", () => {
    assert.equal(requestClassOf(request({ response_format: schemaFormat, tools: [...tools] })), "json_schema");
    assert.equal(requestClassOf(request({ response_format: { type: "json_object" } })), "json_object");
    assert.equal(requestClassOf(request({ tools: [...tools] })), "tools");
    assert.equal(requestClassOf(request({ tools: [...tools], tool_choice: "none" })), "default");
    assert.equal(requestClassOf(request({})), "default");
  });

  test("floors map to ladder rungs", () => {
    const npc = config.pools[0]!;
    assert.equal(floorRung(npc, "json_schema"), 1);
    assert.equal(floorRung(npc, "tools"), 0);
    assert.equal(floorRung(npc, "default"), 2);
    assert.equal(floorRung(npc, "json_object"), 2, "a class without its own floor takes the default floor");
    assert.equal(floorRung(config.pools[1]!, "json_schema"), 2, "no floors means every rung");
  });
});
