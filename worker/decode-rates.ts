/** Weight of the newest request in the moving average. */
const newestWeight = 0.2;

/**
 * Recent decode speed per variant: an exponential moving average over finished requests of the tokens
 * after the first divided by the time since the first output. It measures one request's speed at the
 * load it ran under, which lets a controller check that a lower rung really decodes faster.
 */
export class DecodeRates {
  readonly #rates = new Map<string, number>();

  /** Adds one finished request; requests with fewer than two tokens carry no decode time and are skipped. */
  observe(quant: string, completionTokens: number, decodeSeconds: number): void {
    if (completionTokens < 2 || decodeSeconds <= 0) return;
    const rate = (completionTokens - 1) / decodeSeconds;
    const previous = this.#rates.get(quant);
    this.#rates.set(quant, previous === undefined ? rate : (1 - newestWeight) * previous + newestWeight * rate);
  }

  /** Tokens per second by quantization, rounded to 0.1, for variants that finished a request. */
  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.#rates].map(([quant, rate]) => [quant, Math.round(rate * 10) / 10]));
  }
}
