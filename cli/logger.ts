import { pino, type Logger } from "pino";

/** The process logger: JSON lines on stdout, level from SPILLWAY_LOG_LEVEL (default info). */
export function createLogger(name: string): Logger {
  return pino({
    name,
    level: process.env.SPILLWAY_LOG_LEVEL ?? "info",
    redact: ["req.headers.authorization", "headers.authorization", "apiKey"],
  });
}
