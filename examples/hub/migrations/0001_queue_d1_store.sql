-- The queue's home in D1 (seed 004: "task queue -> queue_tasks / queue_results").
-- Ids are the same ids the legacy KV layout used (queue:task:<id>,
-- queue:result:<id>), so the KV->D1 migration is INSERT OR IGNORE per id.
CREATE TABLE IF NOT EXISTS queue_tasks (
  id          TEXT PRIMARY KEY,
  payload     TEXT NOT NULL,             -- the task as JSON
  status      TEXT NOT NULL DEFAULT 'pending',
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_tasks_status ON queue_tasks (status, created_at);

CREATE TABLE IF NOT EXISTS queue_results (
  id          TEXT PRIMARY KEY,          -- the task id
  payload     TEXT NOT NULL,             -- the result as JSON
  created_at  TEXT NOT NULL
);
