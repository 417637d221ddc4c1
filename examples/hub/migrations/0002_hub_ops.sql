-- Operational tables of the local hub: the Slack stand-in, the KV usage
-- counter and injected faults.
CREATE TABLE IF NOT EXISTS notifications (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  text       TEXT NOT NULL,
  dedup_key  TEXT,
  at         TEXT NOT NULL
);

-- One row per (UTC day, operation); op is read|write|delete|list.
CREATE TABLE IF NOT EXISTS kv_usage (
  day  TEXT NOT NULL,
  op   TEXT NOT NULL,
  n    INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (day, op)
);

CREATE TABLE IF NOT EXISTS faults (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  path_prefix  TEXT NOT NULL,
  remaining    INTEGER NOT NULL,
  status       INTEGER,                  -- NULL: only slow the request down
  retry_after  INTEGER,
  delay_ms     INTEGER NOT NULL DEFAULT 0,
  binding      TEXT                      -- 'kv' | 'd1': make that binding fail instead
);

-- Values that override the computed /ops/metrics fields (set via admin seed).
CREATE TABLE IF NOT EXISTS metric_overrides (
  name   TEXT PRIMARY KEY,
  value  REAL
);
