// Local-only administration of the hub for tests and demos: wipe, seed
// fixtures (including 10,000-key KV layouts in one call), inject faults,
// read what the Slack stand-in received, read/set the KV usage counters,
// list dead letters. Every route here refuses unless HUB_ADMIN is "1" and
// the request was addressed to the loopback interface.

import { KV_LIMITS, KV_OPS, KV_WIDTH, utcDay } from "./bindings.js";
import { HttpError, intParam, json, readJson } from "./http.js";
import { RESULT_PREFIX, TASK_PREFIX, listAll } from "./queue.js";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

const TABLES = [
  "queue_tasks", "queue_results", "notifications", "kv_usage", "faults", "metric_overrides",
  "sessions", "session_events", "session_messages", "job_source_runs",
  "job_source_callback_events", "callback_dead_letters",
];

export function adminAllowed(request, env) {
  if (env.HUB_ADMIN !== "1") return false;
  const url = new URL(request.url);
  if (!LOOPBACK.has(url.hostname)) return false;
  // Behind a proxy the client address is here; it must be loopback too.
  const ip = request.headers.get("cf-connecting-ip");
  return ip === null || ip === "127.0.0.1" || ip === "::1";
}

export async function handleAdmin(c, rest) {
  const { request } = c;
  if (!adminAllowed(request, c.env)) {
    throw new HttpError(403, "forbidden", { reason: "admin endpoints are local-only (HUB_ADMIN=1, 127.0.0.1)" });
  }
  const m = request.method;
  if (rest === "/reset" && m === "POST") return reset(c);
  if (rest === "/seed" && m === "POST") return seed(c);
  if (rest === "/faults" && m === "POST") return addFault(c);
  if (rest === "/faults" && m === "GET") return listFaults(c);
  if (rest === "/faults" && m === "DELETE") {
    await c.rawDB.prepare("DELETE FROM faults").run();
    return json({ ok: true });
  }
  if (rest === "/notifications" && m === "GET") return notifications(c);
  if (rest === "/kv-usage" && m === "GET") return kvUsage(c, undefined);
  if (rest === "/kv-usage" && m === "POST") return setKvUsage(c);
  if (rest === "/dead-letters" && m === "GET") return deadLetters(c);
  throw new HttpError(404, "not found");
}

async function deleteKeys(kv, names) {
  for (let i = 0; i < names.length; i += KV_WIDTH) {
    await Promise.all(names.slice(i, i + KV_WIDTH).map((n) => kv.delete(n)));
  }
}

async function reset(c) {
  const names = await listAll(c.rawKV, "");
  await deleteKeys(c.rawKV, names);
  await c.rawDB.batch(TABLES.map((t) => c.rawDB.prepare(`DELETE FROM ${t}`)));
  return json({ ok: true, kv_deleted: names.length, tables: TABLES });
}

function pad(n, width = 6) {
  return String(n).padStart(width, "0");
}

/**
 * A fixture list: an array is taken as given; a number N (or {count, start,
 * prefix}) generates N items with ids <prefix>-000001...
 */
function items(spec, dflt, make) {
  if (Array.isArray(spec)) return spec;
  const o = typeof spec === "number" ? { count: spec } : spec || {};
  const count = intParam(o.count, 0, 0, 100000);
  const start = intParam(o.start, 1, 0, 1e9);
  const prefix = typeof o.prefix === "string" ? o.prefix : dflt;
  const out = [];
  for (let i = start; i < start + count; i++) out.push(make(`${prefix}-${pad(i)}`, i));
  return out;
}

async function putMany(kv, pairs) {
  // Local KV is one simulator object; more in flight than KV_WIDTH only
  // queues up (measured: ~2,000 puts/s at 10-20, slower at 100+).
  for (let i = 0; i < pairs.length; i += KV_WIDTH) {
    await Promise.all(pairs.slice(i, i + KV_WIDTH).map(([k, v]) => kv.put(k, v)));
  }
}

async function batchAll(db, stmts) {
  for (let i = 0; i < stmts.length; i += 500) await db.batch(stmts.slice(i, i + 500));
}

