import { randomBytes } from "node:crypto";

import {
  LlamaChat,
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatWrapper,
  type LlamaContextSequence,
  type LLamaChatGenerateResponseOptions,
} from "node-llama-cpp";

import type { ChatRequest } from "../api/chat-request.ts";
import { ApiError } from "../api/errors.ts";
import { ForcedFunctionCallChatWrapper } from "./forced-tool-call.ts";
import { toChatHistory } from "./history.ts";
import type { OutputConstraint, StructuredOutputs } from "./structured-output.ts";

export type FinishReason = "stop" | "length" | "tool_calls";

export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

/** Receives output as it is decoded; the non-stream path passes one that ignores everything. */
export interface GenerationListener {
  text(delta: string): void;
  toolCallStart(index: number, id: string, name: string): void;
  toolCallArguments(index: number, fragment: string): void;
}

/** A request turned into what node-llama-cpp needs, checked before a slot is taken. */
export interface PreparedChat {
  history: ChatHistoryItem[];
  chatWrapper: ChatWrapper;
  functions: ChatModelFunctions | undefined;
  constraint: OutputConstraint | undefined;
  promptTokens: number;
  maxTokens: number;
}

export interface Generation {
  content: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Seconds from the start of generation to the first decoded output, or undefined when there was none. */
  firstOutputSeconds: number | undefined;
  decodeSeconds: number;
}

interface ModelContext {
  chatWrapper: ChatWrapper;
  tokenize(text: ReturnType<ChatWrapper["generateContextState"]>["contextText"]): number;
  contextSize: number;
  structuredOutputs: StructuredOutputs;
}

/**
 * Validates everything about a request that depends on the model (tools, schema, prompt length) and
 * renders its prompt once to count `prompt_tokens`. The count comes from the rendered prompt rather than
 * from the sequence's token meter, because the meter skips tokens reused from the KV cache.
 */
export async function prepareChat(request: ChatRequest, model: ModelContext): Promise<PreparedChat> {
  const history = toChatHistory(request.messages);
  const constraint = await model.structuredOutputs.forResponseFormat(request.responseFormat);
  const allFunctions = request.tools.length > 0 ? model.structuredOutputs.toFunctions(request.tools) : undefined;

  if (constraint !== undefined && request.toolChoice !== "none" && allFunctions !== undefined) {
    throw new ApiError(
      400,
      "'response_format' json_object or json_schema cannot be combined with tools the model may call. Set 'tool_choice' to \"none\" or drop 'response_format'.",
      { param: "response_format" },
    );
  }
  const functions = selectFunctions(allFunctions, request);
  const forced = request.toolChoice === "required" || typeof request.toolChoice === "object";
  const chatWrapper = forced ? new ForcedFunctionCallChatWrapper(model.chatWrapper) : model.chatWrapper;

  const rendered = chatWrapper.generateContextState({
    chatHistory: history,
    availableFunctions: functions,
    documentFunctionParams: true,
  });
  const promptTokens = model.tokenize(rendered.contextText);
  const maxTokens = resolveMaxTokens(request, promptTokens, model.contextSize);
  return { history, chatWrapper, functions, constraint, promptTokens, maxTokens };
}

function selectFunctions(functions: ChatModelFunctions | undefined, request: ChatRequest): ChatModelFunctions | undefined {
  if (functions === undefined || request.toolChoice === "none") return undefined;
  if (typeof request.toolChoice === "object") {
    const name = request.toolChoice.name;
    return { [name]: functions[name] ?? {} };
  }
  return functions;
}

function resolveMaxTokens(request: ChatRequest, promptTokens: number, contextSize: number): number {
  const available = contextSize - promptTokens;
  const requested = request.maxTokens ?? available;
  if (available <= 0 || requested > available) {
    const asked = request.maxTokens === undefined ? "" : ` plus ${request.maxTokens} completion tokens`;
    // Names the field the client sent, since both set the same limit.
    const field = request.raw.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
    throw new ApiError(
      400,
      `This model's context is ${contextSize} tokens, but the request needs ${promptTokens} prompt tokens${asked}. ` +
        `Shorten the messages or lower '${field}'.`,
      { param: request.maxTokens === undefined || available <= 0 ? "messages" : field, code: "context_length_exceeded" },
    );
  }
  return requested;
}

