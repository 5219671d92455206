import { z } from "zod";

import { invalidRequest, type ApiError } from "./errors.ts";

/**
 * The chat completions request Spillway accepts, checked field by field so that every rejection names the
 * field (`param`) and what to send instead. Fields OpenAI defines but Spillway cannot honour are rejected
 * here rather than silently ignored, so a client never gets a response that quietly differs from its request.
 */

const textPart = z.object({ type: z.literal("text"), text: z.string() });

/** Content parts are checked loosely here and precisely in `contentText`, which names a non-text part. */
const contentPart = z.looseObject({ type: z.string() });
const content = z.union([z.string(), z.array(contentPart)]);

const toolCall = z.object({
  id: z.string().min(1),
  type: z.literal("function"),
  function: z.object({ name: z.string().min(1), arguments: z.string() }),
});

const message = z.discriminatedUnion("role", [
  z.object({ role: z.literal("system"), content, name: z.string().optional() }),
  z.object({ role: z.literal("developer"), content, name: z.string().optional() }),
  z.object({ role: z.literal("user"), content, name: z.string().optional() }),
  z.object({
    role: z.literal("assistant"),
    content: content.nullish(),
    tool_calls: z.array(toolCall).nullish(),
    name: z.string().optional(),
    refusal: z.string().nullish(),
  }),
  z.object({ role: z.literal("tool"), content, tool_call_id: z.string().min(1) }),
]);

const functionTool = z.object({
  type: z.literal("function"),
  function: z.object({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, underscores or dashes"),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: z.boolean().nullish(),
  }),
});

const toolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string() }) }),
]);

const responseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, underscores or dashes"),
      description: z.string().optional(),
      schema: z.record(z.string(), z.unknown()).optional(),
      strict: z.boolean().nullish(),
    }),
  }),
]);

const positiveInt = z.int().min(1);

const requestSchema = z.strictObject({
  model: z.string().min(1),
  messages: z.array(message).min(1),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullish(),
  max_tokens: positiveInt.nullish(),
  max_completion_tokens: positiveInt.nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).min(1).max(4)]).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  n: positiveInt.nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.int().min(0).max(20).nullish(),
  response_format: responseFormat.optional(),
  tools: z.array(functionTool).optional(),
  tool_choice: toolChoice.optional(),
  parallel_tool_calls: z.boolean().optional(),
  user: z.string().optional(),
  metadata: z.record(z.string(), z.string()).nullish(),
  store: z.boolean().nullish(),
  service_tier: z.string().nullish(),
  reasoning_effort: z.string().nullish(),
  prompt_cache_key: z.string().optional(),
  safety_identifier: z.string().optional(),
});

export type RawChatRequest = z.infer<typeof requestSchema>;
export type RawMessage = z.infer<typeof message>;
export type FunctionTool = z.infer<typeof functionTool>;

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; name: string; schema: Record<string, unknown> };

export type ToolChoice = "none" | "auto" | "required" | { name: string };

/** A validated request with OpenAI's defaults applied. */
export interface ChatRequest {
  /** The request as the client sent it, after validation, for relaying to another server. */
  raw: RawChatRequest;
  model: string;
  messages: RawMessage[];
  stream: boolean;
  includeUsage: boolean;
  /** Unset means "until the context is full". */
  maxTokens: number | undefined;
  temperature: number;
  topP: number | undefined;
  seed: number | undefined;
  stop: string[];
  presencePenalty: number;
  frequencyPenalty: number;
  responseFormat: ResponseFormat;
  tools: FunctionTool[];
  toolChoice: ToolChoice;
  parallelToolCalls: boolean;
  metadata: Record<string, string>;
}

/** Validates a parsed JSON body. Throws an `ApiError` (400) that names the first invalid field. */
export function parseChatRequest(body: unknown): ChatRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidRequest(
      "The request body must be a JSON object with 'model' and 'messages'. Send it with Content-Type: application/json.",
      null,
    );
  }
  const result = requestSchema.safeParse(body);
  if (!result.success) throw describeIssue(result.error.issues[0]);
  const raw = result.data;
  rejectUnservedOptions(raw);
  return normalize(raw);
}

function rejectUnservedOptions(raw: RawChatRequest): void {
  if (raw.n != null && raw.n !== 1) {
    throw invalidRequest(
      `'n' is ${raw.n}, but Spillway returns one choice per request. Send 'n' separate requests (each may use a different 'seed') instead.`,
      "n",
    );
  }
  if (raw.logprobs === true || (raw.top_logprobs ?? 0) > 0) {
    throw invalidRequest(
      "Log probabilities are not available from this server. Remove 'logprobs' and 'top_logprobs' from the request.",
      raw.logprobs === true ? "logprobs" : "top_logprobs",
    );
  }
  if (raw.stream_options != null && raw.stream !== true) {
    throw invalidRequest("'stream_options' is only allowed when 'stream' is true.", "stream_options");
  }
  if (raw.max_tokens != null && raw.max_completion_tokens != null && raw.max_tokens !== raw.max_completion_tokens) {
    throw invalidRequest(
      "'max_tokens' and 'max_completion_tokens' differ. Send only 'max_completion_tokens'.",
      "max_tokens",
    );
  }
  raw.messages.forEach((entry, index) => {
    if (entry.content != null) contentText(entry.content, `messages[${index}].content`);
  });
}