async function seed(c) {
  const body = await readJson(c.request);
  const db = c.rawDB;
  const now = c.now;
  const iso = new Date(now).toISOString();
  const seeded = {};

  if (body.kv && typeof body.kv === "object") {
    const pairs = Object.entries(body.kv).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]);
    await putMany(c.rawKV, pairs);
    seeded.kv = pairs.length;
  }
  if (body.queue_tasks_kv !== undefined) {
    const list = items(body.queue_tasks_kv, "task", (id, i) => ({ id, task: { kind: "demo", n: i } }));
    await putMany(c.rawKV, list.map((t) => [TASK_PREFIX + t.id, JSON.stringify({
      id: t.id, task: t.task, status: t.status || "pending", created_at: t.created_at || iso,
    })]));
    seeded.queue_tasks_kv = list.length;
  }
  if (body.queue_results_kv !== undefined) {
    const list = items(body.queue_results_kv, "task", (id, i) => ({ id, result: { ok: true, n: i } }));
    await putMany(c.rawKV, list.map((r) => [RESULT_PREFIX + r.id, JSON.stringify({
      id: r.id, result: r.result, created_at: r.created_at || iso,
    })]));
    seeded.queue_results_kv = list.length;
  }
  if (body.queue_tasks_d1 !== undefined) {
    const list = items(body.queue_tasks_d1, "task", (id, i) => ({ id, task: { kind: "demo", n: i } }));
    await batchAll(db, list.map((t) => db.prepare(
      "INSERT OR REPLACE INTO queue_tasks (id, payload, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)")
      .bind(t.id, JSON.stringify(t.task), t.status || "pending", t.created_at || iso)));
    seeded.queue_tasks_d1 = list.length;
  }
  if (body.queue_results_d1 !== undefined) {
    const list = items(body.queue_results_d1, "task", (id, i) => ({ id, result: { ok: true, n: i } }));
    await batchAll(db, list.map((r) => db.prepare(
      "INSERT OR REPLACE INTO queue_results (id, payload, created_at) VALUES (?1, ?2, ?3)")
      .bind(r.id, JSON.stringify(r.result), r.created_at || iso)));
    seeded.queue_results_d1 = list.length;
  }
  if (Array.isArray(body.sessions)) {
    const stmts = [];
    for (const s of body.sessions) {
      if (typeof s.id !== "string") throw new HttpError(400, "invalid request", { reason: "session needs an id" });
      const status = s.processing_status || "pending";
      const startedAgo = s.processing_started_min_ago;
      const started = typeof startedAgo === "number" ? now - startedAgo * 60000
        : status === "processing" ? now : null;
      stmts.push(db.prepare(
        "INSERT OR REPLACE INTO sessions (id, project_id, processing_status, processing_started_at, " +
        "process_due_at, signal_count, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        .bind(s.id, s.project_id || "default", status, started,
          typeof s.process_in_ms === "number" ? now + s.process_in_ms : null,
          s.signal_count || 0, started || now));
      for (const e of s.events || []) {
        stmts.push(db.prepare(
          "INSERT INTO session_events (session_id, type, data_json, created_at) VALUES (?1, ?2, ?3, ?4)")
          .bind(s.id, e.type, e.data === undefined ? null : JSON.stringify(e.data), now));
      }
    }
    if (stmts.length) await batchAll(db, stmts);
    seeded.sessions = body.sessions.length;
  }
  if (Array.isArray(body.runs)) {
    await batchAll(db, body.runs.map((r) => {
      if (typeof r.id !== "string" || typeof r.owner !== "string" || typeof r.status !== "string") {
        throw new HttpError(400, "invalid request", { reason: "run needs id, owner, status" });
      }
      const hb = typeof r.heartbeat_age_sec === "number" ? now - r.heartbeat_age_sec * 1000
        : r.status === "RUNNING" ? now : null;
      return db.prepare(
        "INSERT OR REPLACE INTO job_source_runs (id, owner, status, retry_of_run_id, heartbeat_at, " +
        "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)")
        .bind(r.id, r.owner, r.status, r.retry_of_run_id || null, hb, now);
    }));
    seeded.runs = body.runs.length;
  }
  if (Array.isArray(body.dead_letters)) {
    await batchAll(db, body.dead_letters.map((d) => {
      const payload = d.payload || {};
      const eventId = d.eventId || payload.eventId;
      if (typeof eventId !== "string") throw new HttpError(400, "invalid request", { reason: "dead letter needs eventId" });
      return db.prepare(
        "INSERT INTO callback_dead_letters (event_id, payload, reason, attempts, created_at) VALUES (?1, ?2, ?3, 1, ?4)")
        .bind(eventId, JSON.stringify({ ...payload, eventId }), d.reason || "seeded", now);
    }));
    seeded.dead_letters = body.dead_letters.length;
  }
  if (Array.isArray(body.notifications)) {
    await batchAll(db, body.notifications.map((n) => db.prepare(
      "INSERT INTO notifications (text, dedup_key, at) VALUES (?1, ?2, ?3)")
      .bind(String(n.text), n.dedup_key || null, n.at || iso)));
    seeded.notifications = body.notifications.length;
  }
  if (body.metrics && typeof body.metrics === "object") {
    await batchAll(db, Object.entries(body.metrics).map(([k, v]) => (v === null
      ? db.prepare("DELETE FROM metric_overrides WHERE name = ?1").bind(k)
      : db.prepare("INSERT OR REPLACE INTO metric_overrides (name, value) VALUES (?1, ?2)").bind(k, Number(v)))));
    seeded.metrics = Object.keys(body.metrics).length;
  }
  return json({ ok: true, seeded });
}

