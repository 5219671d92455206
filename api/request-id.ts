import { randomBytes } from "node:crypto";

const saneRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Returns the client's `x-request-id` when it is short and plain enough to log and echo safely,
 * otherwise a new id.
 */
export function requestIdFrom(header: string | string[] | undefined): string {
  const value = Array.isArray(header) ? header[0] : header;
  if (value !== undefined && saneRequestId.test(value)) return value;
  return `req_${randomBytes(12).toString("hex")}`;
}
