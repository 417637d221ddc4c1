-- runbook.lua — this repository as a runbook project: the environments the
-- runbooks may target. `local` is the hub on this machine (examples/hub under
-- `wrangler dev`) and the example daemon, both run by supervisors that
-- `make demo` / `make hub-up` start; `stage` and `production` are the seeds'
-- deployed Worker, reached through wrangler (protected: typed confirmation).
--
-- Paths are relative to this file. RUNBOOK_STATE moves the local state
-- (canonical key file, daemon env, supervisors) elsewhere; RUNBOOK_HUB_PORT
-- moves the hub.
local state = os.getenv("RUNBOOK_STATE") or ".runbook/local"
local port = os.getenv("RUNBOOK_HUB_PORT") or "8787"
local hub_url = "http://127.0.0.1:" .. port
local exe = package.runbook_exe or "./runbook"

return {
  name = "orchestrator-hub",
  default_env = "local",
  runbooks = { "runbooks" },
  environments = {
    ["local"] = {
      url = hub_url,
      worker_url = hub_url,
      web_url = hub_url,
      notify_url = hub_url .. "/hooks/slack",
      -- seed 000: the canonical copy of the key, which every client reads
      canonical = state .. "/scripts/.env.assistant",
      workers = {
        { name = "orchestrator-hub", backend = "dev_vars", path = "examples/hub/.dev.vars",
          restart = { exe, "exec", "examples/hub/hubctl.lua", "restart", state .. "/hub" },
          health_url = hub_url .. "/api/health" },
      },
      daemon = {
        env_file = state .. "/daemon/.env",
        status = state .. "/daemon/state/status.json",
        restart = { exe, "exec", "examples/daemon/daemonctl.lua", "restart", state .. "/daemon/supervisor" },
      },
      hub_dir = "examples/hub",
      hub_state = state .. "/hub",
    },
    stage = {
      url = "https://orchestrator-hub.masa-stage1.workers.dev",
      worker_url = "https://orchestrator-hub.masa-stage1.workers.dev",
      protected = true,
      canonical = "scripts/.env.assistant",
      wrangler = { "npx", "wrangler" },
      wrangler_cwd = "examples/hub",
      workers = {
        { name = "orchestrator-hub", backend = "wrangler" },
      },
      -- seed 002: provider keys live on both worker configs
      provider_workers = {
        { backend = "wrangler", config = "wrangler.processing.toml" },
        { backend = "wrangler", config = "wrangler.toml" },
      },
    },
    production = {
      url = "https://orchestrator-hub.masa-stage1.workers.dev",
      worker_url = "https://orchestrator-hub.masa-stage1.workers.dev",
      protected = true,
      canonical = "scripts/.env.assistant",
      wrangler = { "npx", "wrangler" },
      wrangler_cwd = "examples/hub",
      -- seed 000: "Workers へ同期（default + production）"
      workers = {
        { name = "orchestrator-hub", backend = "wrangler" },
        { name = "orchestrator-hub", env = "production", backend = "wrangler" },
      },
      -- seed 002: one provider key serves stage and production, so a
      -- rotation puts it on both worker configs in both (4 puts)
      provider_workers = {
        { backend = "wrangler", config = "wrangler.processing.toml" },
        { backend = "wrangler", config = "wrangler.toml" },
        { backend = "wrangler", config = "wrangler.processing.toml", env = "production" },
        { backend = "wrangler", config = "wrangler.toml", env = "production" },
      },
    },
  },
}