async function addFault(c) {
  const b = await readJson(c.request);
  if (typeof b.path_prefix !== "string" || !b.path_prefix.startsWith("/")) {
    throw new HttpError(400, "invalid request", { reason: "path_prefix must start with /" });
  }
  const status = b.status === undefined || b.status === null ? null : Number(b.status);
  if (status !== null && !(status === 429 || (status >= 500 && status <= 599))) {
    throw new HttpError(400, "invalid request", { reason: "status must be 429 or 5xx" });
  }
  const binding = b.binding === "kv" || b.binding === "d1" ? b.binding : null;
  if (b.binding !== undefined && binding === null) {
    throw new HttpError(400, "invalid request", { reason: "binding must be kv or d1" });
  }
  const delay = intParam(b.delay_ms, 0, 0, 60000);
  if (status === null && binding === null && delay === 0) {
    throw new HttpError(400, "invalid request", { reason: "give status, delay_ms or binding" });
  }
  const count = intParam(b.count, 1, 1, 1e6);
  const retryAfter = b.retry_after === undefined ? null : intParam(b.retry_after, 0, 0, 86400);
  const r = await c.rawDB.prepare(
    "INSERT INTO faults (path_prefix, remaining, status, retry_after, delay_ms, binding) " +
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING *")
    .bind(b.path_prefix, count, status, retryAfter, delay, binding).first();
  return json({ fault: r }, 201);
}

async function listFaults(c) {
  const { results } = await c.rawDB.prepare("SELECT * FROM faults WHERE remaining > 0 ORDER BY id").all();
  return json({ faults: results, remaining: results.reduce((a, f) => a + f.remaining, 0) });
}

async function notifications(c) {
  const dedup = c.url.searchParams.get("dedup_key");
  const q = dedup === null
    ? c.rawDB.prepare("SELECT * FROM notifications ORDER BY id")
    : c.rawDB.prepare("SELECT * FROM notifications WHERE dedup_key = ?1 ORDER BY id").bind(dedup);
  const { results } = await q.all();
  return json({ count: results.length, items: results });
}

async function kvUsage(c, day = c.url.searchParams.get("day") || utcDay(c.now)) {
  const { results } = await c.rawDB.prepare("SELECT op, n FROM kv_usage WHERE day = ?1").bind(day).all();
  const counts = { read: 0, write: 0, delete: 0, list: 0 };
  for (const r of results) counts[r.op] = r.n;
  const ratio = {};
  for (const op of KV_OPS) ratio[op] = counts[op] / KV_LIMITS[op];
  return json({ day, ...counts, limits: KV_LIMITS, ratio, max_ratio: Math.max(...Object.values(ratio)) });
}

async function setKvUsage(c) {
  const b = await readJson(c.request);
  const day = typeof b.day === "string" ? b.day : utcDay(c.now);
  const stmts = [];
  for (const op of KV_OPS) {
    if (b[op] !== undefined) {
      stmts.push(c.rawDB.prepare("INSERT OR REPLACE INTO kv_usage (day, op, n) VALUES (?1, ?2, ?3)")
        .bind(day, op, intParam(b[op], 0, 0, 1e12)));
    }
  }
  if (stmts.length) await c.rawDB.batch(stmts);
  return kvUsage(c, day);
}

async function deadLetters(c) {
  const all = c.url.searchParams.get("all") === "1";
  const { results } = await c.rawDB.prepare(
    `SELECT * FROM callback_dead_letters ${all ? "" : "WHERE replayed_at IS NULL"} ORDER BY id`).all();
  const iso = (ms) => (ms === null ? null : new Date(ms).toISOString());
  const items = results.map((r) => ({
    ...r, payload: JSON.parse(r.payload), created_at: iso(r.created_at), replayed_at: iso(r.replayed_at),
  }));
  return json({ count: items.length, items });
}
