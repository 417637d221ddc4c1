// The local hub: a small Worker that implements the APIs the runbooks call
// (seeds 000-004), run under `wrangler dev` with local KV and D1. See
// ../README.md for every route. This file routes, applies injected faults
// and wraps the bindings; the routes live in the sibling modules.

import { adminAllowed, handleAdmin } from "./admin.js";
import { brokenD1, brokenKV, countingKV, flushKvUsage, newCounts, settleAfterLongRequest } from "./bindings.js";
import { HttpError, fail, json, readJson, sleep } from "./http.js";
import { counts, handleQueue, migrate } from "./queue.js";
import { handleCallback, handleEvents, handleReplay, handleRuns, metrics } from "./runs.js";
import { handleSessions } from "./sessions.js";

/**
 * The next matching fault, consumed (remaining - 1). A hub without its
 * tables (migrations not applied) simply has no faults.
 */
async function takeFault(db, path) {
  try {
    const f = await db.prepare(
      "SELECT * FROM faults WHERE remaining > 0 AND substr(?1, 1, length(path_prefix)) = path_prefix " +
      "ORDER BY length(path_prefix) DESC, id LIMIT 1").bind(path).first();
    if (!f) return null;
    const u = await db.prepare("UPDATE faults SET remaining = remaining - 1 WHERE id = ?1 AND remaining > 0")
      .bind(f.id).run();
    return u.meta.changes === 1 ? f : null;
  } catch {
    return null;
  }
}

async function health(c) {
  return json({ status: "ok", worker: c.env.WORKER_NAME || "orchestrator-hub", time: new Date().toISOString() });
}

/** The web front end's stand-in: what verify-deployment's web check loads. */
async function home(c) {
  const name = c.env.WORKER_NAME || "orchestrator-hub";
  return new Response(`<!doctype html><html><head><title>${name}</title></head><body><h1>${name}</h1></body></html>\n`,
    { status: 200, headers: { "content-type": "text/html; charset=utf-8" } });
}

async function ready(c) {
  const checks = { d1: false, kv: false };
  const errors = {};
  try {
    await c.db.prepare("SELECT 1 AS one").first();
    checks.d1 = true;
  } catch (e) {
    errors.d1 = String(e.message || e);
  }
  try {
    await c.kv.get("health:ready-probe");
    checks.kv = true;
  } catch (e) {
    errors.kv = String(e.message || e);
  }
  if (checks.d1 && checks.kv) return json({ status: "ok", ...checks });
  return json({ status: "unavailable", ...checks, errors }, 503);
}

/** The Slack incoming-webhook stand-in: answers "ok" like Slack does. */
async function slackHook(c) {
  const b = await readJson(c.request);
  if (typeof b.text !== "string" || b.text === "") {
    return new Response("no_text", { status: 400, headers: { "content-type": "text/plain" } });
  }
  const dedup = typeof b.dedup_key === "string" && b.dedup_key !== "" ? b.dedup_key : null;
  await c.db.prepare("INSERT INTO notifications (text, dedup_key, at) VALUES (?1, ?2, ?3)")
    .bind(b.text, dedup, new Date().toISOString()).run();
  return new Response("ok", { status: 200, headers: { "content-type": "text/plain" } });
}

async function route(c) {
  const path = c.url.pathname;
  const m = c.request.method;
  if (path === "/" && m === "GET") return home(c);
  if (path === "/api/health" && m === "GET") return health(c);
  if (path === "/api/ready" && m === "GET") return ready(c);
  if (path === "/api/queue" || path.startsWith("/api/queue/")) return handleQueue(c, path.slice("/api/queue".length));
  if (path === "/hooks/slack" && m === "POST") return slackHook(c);
  if (path === "/api/admin/queue/migrate-tasks-kv-to-d1" && m === "POST") return migrate(c, "tasks");
  if (path === "/api/admin/queue/migrate-results-kv-to-d1" && m === "POST") return migrate(c, "results");
  if (path === "/api/admin/queue/counts" && m === "GET") return counts(c);
  if (path.startsWith("/api/admin/")) return handleAdmin(c, path.slice("/api/admin".length));
  if (path === "/api/sessions" || path.startsWith("/api/sessions/")) {
    return handleSessions(c, path.slice("/api/sessions".length));
  }
  const proj = /^\/api\/projects\/[^/]+\/sessions(\/.*)?$/.exec(path);
  if (proj) return handleSessions(c, proj[1] || "");
  if (path === "/api/job-sources/runs" || path.startsWith("/api/job-sources/runs/")) {
    return handleRuns(c, path.slice("/api/job-sources/runs".length));
  }
  if (path === "/callbacks/worker" && m === "POST") return handleCallback(c);
  if (path === "/callbacks/replay" && m === "POST") return handleReplay(c);
  if (path === "/callbacks/events" && m === "GET") return handleEvents(c);
  if (path === "/ops/metrics" && m === "GET") return metrics(c);
  throw new HttpError(404, "not found");
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const kvCounts = newCounts();
    const c = {
      request, env, ctx, url,
      now: Date.now(),
      rawKV: env.KV,
      rawDB: env.DB,
      kv: countingKV(env.KV, kvCounts),
      db: env.DB,
    };
    try {
      // Admin routes are never faulted, so a test can always clean up.
      const isAdmin = url.pathname.startsWith("/api/admin/") && !url.pathname.startsWith("/api/admin/queue/");
      if (!(isAdmin && adminAllowed(request, env))) {
        const f = await takeFault(env.DB, url.pathname);
        if (f) {
          if (f.delay_ms > 0) await sleep(f.delay_ms);
          if (f.binding === "kv") c.kv = countingKV(brokenKV(), kvCounts);
          if (f.binding === "d1") c.db = brokenD1();
          if (f.status !== null) {
            const h = f.retry_after !== null ? { "retry-after": String(f.retry_after) } : {};
            return fail(f.status, "injected fault", { status: f.status }, h);
          }
        }
      }
      return await route(c);
    } catch (e) {
      if (e instanceof HttpError) return fail(e.status, e.error, e.extra);
      console.error(`hub: ${request.method} ${url.pathname}: ${e && e.stack ? e.stack : e}`);
      return fail(500, "internal", { reason: String((e && e.message) || e) });
    } finally {
      try {
        await flushKvUsage(env.DB, kvCounts);
      } catch {
        // Counting is best effort; it must not turn a success into a 500.
      }
      await settleAfterLongRequest(c.now);
    }
  },
};