/** Runs one prepared request on a slot's sequence. Returns early, with what was decoded, when `signal` aborts. */
export async function generate(
  sequence: LlamaContextSequence,
  request: ChatRequest,
  prepared: PreparedChat,
  listener: GenerationListener,
  signal: AbortSignal,
): Promise<Generation> {
  const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: prepared.chatWrapper });
  const started = performance.now();
  const outputTokensBefore = sequence.tokenMeter.usedOutputTokens;
  let firstOutputAt: number | undefined;
  const markOutput = () => {
    firstOutputAt ??= performance.now();
  };
  const calls = new ToolCallTracker(listener, markOutput);

  try {
    const options: LLamaChatGenerateResponseOptions<ChatModelFunctions> = {
      ...samplingOptions(request),
      maxTokens: prepared.maxTokens,
      customStopTriggers: request.stop.length > 0 ? request.stop : undefined,
      signal,
      stopOnAbortSignal: true,
      onTextChunk(text) {
        if (text === "") return;
        markOutput();
        listener.text(text);
      },
    };
    if (prepared.constraint !== undefined) options.grammar = prepared.constraint.grammar;
    if (prepared.functions !== undefined) {
      options.functions = prepared.functions;
      options.documentFunctionParams = true;
      options.maxParallelFunctionCalls = request.parallelToolCalls ? undefined : 1;
      options.onFunctionCallParamsChunk = (chunk) => calls.onParamsChunk(chunk.callIndex, chunk.functionName, chunk.paramsChunk);
    }
    const response = await chat.generateResponse(prepared.history, options);

    const toolCalls = calls.finish(response.functionCalls ?? []);
    const finishReason = toFinishReason(response.metadata.stopReason, toolCalls.length);
    if (prepared.constraint !== undefined && finishReason === "stop" && !signal.aborted) {
      prepared.constraint.validate(response.response);
    }

    const finished = performance.now();
    return {
      content: response.response,
      toolCalls,
      finishReason,
      promptTokens: prepared.promptTokens,
      completionTokens: sequence.tokenMeter.usedOutputTokens - outputTokensBefore,
      firstOutputSeconds: firstOutputAt === undefined ? undefined : (firstOutputAt - started) / 1000,
      decodeSeconds: (finished - (firstOutputAt ?? started)) / 1000,
    };
  } finally {
    chat.dispose({ disposeSequence: false });
  }
}

function samplingOptions(request: ChatRequest) {
  const penalize = request.presencePenalty !== 0 || request.frequencyPenalty !== 0;
  return {
    temperature: request.temperature,
    topP: request.topP,
    seed: request.seed,
    repeatPenalty: penalize
      ? { penalty: 1, presencePenalty: request.presencePenalty, frequencyPenalty: request.frequencyPenalty }
      : (false as const),
  };
}

function toFinishReason(stopReason: string, toolCallCount: number): FinishReason {
  if (toolCallCount > 0) return "tool_calls";
  if (stopReason === "maxTokens") return "length";
  return "stop";
}

/**
 * Gives each function call an OpenAI tool call id and index as its first parameter fragment arrives, and
 * keeps the raw argument text so stream and non-stream responses carry the same `arguments` string.
 */
class ToolCallTracker {
  readonly #calls = new Map<number, ToolCall>();
  readonly #pendingWhitespace = new Map<number, string>();
  readonly #listener: GenerationListener;
  readonly #markOutput: () => void;

  constructor(listener: GenerationListener, markOutput: () => void) {
    this.#listener = listener;
    this.#markOutput = markOutput;
  }

  onParamsChunk(callIndex: number, name: string, fragment: string): void {
    this.#markOutput();
    const call = this.#start(callIndex, name);
    // The grammar lets the model pad the JSON with trailing newlines. Whitespace is held back until
    // more JSON follows, so neither response form carries the padding.
    const pending = (this.#pendingWhitespace.get(callIndex) ?? "") + fragment;
    const text = pending.trimEnd();
    this.#pendingWhitespace.set(callIndex, pending.slice(text.length));
    if (text === "") return;
    call.arguments += text;
    this.#listener.toolCallArguments(callIndex, text);
  }

  /** Completes calls from the final response: a call with no parameters may never have streamed a fragment. */
  finish(functionCalls: readonly { functionName: string; params: unknown }[]): ToolCall[] {
    functionCalls.forEach((functionCall, index) => {
      const call = this.#start(index, functionCall.functionName);
      if (call.arguments.trim() === "") {
        call.arguments = JSON.stringify(functionCall.params ?? {});
        this.#listener.toolCallArguments(index, call.arguments);
      }
    });
    return [...this.#calls.entries()]
      .filter(([index]) => index < functionCalls.length)
      .sort(([a], [b]) => a - b)
      .map(([, call]) => call);
  }

  #start(index: number, name: string): ToolCall {
    let call = this.#calls.get(index);
    if (call === undefined) {
      call = { id: `call_${randomBytes(12).toString("hex")}`, name, arguments: "" };
      this.#calls.set(index, call);
      this.#listener.toolCallStart(index, call.id, name);
    }
    return call;
  }
}
