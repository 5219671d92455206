import { pino, type Logger } from "pino";

/** Creates the process logger: JSON lines on stdout, level from SPILLWAY_LOG_LEVEL (default info). */
export function createLogger(name: string): Logger {
  return pino({
    name,
    level: process.env.SPILLWAY_LOG_LEVEL ?? "info",
    redact: ["req.headers.authorization", "headers.authorization", "apiKey"],
  });
}
