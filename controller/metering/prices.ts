import type { GeminiConfig, SpillwayConfig } from "../config/schema.ts";

/**
 * The ledger keeps money as whole nano-USD (1e-9 USD) so that sums are exact integers: a float64
 * represents them exactly up to 2^53 nano-USD, about 9 million USD. One request's cost and one accrual of
 * replica time are each rounded to the nearest nano-USD.
 */
export const nanoUsdPerUsd = 1_000_000_000;

export type GeminiPrices = GeminiConfig["pricesUsdPerMillion"];

/** Gemini 3 Flash prices in USD per 1M tokens, used when the config has no `overflow.gemini` block; they match the schema's defaults. */
export const defaultGeminiPrices: Readonly<GeminiPrices> = Object.freeze({ input: 0.5, cachedInput: 0.05, output: 3 });

/** Token counts of one request; `cachedPrompt` is the part of `prompt` served from the backend's cache. */
export interface TokenCounts {
  prompt: number;
  cachedPrompt: number;
  completion: number;
}

/** Returns the configured Gemini prices, or the defaults when Gemini is not configured. */
export function geminiPricesFrom(config: SpillwayConfig): GeminiPrices {
  return config.overflow.gemini?.pricesUsdPerMillion ?? { ...defaultGeminiPrices };
}

/** Computes what Gemini charges for the tokens, in USD. */
export function geminiCostUsd(tokens: TokenCounts, prices: GeminiPrices): number {
  return usdFromNano(geminiCostNanoUsd(tokens, prices));
}

/**
 * Computes what Gemini charges for the tokens, in whole nano-USD: uncached prompt tokens at the input
 * price, cached prompt tokens at the cached-input price and completion tokens at the output price.
 * Throws a RangeError for counts that are not whole numbers or more cached than prompt tokens.
 */
export function geminiCostNanoUsd(tokens: TokenCounts, prices: GeminiPrices): number {
  checkTokenCounts(tokens);
  // USD per 1M tokens times 1e9 nano-USD per USD over 1e6 tokens: nano-USD per token.
  const nanoPerToken = nanoUsdPerUsd / 1_000_000;
  const uncachedPrompt = tokens.prompt - tokens.cachedPrompt;
  const cost =
    uncachedPrompt * prices.input * nanoPerToken +
    tokens.cachedPrompt * prices.cachedInput * nanoPerToken +
    tokens.completion * prices.output * nanoPerToken;
  return Math.round(cost);
}

/** Computes the cost of replica time in nano-USD, unrounded so that callers can carry the fraction. */
export function replicaCostNanoUsd(replicaSeconds: number, costPerReplicaHourUsd: number): number {
  return (replicaSeconds * costPerReplicaHourUsd * nanoUsdPerUsd) / 3600;
}

export function usdFromNano(nanoUsd: number): number {
  return nanoUsd / nanoUsdPerUsd;
}

/** Returns the spend per 1M tokens, or null when there were no tokens to divide by. */
export function usdPerMillionTokens(spendUsd: number, tokens: number): number | null {
  return tokens > 0 ? (spendUsd * 1_000_000) / tokens : null;
}

function checkTokenCounts(tokens: TokenCounts): void {
  for (const [name, count] of Object.entries(tokens)) {
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new RangeError(`Invalid ${name} token count ${count}: expected a whole number of at least 0.`);
    }
  }
  if (tokens.cachedPrompt > tokens.prompt) {
    throw new RangeError(`Invalid cached prompt token count ${tokens.cachedPrompt}: it exceeds the ${tokens.prompt} prompt tokens.`);
  }
}
