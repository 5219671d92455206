import { setTimeout as sleep } from "node:timers/promises";

/** One request as the client saw it. */
export interface Outcome {
  /** Position in the rate profile of the step that sent it. */
  step: number;
  /** HTTP status of the response, or 0 when no response arrived. */
  status: number;
  /** Whether the status was 200 and the stream ended with `[DONE]`. */
  ok: boolean;
  /** Seconds from sending to the first content, or undefined when none arrived. */
  timeToFirstTokenSeconds: number | undefined;
  /** `x-spillway-backend` of the response: local or gemini. */
  backend: string | undefined;
}

export interface RequestTarget {
  url: string;
  pool: string;
  maxTokens: number;
  timeoutMilliseconds: number;
}

const doneTail = "data: [DONE]";

/** Sends one streaming chat completion and measures time to first token from the first content delta. */
export async function streamRequest(target: RequestTarget, id: string, step: number): Promise<Outcome> {
  const started = performance.now();
  const outcome: Outcome = { step, status: 0, ok: false, timeToFirstTokenSeconds: undefined, backend: undefined };
  try {
    const response = await fetch(`${target.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: target.pool,
        messages: [{ role: "user", content: `Request ${id}: describe a spillway at dawn.` }],
        max_tokens: target.maxTokens,
        temperature: 0,
        stream: true,
      }),
      signal: AbortSignal.timeout(target.timeoutMilliseconds),
    });
    outcome.status = response.status;
    outcome.backend = response.headers.get("x-spillway-backend") ?? undefined;
    const ended = await readStream(response, () => {
      outcome.timeToFirstTokenSeconds = (performance.now() - started) / 1000;
    });
    outcome.ok = response.status === 200 && ended;
  } catch {
    outcome.ok = false;
  }
  return outcome;
}

/**
 * Reads an event stream to its end. Calls `onFirstToken` at the first event with content, and returns
 * whether the stream's last event was `[DONE]`. Only events before the first token are parsed.
 */
async function readStream(response: Response, onFirstToken: () => void): Promise<boolean> {
  if (response.body === null) return false;
  const decoder = new TextDecoder();
  let pending = "";
  let seenToken = false;
  let tail = "";
  for await (const bytes of response.body) {
    const text = decoder.decode(bytes as Uint8Array, { stream: true });
    tail = (tail + text).slice(-64);
    if (seenToken) continue;
    pending += text;
    const events = pending.split("\n\n");
    pending = events.pop() ?? "";
    if (events.some(hasContent)) {
      seenToken = true;
      onFirstToken();
    }
  }
  return tail.trimEnd().endsWith(doneTail);
}

function hasContent(event: string): boolean {
  const data = event.startsWith("data: ") ? event.slice("data: ".length) : "";
  if (data === "" || data === "[DONE]") return false;
  try {
    const chunk = JSON.parse(data) as { choices?: Array<{ delta?: { content?: string | null } }> };
    const content = chunk.choices?.[0]?.delta?.content;
    return typeof content === "string" && content.length > 0;
  } catch {
    return false;
  }
}

/** One step of the open-loop profile: a fixed arrival rate held for a number of seconds. */
export interface RateStep {
  requestsPerSecond: number;
  seconds: number;
}

/**
 * Sends requests at fixed arrival times, whatever the responses do (open loop), and waits for every
 * request to finish. `onStep` is called as each step begins.
 */
export async function runOpenLoop(
  target: RequestTarget,
  steps: readonly RateStep[],
  onStep: (step: number) => void,
): Promise<Outcome[]> {
  const pending: Promise<Outcome>[] = [];
  const started = performance.now();
  let stepStart = 0;
  for (const [index, step] of steps.entries()) {
    onStep(index);
    const count = Math.round(step.requestsPerSecond * step.seconds);
    for (let sent = 0; sent < count; sent++) {
      const due = started + (stepStart + sent / step.requestsPerSecond) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      pending.push(streamRequest(target, `${index}-${sent}`, index));
    }
    stepStart += step.seconds;
    const stepEnd = started + stepStart * 1000 - performance.now();
    if (stepEnd > 0) await sleep(stepEnd);
  }
  return Promise.all(pending);
}

/**
 * Measures the requests per second one replica completes with `concurrency` clients, one per slot, so no
 * request waits in the queue and time to first token stays at the prefill time, well within the SLO.
 * The first second is warm-up and not counted.
 */
export async function measureCapacity(target: RequestTarget, concurrency: number, seconds: number): Promise<number> {
  const warmupEnds = performance.now() + 1000;
  const ends = warmupEnds + seconds * 1000;
  let counted = 0;
  let failed = 0;
  const client = async (clientIndex: number) => {
    for (let request = 0; performance.now() < ends; request++) {
      const outcome = await streamRequest(target, `capacity-${clientIndex}-${request}`, 0);
      if (!outcome.ok) failed += 1;
      else if (performance.now() > warmupEnds && performance.now() <= ends) counted += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, index) => client(index)));
  if (failed > 0) throw new Error(`${failed} requests failed while measuring capacity. Run with --log FILE and read the controller's log.`);
  return counted / seconds;
}
