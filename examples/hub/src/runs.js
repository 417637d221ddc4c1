// Job-source runs, signed worker callbacks and their dead letters, and the
// /ops/metrics the SLO alerts read (seed 003).
//
// Callbacks: the worker POSTs /callbacks/worker with
//   x-worker-timestamp: <unix seconds>
//   x-worker-signature: hex(HMAC-SHA256(WORKER_CALLBACK_SECRET, `${timestamp}.${body}`))
// and a JSON body {eventId, runId?, type?, status?}. A delivered eventId is
// never applied twice (409). A well-signed callback that cannot be applied
// (its run does not exist yet) is kept as a dead letter; POST
// /callbacks/replay delivers the open dead letters once each.

import { HttpError, hasKey, hmacSha256Hex, intParam, json, readJson, safeEqual } from "./http.js";

// ---------------------------------------------------------------- runs

function runView(r) {
  return {
    id: r.id,
    owner: r.owner,
    status: r.status,
    retry_of_run_id: r.retry_of_run_id,
    heartbeat_at: r.heartbeat_at === null ? null : new Date(r.heartbeat_at).toISOString(),
    created_at: new Date(r.created_at).toISOString(),
  };
}

export async function handleRuns(c, rest) {
  const m = c.request.method;
  if (rest === "" && m === "GET") {
    const status = c.url.searchParams.get("status");
    const q = status
      ? c.db.prepare("SELECT * FROM job_source_runs WHERE status = ?1 ORDER BY created_at, id").bind(status)
      : c.db.prepare("SELECT * FROM job_source_runs ORDER BY created_at, id");
    const { results } = await q.all();
    return json({ count: results.length, runs: results.map(runView) });
  }
  const r = /^\/([^/]+)(\/retry)?$/.exec(rest);
  if (r && !r[2] && m === "GET") {
    const run = await c.db.prepare("SELECT * FROM job_source_runs WHERE id = ?1").bind(decodeURIComponent(r[1])).first();
    if (!run) throw new HttpError(404, "not found", { reason: "run not found" });
    return json({ run: runView(run) });
  }
  if (r && r[2] && m === "POST") return retry(c, decodeURIComponent(r[1]));
  throw new HttpError(404, "not found");
}

/** Only the owner, only FAILED; a new run points back, the original stays. */
async function retry(c, id) {
  const user = (c.request.headers.get("x-user") || "").trim();
  if (!user) throw new HttpError(401, "unauthorized", { reason: "X-User header required" });
  const run = await c.db.prepare("SELECT * FROM job_source_runs WHERE id = ?1").bind(id).first();
  if (!run) throw new HttpError(404, "not found", { reason: "run not found" });
  if (run.owner !== user) throw new HttpError(403, "forbidden", { reason: "only the run owner can retry" });
  if (run.status !== "FAILED") {
    throw new HttpError(409, "conflict", { reason: `only FAILED runs can be retried (status ${run.status})` });
  }
  const now = Date.now();
  const newId = `run-${crypto.randomUUID()}`;
  const created = await c.db.prepare(
    "INSERT INTO job_source_runs (id, owner, status, retry_of_run_id, heartbeat_at, created_at, updated_at) " +
    "VALUES (?1, ?2, 'QUEUED', ?3, NULL, ?4, ?4) RETURNING *").bind(newId, run.owner, run.id, now).first();
  return json({ run: runView(created) }, 201);
}

// ---------------------------------------------------------------- callbacks

const STATUS_BY_TYPE = {
  "run.started": "RUNNING",
  "run.succeeded": "SUCCEEDED",
  "run.completed": "SUCCEEDED",
  "run.failed": "FAILED",
};

/**
 * Apply one event. Returns {status, body}. `source` is live|replay.
 * Dead-letters events whose run is unknown.
 */
