import type { BackendName } from "../backends/types.ts";

/** The way a metered request ended. Every outcome is billed for the tokens it produced. */
export type UsageOutcome = "ok" | "client_abort" | "backend_error";

/** The tokens one request used, as the gateway counted them. */
export interface UsageRecord {
  /** Milliseconds since the Unix epoch, when the request finished. */
  at: number;
  requestId: string;
  tenant: string;
  pool: string;
  backend: BackendName;
  /** Quantization of the local replica that served it; null for Gemini. */
  quant: string | null;
  promptTokens: number;
  /** Prompt tokens the backend served from its cache, billed at the cached-input price on Gemini. */
  cachedPromptTokens: number;
  completionTokens: number;
  outcome: UsageOutcome;
}

/** The cost of a request, returned when it is recorded. */
export interface RecordedSpend {
  /** USD billed now: the Gemini price for Gemini tokens, 0 for local ones (they are billed by replica time). */
  spendUsd: number;
  /** Cost the same tokens would have had on Gemini. */
  geminiEquivalentUsd: number;
}

export type UsageGroup = "tenant" | "pool" | "backend";

/** One row of a usage summary. */
export interface UsageRow {
  key: string;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  spendUsd: number;
  geminiEquivalentUsd: number;
  /** spendUsd per million tokens (prompt + completion); null when there were no tokens. */
  usdPerMillionTokens: number | null;
}