function normalize(raw: RawChatRequest): ChatRequest {
  let stop: string[] = [];
  if (typeof raw.stop === "string") stop = [raw.stop];
  else if (Array.isArray(raw.stop)) stop = raw.stop;
  return {
    raw,
    model: raw.model,
    messages: raw.messages,
    stream: raw.stream === true,
    includeUsage: raw.stream_options?.include_usage === true,
    maxTokens: raw.max_completion_tokens ?? raw.max_tokens ?? undefined,
    temperature: raw.temperature ?? 1,
    topP: raw.top_p ?? undefined,
    seed: raw.seed ?? undefined,
    stop: stop.filter((sequence) => sequence.length > 0),
    presencePenalty: raw.presence_penalty ?? 0,
    frequencyPenalty: raw.frequency_penalty ?? 0,
    responseFormat: normalizeResponseFormat(raw.response_format),
    tools: raw.tools ?? [],
    toolChoice: normalizeToolChoice(raw),
    parallelToolCalls: raw.parallel_tool_calls ?? true,
    metadata: raw.metadata ?? {},
  };
}

function normalizeResponseFormat(format: RawChatRequest["response_format"]): ResponseFormat {
  if (format === undefined || format.type === "text") return { type: "text" };
  if (format.type === "json_object") return { type: "json_object" };
  if (format.json_schema.schema === undefined) {
    throw invalidRequest(
      "'response_format.json_schema.schema' is missing. Send the JSON schema the output must follow.",
      "response_format.json_schema.schema",
    );
  }
  return { type: "json_schema", name: format.json_schema.name, schema: format.json_schema.schema };
}

function normalizeToolChoice(raw: RawChatRequest): ToolChoice {
  const tools = raw.tools ?? [];
  const choice = raw.tool_choice ?? (tools.length > 0 ? "auto" : "none");
  if (choice === "none" || choice === "auto") return choice;
  if (tools.length === 0) {
    throw invalidRequest("'tool_choice' requires 'tools'. Send the tools the model may call.", "tool_choice");
  }
  if (choice === "required") return choice;
  if (!tools.some((tool) => tool.function.name === choice.function.name)) {
    throw invalidRequest(
      `'tool_choice' names the function '${choice.function.name}', which is not in 'tools'.`,
      "tool_choice.function.name",
    );
  }
  return { name: choice.function.name };
}

/** Joins a message's text parts. Throws a 400 naming the first part that is not text. */
export function contentText(value: string | readonly { type: string }[], param: string): string {
  if (typeof value === "string") return value;
  const texts: string[] = [];
  value.forEach((part, index) => {
    const parsed = textPart.safeParse(part);
    if (!parsed.success) {
      const kind = part.type === "text" ? "a text part without a string 'text'" : `a '${part.type}' part`;
      throw invalidRequest(
        `'${param}[${index}]' is ${kind}. This model reads text only: send content as a string or as parts of type 'text'.`,
        `${param}[${index}]`,
      );
    }
    texts.push(parsed.data.text);
  });
  return texts.join("\n");
}

/** Turns a zod path into the dotted, indexed form OpenAI uses in `param`, e.g. `messages[0].content`. */
export function formatParam(path: readonly PropertyKey[]): string {
  let param = "";
  for (const key of path) {
    if (typeof key === "number") param += `[${key}]`;
    else param += param === "" ? String(key) : `.${String(key)}`;
  }
  return param;
}

function describeIssue(issue: z.core.$ZodIssue | undefined): ApiError {
  if (issue === undefined) return invalidRequest("The request body is invalid.", null);
  const deepest = deepestUnionIssue(issue);
  const path = [...issue.path, ...(deepest === issue ? [] : deepest.path)];
  if (deepest.code === "unrecognized_keys") {
    const param = formatParam([...path, deepest.keys[0] ?? ""]);
    return invalidRequest(
      `Unrecognized request argument '${param}'. Remove it; docs/api.md lists the fields Spillway accepts.`,
      param,
    );
  }
  const param = formatParam(path);
  const detail = deepest.message.replace(/^Invalid input: /, "");
  if (path.length === 0) return invalidRequest(`The request body is invalid: ${detail}.`, null);
  if (deepest.code === "invalid_type" && deepest.message.endsWith("received undefined")) {
    return invalidRequest(`Missing required parameter '${param}'.`, param);
  }
  return invalidRequest(`Invalid value for '${param}': ${detail}.`, param);
}

/** Picks, inside a union failure, the branch that got furthest, because it is the one the client meant. */
function deepestUnionIssue(issue: z.core.$ZodIssue): z.core.$ZodIssue {
  if (issue.code !== "invalid_union" || issue.errors.length === 0) return issue;
  let best: z.core.$ZodIssue = issue;
  let bestScore = -1;
  for (const branch of issue.errors) {
    for (const candidate of branch) {
      // A type mismatch usually means "wrong branch"; any other failure at the same depth is more specific.
      const score = candidate.path.length * 2 + (candidate.code === "invalid_type" ? 0 : 1);
      if (score > bestScore) {
        best = candidate;
        bestScore = score;
      }
    }
  }
  return best;
}
