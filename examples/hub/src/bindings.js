// Wrappers around the KV and D1 bindings: a KV that counts its operations
// (the Free plan's daily limits are what seed 001/004 are about) and
// stand-ins that fail, used when a fault asks a binding to break.

export const KV_OPS = ["read", "write", "delete", "list"];
// Cloudflare KV Free plan, per day (seed 001).
export const KV_LIMITS = { read: 100000, write: 1000, delete: 1000, list: 1000 };

// How many KV calls one request keeps in flight when it touches many keys.
export const KV_WIDTH = 20;

// wrangler dev 4.14 (measured here): after a request that kept the isolate
// busy with KV calls for more than ~10 s (seeding or wiping 10,000 keys on a
// loaded machine), the very next request through wrangler's proxy is lost
// on a stale connection — a GET hangs until some other request arrives, a
// POST gets 503 "Your worker restarted mid-request". Letting the isolate
// idle briefly before answering such a request avoids it (checked: of 16
// seeds over 10 s without this, 15 lost the next request; of 9 with it,
// none). A 1 s pause of the client before its next request also avoids it.
export const LONG_REQUEST_MS = 5000;
const SETTLE_MS = 500;

/** After a long request, idle a moment before the response goes out. */
export async function settleAfterLongRequest(startedMs, now = Date.now()) {
  if (now - startedMs > LONG_REQUEST_MS) await new Promise((r) => setTimeout(r, SETTLE_MS));
}

export function utcDay(ms = Date.now()) {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * A KV binding that counts read/write/delete/list calls into `counts`.
 * The counts are flushed to D1 once per request (flushKvUsage), so a page
 * of 1000 gets costs one D1 write, not 1000.
 */
export function countingKV(kv, counts) {
  return {
    get(key, opts) {
      counts.read++;
      return kv.get(key, opts);
    },
    getWithMetadata(key, opts) {
      counts.read++;
      return kv.getWithMetadata(key, opts);
    },
    put(key, value, opts) {
      counts.write++;
      return kv.put(key, value, opts);
    },
    delete(key) {
      counts.delete++;
      return kv.delete(key);
    },
    list(opts) {
      counts.list++;
      return kv.list(opts);
    },
  };
}

export function newCounts() {
  return { read: 0, write: 0, delete: 0, list: 0 };
}

/** Add this request's KV operation counts to today's row in kv_usage. */
export async function flushKvUsage(db, counts, ms = Date.now()) {
  const day = utcDay(ms);
  const stmts = [];
  for (const op of KV_OPS) {
    if (counts[op] > 0) {
      stmts.push(db.prepare(
        "INSERT INTO kv_usage (day, op, n) VALUES (?1, ?2, ?3) " +
        "ON CONFLICT (day, op) DO UPDATE SET n = n + excluded.n").bind(day, op, counts[op]));
      counts[op] = 0;
    }
  }
  if (stmts.length) await db.batch(stmts);
}

function brokenError(which) {
  return new Error(`${which} unavailable (injected fault)`);
}

/** A KV whose every call fails, as a real outage would. */
export function brokenKV() {
  const f = async () => { throw brokenError("KV"); };
  return { get: f, getWithMetadata: f, put: f, delete: f, list: f };
}

/** A D1 whose every statement fails. */
export function brokenD1() {
  const f = async () => { throw brokenError("D1"); };
  const stmt = { bind: () => stmt, first: f, all: f, run: f, raw: f };
  return { prepare: () => stmt, batch: f, exec: f };
}