async function deliver(db, event, source, now) {
  const seen = await db.prepare("SELECT event_id FROM job_source_callback_events WHERE event_id = ?1")
    .bind(event.eventId).first();
  if (seen) return { status: 409, body: { error: "replay", reason: `eventId ${event.eventId} already delivered` } };

  const runId = typeof event.runId === "string" ? event.runId : null;
  if (runId !== null) {
    const run = await db.prepare("SELECT id FROM job_source_runs WHERE id = ?1").bind(runId).first();
    if (!run) {
      const reason = `run ${runId} not found`;
      await deadLetter(db, event, reason, now);
      return { status: 422, body: { error: "delivery failed", reason, dead_lettered: true } };
    }
  }
  // Claim the eventId first: of two concurrent deliveries only one applies.
  const claim = await db.prepare(
    "INSERT OR IGNORE INTO job_source_callback_events (event_id, run_id, type, status, source, received_at) " +
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
    .bind(event.eventId, runId, event.type || null, event.status || null, source, now).run();
  if (claim.meta.changes !== 1) {
    return { status: 409, body: { error: "replay", reason: `eventId ${event.eventId} already delivered` } };
  }
  if (runId !== null) {
    const status = typeof event.status === "string" ? event.status.toUpperCase() : STATUS_BY_TYPE[event.type];
    if (status) {
      await db.prepare("UPDATE job_source_runs SET status = ?2, heartbeat_at = ?3, updated_at = ?3 WHERE id = ?1")
        .bind(runId, status, now).run();
    } else {
      await db.prepare("UPDATE job_source_runs SET heartbeat_at = ?2, updated_at = ?2 WHERE id = ?1")
        .bind(runId, now).run();
    }
  }
  return { status: 200, body: { ok: true, eventId: event.eventId, source } };
}

async function deadLetter(db, event, reason, now) {
  const open = await db.prepare(
    "SELECT id FROM callback_dead_letters WHERE event_id = ?1 AND replayed_at IS NULL").bind(event.eventId).first();
  if (open) {
    await db.prepare("UPDATE callback_dead_letters SET attempts = attempts + 1, reason = ?2 WHERE id = ?1")
      .bind(open.id, reason).run();
  } else {
    await db.prepare(
      "INSERT INTO callback_dead_letters (event_id, payload, reason, attempts, created_at) VALUES (?1, ?2, ?3, 1, ?4)")
      .bind(event.eventId, JSON.stringify(event), reason, now).run();
  }
}

function callbackSecret(env) {
  return env.WORKER_CALLBACK_SECRET || env.WORKER_CALLBACK_SIGNING_SECRET || "";
}

export async function handleCallback(c) {
  const { request, env } = c;
  const body = await request.text();
  const secret = callbackSecret(env);
  // As in seed 003, signing is enforced when the secret is configured.
  if (secret) {
    const ts = request.headers.get("x-worker-timestamp") || "";
    let sig = (request.headers.get("x-worker-signature") || "").trim().toLowerCase();
    if (sig.startsWith("sha256=")) sig = sig.slice(7);
    if (!ts || !sig) return json({ error: "unauthorized", reason: "missing signature" }, 401);
    if (!/^\d{1,12}$/.test(ts)) return json({ error: "unauthorized", reason: "bad timestamp" }, 401);
    const tol = intParam(env.WORKER_CALLBACK_SIGNATURE_TOLERANCE_SEC, 300, 0, 86400);
    if (Math.abs(Math.floor(Date.now() / 1000) - Number(ts)) > tol) {
      return json({ error: "unauthorized", reason: "timestamp outside tolerance" }, 401);
    }
    const want = await hmacSha256Hex(secret, `${ts}.${body}`);
    if (!(await safeEqual(sig, want))) return json({ error: "unauthorized", reason: "invalid signature" }, 401);
  }
  let event;
  try {
    event = JSON.parse(body);
  } catch {
    return json({ error: "invalid json" }, 400);
  }
  if (!event || typeof event !== "object" || typeof event.eventId !== "string" || event.eventId === "") {
    return json({ error: "invalid request", reason: "eventId required" }, 400);
  }
  const r = await deliver(c.db, event, "live", Date.now());
  return json(r.body, r.status);
}

/** Same auth as the worker's /tasks: Bearer TASKS_AUTH_TOKEN, or a queue key. */
const REPLAY_AUTH = ["TASKS_AUTH_TOKEN", "QUEUE_API_KEY", "ASSISTANT_API_KEY"];

export async function handleReplay(c) {
  const { request, env } = c;
  if (!(await hasKey(request, env, REPLAY_AUTH))) throw new HttpError(401, "unauthorized");
  const db = c.db;
  const { results } = await db.prepare(
    "SELECT * FROM callback_dead_letters WHERE replayed_at IS NULL ORDER BY id").all();
  let replayed = 0;
  let duplicates = 0;
  let failed = 0;
  const done = new Set();
  for (const d of results) {
    const now = Date.now();
    if (done.has(d.event_id)) {
      // A second open letter for an eventId already delivered in this pass.
      await db.prepare("UPDATE callback_dead_letters SET replayed_at = ?2 WHERE id = ?1").bind(d.id, now).run();
      duplicates++;
      continue;
    }
    const r = await deliver(db, JSON.parse(d.payload), "replay", now);
    if (r.status === 200 || r.status === 409) {
      await db.prepare("UPDATE callback_dead_letters SET replayed_at = ?2 WHERE event_id = ?1 AND replayed_at IS NULL")
        .bind(d.event_id, now).run();
      done.add(d.event_id);
      if (r.status === 200) replayed++;
      else duplicates++;
    } else {
      failed++;
    }
  }
  const left = await db.prepare("SELECT COUNT(*) AS n FROM callback_dead_letters WHERE replayed_at IS NULL").first();
  return json({ replayed, duplicates, failed, remaining: left.n });
}

/**
 * The replay guard's records: which eventIds were delivered, when, and by
 * which path (live|replay). `?event_id=` may repeat (at most 200); without
 * it the newest 200. Same auth as replay. A runbook compares these before
 * and after a replay to prove no event was applied twice.
 */
export async function handleEvents(c) {
  const { request, env } = c;
  if (!(await hasKey(request, env, REPLAY_AUTH))) throw new HttpError(401, "unauthorized");
  const ids = c.url.searchParams.getAll("event_id").filter((x) => x !== "");
  if (ids.length > 200) throw new HttpError(400, "invalid request", { reason: "at most 200 event_id values" });
  const marks = ids.map((_, i) => `?${i + 1}`).join(",");
  const q = ids.length
    ? c.db.prepare(`SELECT * FROM job_source_callback_events WHERE event_id IN (${marks}) ORDER BY event_id`)
      .bind(...ids)
    : c.db.prepare("SELECT * FROM job_source_callback_events ORDER BY received_at DESC, event_id LIMIT 200");
  const { results } = await q.all();
  const items = results.map((e) => ({
    event_id: e.event_id, run_id: e.run_id, type: e.type, status: e.status, source: e.source,
    received_at: new Date(e.received_at).toISOString(),
  }));
  return json({ count: items.length, items });
}

// ---------------------------------------------------------------- metrics

function ratio(num, den) {
  return den > 0 ? num / den : null;
}

export async function metrics(c) {
  const db = c.db;
  const now = Date.now();
  const stale = intParam(c.env.HEARTBEAT_STALE_SEC, 120, 1, 86400) * 1000;
  const [running, noHb, events, dead, retries, scrapes, overrides] = await db.batch([
    db.prepare("SELECT COUNT(*) AS n FROM job_source_runs WHERE status = 'RUNNING'"),
    db.prepare("SELECT COUNT(*) AS n FROM job_source_runs WHERE status = 'RUNNING' " +
      "AND (heartbeat_at IS NULL OR heartbeat_at < ?1)").bind(now - stale),
    db.prepare("SELECT COUNT(*) AS n FROM job_source_callback_events"),
    db.prepare("SELECT COUNT(DISTINCT event_id) AS n FROM callback_dead_letters WHERE replayed_at IS NULL"),
    db.prepare("SELECT SUM(status = 'SUCCEEDED') AS ok, COUNT(*) AS n FROM job_source_runs " +
      "WHERE retry_of_run_id IS NOT NULL AND status IN ('SUCCEEDED', 'FAILED')"),
    db.prepare("SELECT SUM(status = 'SUCCEEDED') AS ok, COUNT(*) AS n FROM job_source_runs " +
      "WHERE status IN ('SUCCEEDED', 'FAILED')"),
    db.prepare("SELECT name, value FROM metric_overrides"),
  ]);
  const first = (r) => r.results[0];
  const m = {
    running_runs: first(running).n,
    runs_without_heartbeat: first(noHb).n,
    callback_events_total: first(events).n + first(dead).n,
    callback_events_failed: first(dead).n,
    retry_success_rate: ratio(first(retries).ok || 0, first(retries).n),
    scrape_success_rate: ratio(first(scrapes).ok || 0, first(scrapes).n),
  };
  const overridden = [];
  for (const o of overrides.results) {
    m[o.name] = o.value;
    overridden.push(o.name);
  }
  // The ratios follow their (possibly pinned) inputs unless pinned themselves.
  const pinned = new Set(overridden);
  if (!pinned.has("heartbeat_stale_ratio")) {
    m.heartbeat_stale_ratio = ratio(m.runs_without_heartbeat, m.running_runs);
  }
  if (!pinned.has("callback_failed_ratio")) {
    m.callback_failed_ratio = ratio(m.callback_events_failed, m.callback_events_total);
  }
  return json({ ...m, overridden, time: new Date(now).toISOString() });
}
