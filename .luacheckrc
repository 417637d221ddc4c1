-- luacheck configuration (make lint)
std = "lua54"
max_line_length = 160
self = false          -- methods need not use self
read_globals = { package = { fields = { "runbook_version", "runbook_tree", "runbook_exe" } } }
exclude_files = { "examples/hub/node_modules/**", "build/**" }
files["spec/**"] = { std = "+busted" }
