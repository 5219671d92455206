export type CircuitState = "closed" | "open" | "half_open";

export interface CircuitBreakerOptions {
  /** Consecutive failed requests that open the circuit. */
  failureThreshold: number;
  /** Time the circuit stays open before it lets one trial request through. */
  coolDownMs: number;
  /** Clock in milliseconds; tests pass a fake one. */
  now?: () => number;
  onStateChange?: (state: CircuitState, previous: CircuitState) => void;
}

/**
 * Admission for one request. The caller reports exactly one outcome: `success`, `failure`, or `release`
 * when the outcome is unrelated to the upstream's health (the client went away, the request was invalid).
 * Reports after the first are ignored.
 */
export interface CircuitPermit {
  success(): void;
  failure(): void;
  release(): void;
}

/**
 * A consecutive-failure circuit breaker. A closed circuit admits every request. After `failureThreshold`
 * failed requests in a row it opens and rejects every request for `coolDownMs`. Then it half-opens and
 * admits a single trial request: success closes the circuit, failure opens it again.
 */
export class CircuitBreaker {
  readonly #failureThreshold: number;
  readonly #coolDownMs: number;
  readonly #now: () => number;
  readonly #onStateChange: ((state: CircuitState, previous: CircuitState) => void) | undefined;
  #state: CircuitState = "closed";
  #consecutiveFailures = 0;
  #openedAt = 0;
  #trialInFlight = false;

  constructor(options: CircuitBreakerOptions) {
    this.#failureThreshold = options.failureThreshold;
    this.#coolDownMs = options.coolDownMs;
    this.#now = options.now ?? Date.now;
    this.#onStateChange = options.onStateChange;
  }

  /** The current state. Reading it moves an open circuit whose cool-down has passed to half-open. */
  get state(): CircuitState {
    if (this.#state === "open" && this.#now() - this.#openedAt >= this.#coolDownMs) {
      this.#transition("half_open");
    }
    return this.#state;
  }

  /** Milliseconds until an open circuit half-opens; 0 when it is not open. */
  get retryAfterMs(): number {
    if (this.state !== "open") return 0;
    return Math.max(0, this.#openedAt + this.#coolDownMs - this.#now());
  }

  /** Whether `tryAcquire` would admit a request now, without admitting one. */
  get wouldAdmit(): boolean {
    const state = this.state;
    return state === "closed" || (state === "half_open" && !this.#trialInFlight);
  }

  /** Admits a request, or returns undefined while the circuit is open or its one trial is in flight. */
  tryAcquire(): CircuitPermit | undefined {
    const state = this.state;
    if (state === "open") return undefined;
    if (state === "closed") return this.#permit(false);
    if (this.#trialInFlight) return undefined;
    this.#trialInFlight = true;
    return this.#permit(true);
  }

  #permit(isTrial: boolean): CircuitPermit {
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      if (isTrial) this.#trialInFlight = false;
      outcome();
    };
    return {
      success: () => settle(() => this.#recordSuccess()),
      failure: () => settle(() => this.#recordFailure(isTrial)),
      release: () => settle(() => undefined),
    };
  }

  #recordSuccess(): void {
    this.#consecutiveFailures = 0;
    if (this.#state !== "closed") this.#transition("closed");
  }

  #recordFailure(isTrial: boolean): void {
    if (isTrial) {
      this.#open();
      return;
    }
    // A request admitted before the circuit opened can fail after it did; the circuit is already open.
    if (this.#state !== "closed") return;
    this.#consecutiveFailures += 1;
    if (this.#consecutiveFailures >= this.#failureThreshold) this.#open();
  }

  #open(): void {
    this.#openedAt = this.#now();
    this.#consecutiveFailures = 0;
    if (this.#state !== "open") this.#transition("open");
  }

  #transition(state: CircuitState): void {
    const previous = this.#state;
    this.#state = state;
    this.#onStateChange?.(state, previous);
  }
}
