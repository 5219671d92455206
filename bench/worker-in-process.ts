import {
  getLlama,
  LlamaChat,
  LlamaLogLevel,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  type Llama,
  type LlamaModel,
} from "node-llama-cpp";

import { promptText } from "./worker-requests.ts";
import type { RequestSample } from "./load.ts";

export interface InProcessOptions {
  modelPath: string;
  threads: number;
  /** Sequences on the context, as many as the worker's slots so both decode on the same context shape. */
  sequences: number;
  contextSize: number;
  maxTokens: number;
}

/**
 * node-llama-cpp used directly, with no HTTP in between: the same context settings, chat wrapper and
 * sampling as the worker's, so the difference to the worker is what serving adds.
 */
export class InProcessEngine {
  readonly #llama: Llama;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #sequence: LlamaContextSequence;
  readonly #chatWrapper: ChatWrapper;
  readonly #maxTokens: number;

  private constructor(llama: Llama, model: LlamaModel, context: LlamaContext, maxTokens: number) {
    this.#llama = llama;
    this.#model = model;
    this.#context = context;
    this.#sequence = context.getSequence();
    this.#chatWrapper = resolveChatWrapper(model);
    this.#maxTokens = maxTokens;
  }

  static async load(options: InProcessOptions): Promise<InProcessEngine> {
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: options.threads, logLevel: LlamaLogLevel.warn });
    const model = await llama.loadModel({ modelPath: options.modelPath });
    const context = await model.createContext({
      sequences: options.sequences,
      contextSize: options.contextSize,
      threads: options.threads,
      batchSize: Math.min(512, options.contextSize),
    });
    return new InProcessEngine(llama, model, context, options.maxTokens);
  }

  /** Generates a reply to the prompt of request `requestId` and times it as the HTTP client does. */
  async send(requestId: number | string): Promise<RequestSample> {
    const history: ChatHistoryItem[] = [
      { type: "user", text: promptText(requestId) },
      { type: "model", response: [] },
    ];
    const promptTokens = this.#chatWrapper
      .generateContextState({ chatHistory: history })
      .contextText.tokenize(this.#model.tokenizer).length;
    const chat = new LlamaChat({ contextSequence: this.#sequence, chatWrapper: this.#chatWrapper });
    const outputTokensBefore = this.#sequence.tokenMeter.usedOutputTokens;
    let firstTextAt: number | undefined;
    let lastTextAt: number | undefined;
    const started = performance.now();
    try {
      await chat.generateResponse(history, {
        maxTokens: this.#maxTokens,
        temperature: 0,
        repeatPenalty: false,
        onTextChunk: (text) => {
          if (text === "") return;
          lastTextAt = performance.now();
          firstTextAt ??= lastTextAt;
        },
      });
    } finally {
      chat.dispose({ disposeSequence: false });
    }
    if (firstTextAt === undefined || lastTextAt === undefined) throw new Error("node-llama-cpp generated no text");
    return {
      timeToFirstTokenSeconds: (firstTextAt - started) / 1000,
      decodeSeconds: (lastTextAt - firstTextAt) / 1000,
      completionTokens: this.#sequence.tokenMeter.usedOutputTokens - outputTokensBefore,
      promptTokens,
    };
  }

  async dispose(): Promise<void> {
    await this.#context.dispose();
    await this.#model.dispose();
    await this.#llama.dispose();
  }
}
