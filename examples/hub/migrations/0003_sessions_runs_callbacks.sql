-- Sessions and their processing events (seed 002), job-source runs and
-- worker callbacks with their dead letters (seed 003).
CREATE TABLE IF NOT EXISTS sessions (
  id                     TEXT PRIMARY KEY,
  project_id             TEXT NOT NULL DEFAULT 'default',
  processing_status      TEXT NOT NULL DEFAULT 'pending',  -- pending|processing|processed|failed
  processing_started_at  INTEGER,        -- epoch ms
  process_due_at         INTEGER,        -- epoch ms; NULL while stuck (no worker will finish it)
  signal_count           INTEGER NOT NULL DEFAULT 0,
  updated_at             INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (processing_status, processing_started_at);

CREATE TABLE IF NOT EXISTS session_events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  session_id  TEXT NOT NULL,
  type        TEXT NOT NULL,
  data_json   TEXT,
  created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_session ON session_events (session_id, id);

-- Messages re-queued for the processing worker (session.completed).
CREATE TABLE IF NOT EXISTS session_messages (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  session_id  TEXT NOT NULL,
  type        TEXT NOT NULL,
  created_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS job_source_runs (
  id               TEXT PRIMARY KEY,
  owner            TEXT NOT NULL,
  status           TEXT NOT NULL,        -- QUEUED|RUNNING|SUCCEEDED|FAILED
  retry_of_run_id  TEXT,
  heartbeat_at     INTEGER,              -- epoch ms
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);

-- Delivered callback events, one per eventId: the replay guard.
CREATE TABLE IF NOT EXISTS job_source_callback_events (
  event_id     TEXT PRIMARY KEY,
  run_id       TEXT,
  type         TEXT,
  status       TEXT,
  source       TEXT NOT NULL,            -- live|replay
  received_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS callback_dead_letters (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id      TEXT NOT NULL,
  payload       TEXT NOT NULL,
  reason        TEXT NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 1,
  created_at    INTEGER NOT NULL,
  replayed_at   INTEGER                  -- NULL while still dead
);
CREATE INDEX IF NOT EXISTS callback_dead_letters_open ON callback_dead_letters (replayed_at, id);
