// Session processing (seed 002): a session's processing_status and its
// events (session.processing_started, session.processing_failed {reason},
// session.processed). Reprocessing clears those events, marks the session
// processing and re-queues a session.completed message; the stand-in
// "processing worker" finishes it after SESSION_PROCESS_DELAY_MS — failed
// with "ANTHROPIC_API_KEY is not set" when that secret is missing.
//
// The due time is stored, and due sessions are resolved both lazily (on
// every read) and by a ctx.waitUntil timer, whichever comes first; the
// conditional UPDATE makes the outcome happen exactly once.

import { HttpError, intParam, json, requireKey, sleep } from "./http.js";

const PROCESSING_EVENTS = ["session.processing_started", "session.processing_failed", "session.processed"];

function outcome(env) {
  if (!env.ANTHROPIC_API_KEY) return { status: "failed", reason: "ANTHROPIC_API_KEY is not set" };
  return { status: "processed" };
}

/** Finish every session whose processing is due (or just `id`). */
export async function resolveDue(db, env, now, id = null) {
  const q = id === null
    ? db.prepare("SELECT id FROM sessions WHERE processing_status = 'processing' AND process_due_at <= ?1").bind(now)
    : db.prepare("SELECT id FROM sessions WHERE id = ?2 AND processing_status = 'processing' AND process_due_at <= ?1")
      .bind(now, id);
  const { results } = await q.all();
  for (const r of results) {
    const o = outcome(env);
    const signals = o.status === "processed" ? 3 : 0;
    const u = await db.prepare(
      "UPDATE sessions SET processing_status = ?2, process_due_at = NULL, signal_count = ?3, updated_at = ?4 " +
      "WHERE id = ?1 AND processing_status = 'processing' AND process_due_at <= ?4")
      .bind(r.id, o.status, signals, now).run();
    if (u.meta.changes !== 1) continue; // someone else finished it
    const type = o.status === "processed" ? "session.processed" : "session.processing_failed";
    const data = o.status === "processed" ? { signal_count: signals } : { reason: o.reason };
    await db.prepare("INSERT INTO session_events (session_id, type, data_json, created_at) VALUES (?1, ?2, ?3, ?4)")
      .bind(r.id, type, JSON.stringify(data), now).run();
  }
}

function sessionView(s) {
  return {
    id: s.id,
    project_id: s.project_id,
    processing_status: s.processing_status,
    signal_count: s.signal_count,
    processing_started_at: s.processing_started_at === null ? null : new Date(s.processing_started_at).toISOString(),
    updated_at: new Date(s.updated_at).toISOString(),
  };
}

async function getSession(c, id) {
  await resolveDue(c.db, c.env, Date.now(), id);
  const s = await c.db.prepare("SELECT * FROM sessions WHERE id = ?1").bind(id).first();
  if (!s) throw new HttpError(404, "not found", { reason: "Session not found", id });
  const { results } = await c.db.prepare(
    "SELECT id, type, data_json, created_at FROM session_events WHERE session_id = ?1 ORDER BY id").bind(id).all();
  const events = results.map((e) => ({
    id: e.id,
    type: e.type,
    data_json: e.data_json,
    data: e.data_json === null ? null : JSON.parse(e.data_json),
    created_at: new Date(e.created_at).toISOString(),
  }));
  return json({ session: sessionView(s), processing_status: s.processing_status, events });
}

async function listSessions(c) {
  await resolveDue(c.db, c.env, Date.now());
  const p = c.url.searchParams;
  const status = p.get("status");
  const olderMin = p.has("older_than_min") ? Number(p.get("older_than_min")) : null;
  let sql = "SELECT * FROM sessions WHERE 1 = 1";
  const args = [];
  if (status) {
    args.push(status);
    sql += ` AND processing_status = ?${args.length}`;
  }
  if (olderMin !== null && Number.isFinite(olderMin)) {
    args.push(Date.now() - olderMin * 60000);
    sql += ` AND COALESCE(processing_started_at, updated_at) <= ?${args.length}`;
  }
  sql += " ORDER BY COALESCE(processing_started_at, updated_at), id LIMIT 1000";
  const { results } = await c.db.prepare(sql).bind(...args).all();
  return json({ count: results.length, sessions: results.map(sessionView) });
}

async function reprocess(c, id) {
  await requireKey(c.request, c.env);
  const db = c.db;
  const s = await db.prepare("SELECT id FROM sessions WHERE id = ?1").bind(id).first();
  if (!s) throw new HttpError(404, "not found", { reason: "Session not found", id });
  const now = Date.now();
  const delay = intParam(c.env.SESSION_PROCESS_DELAY_MS, 3000, 0, 600000);
  const due = now + delay;
  const marks = PROCESSING_EVENTS.map((_, i) => `?${i + 2}`).join(",");
  await db.batch([
    db.prepare(`DELETE FROM session_events WHERE session_id = ?1 AND type IN (${marks})`).bind(id, ...PROCESSING_EVENTS),
    db.prepare(
      "UPDATE sessions SET processing_status = 'processing', processing_started_at = ?2, process_due_at = ?3, " +
      "signal_count = 0, updated_at = ?2 WHERE id = ?1").bind(id, now, due),
    db.prepare("INSERT INTO session_messages (session_id, type, created_at) VALUES (?1, 'session.completed', ?2)")
      .bind(id, now),
    db.prepare("INSERT INTO session_events (session_id, type, data_json, created_at) VALUES (?1, ?2, NULL, ?3)")
      .bind(id, "session.processing_started", now),
  ]);
  // The "processing worker": finish after the delay, even if nobody reads.
  const raw = c.rawDB;
  const env = c.env;
  c.ctx.waitUntil((async () => {
    await sleep(delay + 20);
    try {
      await resolveDue(raw, env, Date.now(), id);
    } catch {
      // A lazy read resolves it instead.
    }
  })());
  return json({ id, processing_status: "processing", requeued: "session.completed", due_in_ms: delay }, 202);
}

/**
 * /api/sessions..., and the seed's /api/projects/:p/sessions/... form
 * (the project id is accepted and ignored).
 */
export async function handleSessions(c, rest) {
  const m = c.request.method;
  if (rest === "" && m === "GET") return listSessions(c);
  const r = /^\/([^/]+)(\/reprocess)?$/.exec(rest);
  if (r && !r[2] && m === "GET") return getSession(c, decodeURIComponent(r[1]));
  if (r && r[2] && m === "POST") return reprocess(c, decodeURIComponent(r[1]));
  throw new HttpError(404, "not found");
}
