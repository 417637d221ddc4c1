// The task queue (seed 000's /api/queue) and its move from KV to D1
// (seed 004): the legacy layout keeps one KV key per task and per result
// (queue:task:<id>, queue:result:<id>); the new home is D1's queue_tasks and
// queue_results. The migration endpoints copy page by page with a KV list
// cursor, idempotently per id, and optionally delete what D1 confirms.

import { KV_WIDTH } from "./bindings.js";
import { HttpError, intParam, json, readJson, requireKey } from "./http.js";

export const TASK_PREFIX = "queue:task:";
export const RESULT_PREFIX = "queue:result:";

function store(env) {
  return env.QUEUE_STORE === "kv" ? "kv" : "d1";
}

function newId() {
  return crypto.randomUUID();
}

function parseJson(s) {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

/** Every key under a prefix (used by counts and the KV store's listings). */
export async function listAll(kv, prefix) {
  const names = [];
  let cursor;
  for (;;) {
    const page = await kv.list({ prefix, cursor, limit: 1000 });
    for (const k of page.keys) names.push(k.name);
    if (page.list_complete) return names;
    cursor = page.cursor;
  }
}

async function pendingCount(c) {
  if (store(c.env) === "kv") {
    const names = await listAll(c.kv, TASK_PREFIX);
    const values = await getMany(c.kv, names);
    return values.filter((v) => v && v.status === "pending").length;
  }
  const row = await c.db.prepare(
    "SELECT COUNT(*) AS n FROM queue_tasks WHERE status = 'pending'").first();
  return row.n;
}

/** KV gets for many keys, a bounded number in flight; values parsed as JSON. */
export async function getMany(kv, names, width = KV_WIDTH) {
  const out = new Array(names.length);
  for (let i = 0; i < names.length; i += width) {
    const part = names.slice(i, i + width);
    const vals = await Promise.all(part.map((n) => kv.get(n)));
    vals.forEach((v, j) => { out[i + j] = v === null ? null : parseJson(v); });
  }
  return out;
}

function taskRow(r) {
  return { id: r.id, task: parseJson(r.payload), status: r.status, created_at: r.created_at };
}

async function listTasks(c, limit) {
  if (store(c.env) === "kv") {
    const names = await listAll(c.kv, TASK_PREFIX);
    const vals = (await getMany(c.kv, names)).filter((v) => v && typeof v === "object");
    const pending = vals.filter((v) => v.status === "pending");
    pending.sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
    return { pending: pending.length, tasks: pending.slice(0, limit) };
  }
  const { results } = await c.db.prepare(
    "SELECT * FROM queue_tasks WHERE status = 'pending' ORDER BY created_at, id LIMIT ?1")
    .bind(limit).all();
  return { pending: await pendingCount(c), tasks: results.map(taskRow) };
}

/** /api/queue and /api/queue/... (all need X-API-Key). */
export async function handleQueue(c, rest) {
  const { request, env } = c;
  await requireKey(request, env);
  const method = request.method;

  if (rest === "" && method === "GET") {
    const limit = intParam(c.url.searchParams.get("limit"), 50, 1, 1000);
    if (c.url.searchParams.has("peek")) return peek(c);
    return json({ store: store(env), ...(await listTasks(c, limit)) });
  }
  if (rest === "/peek" && method === "GET") return peek(c);
  if (rest === "" && method === "POST") return enqueue(c);

  const m = /^\/([^/]+)(\/result)?$/.exec(rest);
  if (m && !m[2] && method === "GET") return getTask(c, decodeURIComponent(m[1]));
  if (m && m[2] && method === "POST") return putResult(c, decodeURIComponent(m[1]));
  throw new HttpError(404, "not found");
}

async function peek(c) {
  const { pending, tasks } = await listTasks(c, 1);
  return json({ store: store(c.env), pending, task: tasks[0] || null });
}

async function enqueue(c) {
  const { env } = c;
  const body = await readJson(c.request);
  if (body === null || typeof body !== "object" || body.task === undefined) {
    throw new HttpError(400, "invalid request", { reason: "body must be {\"task\": ...}" });
  }
  // Backpressure (seed 003): at most QUEUE_MAX tasks wait; the caller retries later.
  const max = intParam(env.QUEUE_MAX, 1000, 0, 1e9);
  const pending = await pendingCount(c);
  if (pending >= max) {
    const retry = String(intParam(env.QUEUE_RETRY_AFTER_SEC, 30, 0, 86400));
    return json({ error: "queue full", pending, max }, 429, { "retry-after": retry });
  }
  const id = typeof body.id === "string" && body.id !== "" ? body.id : newId();
  const now = new Date(c.now).toISOString();
  if (store(env) === "kv") {
    await c.kv.put(TASK_PREFIX + id, JSON.stringify({ id, task: body.task, status: "pending", created_at: now }));
  } else {
    const r = await c.db.prepare(
      "INSERT OR IGNORE INTO queue_tasks (id, payload, status, created_at, updated_at) " +
      "VALUES (?1, ?2, 'pending', ?3, ?3)").bind(id, JSON.stringify(body.task), now).run();
    if (r.meta.changes === 0) throw new HttpError(409, "duplicate id", { id });
  }
  return json({ id, status: "pending", store: store(env), pending: pending + 1 }, 201);
}

async function getTask(c, id) {
  let task = null;
  let result = null;
  if (store(c.env) === "kv") {
    const [t, r] = await getMany(c.kv, [TASK_PREFIX + id, RESULT_PREFIX + id]);
    task = t;
    result = r ? r.result : null;
  } else {
    const t = await c.db.prepare("SELECT * FROM queue_tasks WHERE id = ?1").bind(id).first();
    task = t ? taskRow(t) : null;
    const r = await c.db.prepare("SELECT payload FROM queue_results WHERE id = ?1").bind(id).first();
    result = r ? parseJson(r.payload) : null;
  }
  if (!task) throw new HttpError(404, "not found", { id });
  return json({ ...task, result });
}

async function putResult(c, id) {
  const body = await readJson(c.request);
  if (body === null || typeof body !== "object" || body.result === undefined) {
    throw new HttpError(400, "invalid request", { reason: "body must be {\"result\": ...}" });
  }
  const now = new Date(c.now).toISOString();
  if (store(c.env) === "kv") {
    const [t] = await getMany(c.kv, [TASK_PREFIX + id]);
    if (!t) throw new HttpError(404, "not found", { id });
    await c.kv.put(RESULT_PREFIX + id, JSON.stringify({ id, result: body.result, created_at: now }));
    await c.kv.put(TASK_PREFIX + id, JSON.stringify({ ...t, status: "done" }));
  } else {
    const t = await c.db.prepare("SELECT id FROM queue_tasks WHERE id = ?1").bind(id).first();
    if (!t) throw new HttpError(404, "not found", { id });
    await c.db.batch([
      c.db.prepare(
        "INSERT INTO queue_results (id, payload, created_at) VALUES (?1, ?2, ?3) " +
        "ON CONFLICT (id) DO UPDATE SET payload = excluded.payload").bind(id, JSON.stringify(body.result), now),
      c.db.prepare("UPDATE queue_tasks SET status = 'done', updated_at = ?2 WHERE id = ?1").bind(id, now),
    ]);
  }
  return json({ id, status: "done" });
}

// ---------------------------------------------------------------- migration

const KINDS = {
  tasks: {
    prefix: TASK_PREFIX,
    table: "queue_tasks",
    // A legacy value is {id, task, status, created_at}; anything else is
    // taken whole as the task payload.
    insert(db, id, v, now) {
      const isRecord = v && typeof v === "object" && "task" in v;
      const payload = JSON.stringify(isRecord ? v.task : v);
      const status = isRecord && typeof v.status === "string" ? v.status : "pending";
      const created = isRecord && typeof v.created_at === "string" ? v.created_at : now;
      return db.prepare(
        "INSERT OR IGNORE INTO queue_tasks (id, payload, status, created_at, updated_at) " +
        "VALUES (?1, ?2, ?3, ?4, ?5)").bind(id, payload, status, created, now);
    },
  },
  results: {
    prefix: RESULT_PREFIX,
    table: "queue_results",
    insert(db, id, v, now) {
      const isRecord = v && typeof v === "object" && "result" in v;
      const payload = JSON.stringify(isRecord ? v.result : v);
      const created = isRecord && typeof v.created_at === "string" ? v.created_at : now;
      return db.prepare(
        "INSERT OR IGNORE INTO queue_results (id, payload, created_at) VALUES (?1, ?2, ?3)")
        .bind(id, payload, created);
    },
  },
};

/** The ids among `ids` that D1 holds (D1 allows 100 bound parameters). */
async function presentIds(db, table, ids) {
  const found = new Set();
  for (let i = 0; i < ids.length; i += 90) {
    const part = ids.slice(i, i + 90);
    const marks = part.map((_, j) => `?${j + 1}`).join(",");
    const { results } = await db.prepare(`SELECT id FROM ${table} WHERE id IN (${marks})`).bind(...part).all();
    for (const r of results) found.add(r.id);
  }
  return found;
}

/**
 * One page of the KV->D1 copy. Body {limit, cleanup, cursor}; answer
 * {migrated, skipped, invalid, scanned, cleaned, cursor, done}: `migrated`
 * rows were new in D1, `skipped` were already there (or unreadable),
 * `cursor` is the KV list cursor for the next page (null when done).
 */
export async function migrate(c, kind) {
  await requireKey(c.request, c.env);
  const k = KINDS[kind];
  const body = await readJson(c.request);
  const limit = intParam(body.limit, 100, 1, 1000);
  const cleanup = body.cleanup === true;
  const cursor = typeof body.cursor === "string" && body.cursor !== "" ? body.cursor : undefined;

  const page = await c.kv.list({ prefix: k.prefix, limit, cursor });
  const names = page.keys.map((x) => x.name);
  const values = await getMany(c.kv, names);
  const now = new Date(c.now).toISOString();
  const stmts = [];
  const ids = [];
  let invalid = 0;
  names.forEach((name, i) => {
    const v = values[i];
    // null: deleted between list and get; a bare string: not JSON we wrote.
    if (v === null || typeof v !== "object") {
      invalid++;
      return;
    }
    const id = name.slice(k.prefix.length);
    ids.push(id);
    stmts.push(k.insert(c.db, id, v, now));
  });
  let migrated = 0;
  if (stmts.length) {
    const res = await c.db.batch(stmts);
    for (const r of res) migrated += r.meta.changes;
  }
  let cleaned = 0;
  if (cleanup && ids.length) {
    const confirmed = await presentIds(c.db, k.table, ids);
    const doomed = ids.filter((id) => confirmed.has(id));
    for (let i = 0; i < doomed.length; i += KV_WIDTH) {
      await Promise.all(doomed.slice(i, i + KV_WIDTH).map((id) => c.kv.delete(k.prefix + id)));
    }
    cleaned = doomed.length;
  }
  const done = page.list_complete === true;
  return json({
    kind,
    migrated,
    skipped: names.length - migrated,
    invalid,
    scanned: names.length,
    cleaned,
    cursor: done ? null : page.cursor,
    done,
  });
}

const MISSING_SAMPLE = 20;

/**
 * How many of the KV ids under a kind's prefix D1 holds: the per-id side
 * of reconciling (D1's total also counts tasks enqueued there directly).
 */
async function reconcileKind(db, kind, names) {
  const k = KINDS[kind];
  const ids = names.map((n) => n.slice(k.prefix.length));
  const present = await presentIds(db, k.table, ids);
  const missing = ids.filter((id) => !present.has(id));
  return { kv: ids.length, in_d1: present.size, missing: missing.length, missing_ids: missing.slice(0, MISSING_SAMPLE) };
}

/**
 * {kv:{tasks, results}, d1:{tasks, results}} — for reconciling a migration.
 * With ?reconcile=1 also {reconcile:{tasks:{kv, in_d1, missing, missing_ids}, results:{...}}}:
 * missing counts KV ids D1 lacks (missing_ids: the first 20, sorted).
 */
export async function counts(c) {
  await requireKey(c.request, c.env);
  const [kt, kr] = await Promise.all([listAll(c.kv, TASK_PREFIX), listAll(c.kv, RESULT_PREFIX)]);
  const [dt, dr] = await Promise.all([
    c.db.prepare("SELECT COUNT(*) AS n FROM queue_tasks").first(),
    c.db.prepare("SELECT COUNT(*) AS n FROM queue_results").first(),
  ]);
  const body = { kv: { tasks: kt.length, results: kr.length }, d1: { tasks: dt.n, results: dr.n } };
  if (c.url.searchParams.get("reconcile") === "1") {
    body.reconcile = {
      tasks: await reconcileKind(c.db, "tasks", kt),
      results: await reconcileKind(c.db, "results", kr),
    };
  }
  return json(body);
}
