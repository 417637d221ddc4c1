// Response, request-body and authentication helpers shared by every route.

/** A JSON response; `headers` adds to Content-Type. */
export function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** An error response: {error, reason?} plus any extra fields. */
export function fail(status, error, extra = {}, headers = {}) {
  return json({ error, ...extra }, status, headers);
}

/** Thrown by handlers to answer with a given status (caught in index.js). */
export class HttpError extends Error {
  constructor(status, error, extra = {}) {
    super(error);
    this.status = status;
    this.error = error;
    this.extra = extra;
  }
}

/** The request body as JSON; an empty body is `{}`; bad JSON is a 400. */
export async function readJson(request) {
  const text = await request.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "invalid json");
  }
}

const enc = new TextEncoder();

/**
 * Constant-time string comparison. Both sides are hashed first so the
 * comparison does not even leak the length of the expected value.
 */
export async function safeEqual(a, b) {
  const [ha, hb] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(a)),
    crypto.subtle.digest("SHA-256", enc.encode(b)),
  ]);
  return crypto.subtle.timingSafeEqual(ha, hb);
}

/** The API key a client presented: X-API-Key, or an Authorization bearer. */
export function presentedKey(request) {
  const k = request.headers.get("x-api-key");
  if (k) return k;
  const auth = request.headers.get("authorization") || "";
  const m = /^Bearer\s+(.+)$/i.exec(auth);
  return m ? m[1].trim() : "";
}

/**
 * True when the request carries a key equal to one of the named secrets.
 * An unset or empty secret never matches, so a server with no key set
 * refuses everyone (the seed's "401 until the secret is synced").
 */
export async function hasKey(request, env, names = ["QUEUE_API_KEY", "ASSISTANT_API_KEY"]) {
  const given = presentedKey(request);
  if (!given) return false;
  let ok = false;
  // Check every candidate (no early exit) so timing does not tell which matched.
  for (const name of names) {
    const want = env[name];
    if (typeof want === "string" && want !== "" && (await safeEqual(given, want))) ok = true;
  }
  return ok;
}

/** Raise a 401 unless the request carries one of the queue keys. */
export async function requireKey(request, env, names) {
  if (!(await hasKey(request, env, names))) throw new HttpError(401, "unauthorized");
}

export function hex(buf) {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function hmacSha256Hex(secret, message) {
  const key = await crypto.subtle.importKey(
    "raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, enc.encode(message)));
}

/** An integer from a query/body value, clamped to [min, max]. */
export function intParam(v, dflt, min, max) {
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n)) return dflt;
  return Math.min(max, Math.max(min, n));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
