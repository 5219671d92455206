import {
  ChatWrapper,
  LlamaText,
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelFunctions,
  type ChatModelResponse,
  type ChatWrapperGenerateContextStateOptions,
  type ChatWrapperGeneratedContextState,
  type ChatWrapperGenerateInitialHistoryOptions,
  type ChatWrapperSettings,
} from "node-llama-cpp";

/**
 * Wraps a model's chat wrapper so that the response must start with a function call, for `tool_choice`
 * "required" or a named function. It renders the prompt exactly as the inner wrapper does, then sets
 * `noPrefixTrigger` so node-llama-cpp enters function-calling mode when no other prefix matched.
 */
export class ForcedFunctionCallChatWrapper extends ChatWrapper {
  readonly wrapperName: string;
  override readonly settings: ChatWrapperSettings;
  readonly #inner: ChatWrapper;

  constructor(inner: ChatWrapper) {
    super();
    this.#inner = inner;
    this.wrapperName = `${inner.wrapperName} (forced function call)`;
    this.settings = inner.settings;
  }

  override generateContextState(options: ChatWrapperGenerateContextStateOptions): ChatWrapperGeneratedContextState {
    const state = this.#inner.generateContextState(options);
    return {
      contextText: state.contextText,
      stopGenerationTriggers: state.stopGenerationTriggers,
      noPrefixTrigger: { type: "functionCall", inject: LlamaText([]) },
      detectFunctionCalls: true,
    };
  }

  override generateFunctionCallsAndResults(functionCalls: ChatModelFunctionCall[], useRawCall?: boolean) {
    return this.#inner.generateFunctionCallsAndResults(functionCalls, useRawCall);
  }

  override generateFunctionCall(name: string, params: unknown): LlamaText {
    return this.#inner.generateFunctionCall(name, params);
  }

  override generateFunctionCallResult(functionName: string, functionParams: unknown, result: unknown): LlamaText {
    return this.#inner.generateFunctionCallResult(functionName, functionParams, result);
  }

  override generateModelResponseText(modelResponse: ChatModelResponse["response"], useRawValues?: boolean): LlamaText {
    return this.#inner.generateModelResponseText(modelResponse, useRawValues);
  }

  override generateAvailableFunctionsSystemText(
    availableFunctions: ChatModelFunctions,
    options: { documentParams?: boolean },
  ): LlamaText {
    return this.#inner.generateAvailableFunctionsSystemText(availableFunctions, options);
  }

  override addAvailableFunctionsSystemMessageToHistory(
    history: readonly ChatHistoryItem[],
    availableFunctions?: ChatModelFunctions,
    options?: { documentParams?: boolean },
  ): readonly ChatHistoryItem[] {
    return this.#inner.addAvailableFunctionsSystemMessageToHistory(history, availableFunctions, options);
  }

  override generateInitialChatHistory(options?: ChatWrapperGenerateInitialHistoryOptions): ChatHistoryItem[] {
    return this.#inner.generateInitialChatHistory(options);
  }
}
