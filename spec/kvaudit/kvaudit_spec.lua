-- stdlib.kvaudit: the scanner finds exactly the KV sites of a fixture repo
-- (aliases, template-literal keys, destructuring, service-worker globals,
-- typed parameters) and leaves out every lookalike with its reason (Cache
-- API, Map/Set, Headers, URLSearchParams, FormData, R2, Durable Objects,
-- comments and strings); classification, candidates, the baseline round
-- trip and the regression rules behave as an operator would expect.
local kvaudit = require("stdlib.kvaudit")
local cli = require("cli")

local FIX = "spec/fixtures/kvrepo"

local function site_keys(sites)
  local out = {}
  for _, s in ipairs(sites) do out[#out + 1] = ("%s:%d:%s:%s"):format(s.file, s.line, s.op, s.binding) end
  table.sort(out)
  return out
end

local function excluded_keys(list)
  local out = {}
  for _, x in ipairs(list) do out[#out + 1] = ("%s:%s:%s"):format(x.file, tostring(x.line), x.op) end
  table.sort(out)
  return out
end

local function by_where(sites)
  local out = {}
  for _, s in ipairs(sites) do out[("%s:%d:%s"):format(s.file, s.line, s.op)] = s end
  return out
end

-- sites and exclusions of one snippet
local function analyze(src, o)
  local sites, excluded = kvaudit.analyze(src, "x.js", kvaudit.analyzer({ bindings = o and o.bindings }))
  return sites, excluded
end

local function one(src)
  local sites, excluded = analyze(src)
  assert.equals(1, #sites, ("expected one site in %q, got %d (excluded: %s)"):format(src, #sites,
    table.concat(excluded_keys(excluded), ", ")))
  return sites[1]
end

local function why_excluded(src)
  local sites, excluded = analyze(src)
  assert.equals(0, #sites, ("expected no site in %q, got %s"):format(src, table.concat(site_keys(sites), ", ")))
  assert.equals(1, #excluded, ("expected one exclusion in %q"):format(src))
  return excluded[1].reason
end

local function copy_fixture()
  local dir = cli.tmpdir()
  local r = require("runbook.proc.core").run({ argv = { "cp", "-R", FIX, dir .. "/repo" }, timeout = 30 })
  assert.equals(0, r.code)
  return dir, dir .. "/repo"
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function scan(root, o)
  local o2 = { all_lines = true }
  for k, v in pairs(o or {}) do o2[k] = v end
  local r = assert(kvaudit.scan(root, o2))
  return kvaudit.classify(r)
end

describe("kvaudit.scan on the fixture repository", function()
  local r
  setup(function() r = scan(FIX) end)

  it("finds exactly the KV sites, with file, line, operation and binding", function()
    assert.same({
      "src/index.js:14:get:CACHE",
      "src/index.js:25:get:CACHE",
      "src/index.js:26:put:CACHE",
      "src/index.js:27:list:QUEUE_KV",
      "src/index.js:33:get:LOCKS",
      "src/index.js:34:put:LOCKS",
      "src/legacy.js:7:get:LEGACY_STORE",
      "src/legacy.js:8:put:LEGACY_STORE",
      "src/lock.ts:13:get:LOCKS",
      "src/lock.ts:14:put:LOCKS",
      "src/lock.ts:19:delete:LOCKS",
      "src/queue.js:15:list:QUEUE_KV",
      "src/queue.js:17:delete:QUEUE_KV",
      "src/queue.js:7:put:QUEUE_KV",
      "src/ratelimit.ts:4:get:kv",
      "src/ratelimit.ts:5:put:kv",
      "src/sessions.js:11:put:SESSIONS",
      "src/sessions.js:15:delete:SESSIONS",
      "src/sessions.js:19:put:SESSIONS",
      "src/sessions.js:20:put:CACHE",
      "src/sessions.js:5:get:SESSIONS",
    }, site_keys(r.sites))
    assert.equals(7, r.files) -- src/*.js|ts only: test/ excluded by kvaudit.json, .md is not a source
  end)

  it("leaves out every lookalike, comment and string, each with its reason", function()
    assert.same({
      "src/index.js:12:get", "src/index.js:13:get", "src/index.js:20:put", "src/index.js:22:put",
      "src/index.js:23:put", "src/index.js:24:put", "src/index.js:5:put",
      "src/lookalikes.js:10:delete", "src/lookalikes.js:11:get", "src/lookalikes.js:12:put",
      "src/lookalikes.js:14:get", "src/lookalikes.js:16:get", "src/lookalikes.js:17:put",
      "src/lookalikes.js:7:get", "src/lookalikes.js:8:get",
    }, excluded_keys(r.excluded))
    local reasons = {}
    for _, x in ipairs(r.excluded) do reasons[("%s:%d"):format(x.file, x.line)] = x.reason end
    assert.matches("comment or a string", reasons["src/index.js:5"])   -- block comment
    assert.matches("comment or a string", reasons["src/index.js:22"])  -- line comment
    assert.matches("comment or a string", reasons["src/index.js:23"])  -- "string"
    assert.matches("comment or a string", reasons["src/index.js:24"])  -- `template`
    assert.matches("^Headers%.get", reasons["src/index.js:12"])
    assert.matches("^URLSearchParams%.get", reasons["src/index.js:13"])
    assert.matches("^Cache API %(caches%.default%)", reasons["src/index.js:20"])
    assert.matches("^FormData", reasons["src/lookalikes.js:7"])
    assert.matches("^a Map", reasons["src/lookalikes.js:8"])
    assert.matches("^a Set", reasons["src/lookalikes.js:10"])
    assert.matches("FILES is an R2 bucket %(wrangler%.toml%)", reasons["src/lookalikes.js:11"])
    assert.matches("COUNTER is a Durable Object namespace", reasons["src/lookalikes.js:14"])
    assert.matches("^URLSearchParams", reasons["src/lookalikes.js:16"])
    assert.matches("in%-memory test double %(kvaudit%.json exclusion%)", reasons["src/lookalikes.js:17"])
  end)

  it("never enters node_modules or dist, and honours kvaudit.json's exclude", function()
    for _, s in ipairs(r.sites) do
      assert.is_nil(s.file:find("^node_modules/"), s.file)
      assert.is_nil(s.file:find("^dist/"), s.file)
      assert.is_nil(s.file:find("^test/"), s.file)
    end
    assert.equals(FIX .. "/kvaudit.json", r.config)
  end)

  it("gives the same result on every CPU as on one: sites, lookalikes and their lines, errors, bindings", function()
    -- the fixture's sources copied into enough directories for worker
    -- threads, plus a file that cannot be read (a dangling symlink)
    local _, root = copy_fixture()
    local proc = require("runbook.proc.core")
    for i = 1, 12 do
      local r2 = proc.run({ argv = { "cp", "-R", root .. "/src", ("%s/src%02d"):format(root, i) }, timeout = 30 })
      assert.equals(0, r2.code)
    end
    assert.equals(0, proc.run({ argv = { "ln", "-s", "missing.js", root .. "/src05/gone.js" }, timeout = 30 }).code)
    for _, lines in ipairs({ true, false }) do
      local single = assert(kvaudit.scan(root, { workers = 0, all_lines = lines }))
      local many = assert(kvaudit.scan(root, { workers = 3, all_lines = lines }))
      assert.is_true(single.files >= kvaudit.PARALLEL_MIN_FILES, "too few files for worker threads: " .. single.files)
      -- worker threads did take files (else the equality proves nothing)
      assert.equals(1, single.threads)
      assert.is_true(many.threads >= 2, "threads that analysed files: " .. many.threads)
      assert.is_true(#single.sites > 100)
      assert.same(single.sites, many.sites)
      assert.same(single.excluded, many.excluded)
      assert.same(single.errors, many.errors)
      assert.same(single.bindings, many.bindings)
      assert.equals(single.bytes, many.bytes)
      assert.equals("src05/gone.js", single.errors[1].file)
    end
    -- without all_lines only the first few lookalikes of each reason keep
    -- their line, counted in file order across the threads' parts (the
    -- equality above checks which ones)
    local many = assert(kvaudit.scan(root, { workers = 3 }))
    local without = 0
    for _, x in ipairs(many.excluded) do
      if not x.line then without = without + 1 end
    end
    assert.is_true(without > 100, "lookalikes without a line: " .. without)
  end)

  it("says how each site was recognised: env, alias, destructuring, global, typed parameter", function()
    local s = by_where(r.sites)
    assert.matches("^env%.CACHE %(a KV namespace in wrangler%.toml%)", s["src/index.js:14:get"].how)
    assert.matches("^alias of env%.LOCKS", s["src/lock.ts:14:put"].how)
    assert.matches("^destructured from env %(QUEUE_KV%)", s["src/queue.js:15:list"].how)
    assert.matches("^destructured from env %(SESSIONS%)", s["src/sessions.js:5:get"].how) -- { SESSIONS: store }
    assert.matches("^global binding LEGACY_STORE.*kvaudit%.json", s["src/legacy.js:7:get"].how)
    assert.matches("typed KVNamespace", s["src/ratelimit.ts:4:get"].how)
    assert.matches("SESSIONS", s["src/sessions.js:11:put"].how) -- c.env.SESSIONS?.put
  end)

  it("reads literal keys, template-literal and constant prefixes, and list prefixes", function()
    local s = by_where(r.sites)
    assert.equals("cron:last-run", s["src/index.js:34:put"].key)
    assert.is_nil(s["src/index.js:14:get"].key)
    assert.equals("page:", s["src/index.js:14:get"].prefix)
    assert.equals("queue:task:", s["src/queue.js:7:put"].prefix) -- TASK_PREFIX + id
    assert.equals("lock:", s["src/lock.ts:14:put"].prefix)       -- const key = `lock:${name}`
    assert.equals("queue:lease:", s["src/queue.js:15:list"].prefix)
    assert.equals("queue:lease:", s["src/index.js:27:list"].prefix)
    assert.equals("session:", s["src/sessions.js:5:get"].prefix) -- getWithMetadata counts as a get
  end)

  it("tells puts with a TTL from puts without one, and options it cannot see", function()
    local s = by_where(r.sites)
    assert.equals("yes", s["src/index.js:26:put"].ttl)
    assert.equals("yes", s["src/lock.ts:14:put"].ttl)
    assert.equals("yes", s["src/ratelimit.ts:5:put"].ttl)    -- expiration
    assert.equals("yes", s["src/sessions.js:11:put"].ttl)    -- options in a const
    assert.equals("no", s["src/index.js:34:put"].ttl)
    assert.equals("no", s["src/queue.js:7:put"].ttl)
    assert.equals("no", s["src/sessions.js:19:put"].ttl)
    assert.equals("no", s["src/legacy.js:8:put"].ttl)
    assert.equals("unknown", s["src/sessions.js:20:put"].ttl) -- a parameter
  end)

  it("marks lists and puts on hot paths: fetch handler, scheduled handler, loops", function()
    local s = by_where(r.sites)
    assert.matches("fetch handler", s["src/index.js:27:list"].hot)
    assert.matches("scheduled handler", s["src/index.js:34:put"].hot)
    assert.matches("^in a loop %(do%)", s["src/queue.js:15:list"].hot)
    assert.equals("pollLeases", s["src/queue.js:15:list"].fn)
    assert.is_nil(s["src/queue.js:7:put"].hot)
    assert.equals("enqueue", s["src/queue.js:7:put"].fn)
  end)

  it("classifies: A control plane, B high frequency, C cache, with the evidence and a home", function()
    local s = by_where(r.sites)
    local function cat(k) return s[k].category, s[k].category_reason, s[k].home end
    local c, why, home = cat("src/index.js:34:put")
    assert.equals("A", c)
    assert.matches('run state %(key "cron:last%-run"%)', why)
    assert.matches("D1", home)
    c, why, home = cat("src/lock.ts:14:put")
    assert.equals("A", c)
    assert.matches("^lock", why)
    assert.matches("Durable Object %(recommended%)", home)
    c, why = cat("src/sessions.js:19:put")
    assert.equals("A", c)
    assert.matches("token", why)
    c, why, home = cat("src/queue.js:15:list")
    assert.equals("B", c)
    assert.equals('queue / lease state (list prefix "queue:lease:")', why)
    assert.matches("no KV list", home)
    local c2, _, home2 = cat("src/ratelimit.ts:5:put")
    assert.equals("B", c2)
    assert.matches("Durable Object", home2)
    c, why, home = cat("src/index.js:26:put")
    assert.equals("C", c)
    assert.matches('cache %(key "page:"%)', why)
    assert.matches("^KV %(keep%)", home)
    c, why = cat("src/legacy.js:8:put")
    assert.equals("C", c)
    assert.matches("no other sign", why)
  end)

  it("ranks migration candidates: control plane and TTL-less puts first, a TTL'd cache fill not at all", function()
    local top = kvaudit.candidates(r, 10)
    assert.is_true(#top >= 5)
    assert.equals("LOCKS", top[1].binding)
    assert.equals("cron:", top[1].family)
    assert.equals("A", top[1].category)
    local seen = {}
    for i, g in ipairs(top) do
      seen[g.binding .. " " .. tostring(g.family)] = i
      if i > 1 then assert.is_true(top[i - 1].score >= g.score) end
    end
    assert.truthy(seen["QUEUE_KV queue:lease:"])
    assert.truthy(seen["LOCKS lock:"])
    assert.is_nil(seen["CACHE page:"]) -- a cache with a TTL filled per request is what KV is for
    assert.truthy(seen["LEGACY_STORE config"])
    assert.matches("add expirationTtl", top[seen["LEGACY_STORE config"]].home)
  end)

  it("reports totals per operation, TTL-less puts, hot lists and the candidates", function()
    local text = table.concat(kvaudit.report(r), "\n")
    assert.matches("21 KV sites in 7 files scanned", text)
    assert.matches("put 9, get 7, delete 3, list 2", text)
    assert.matches('puts without TTL %(4%):\n  src/index.js:34 put LOCKS key "cron:last%-run"', text)
    assert.matches('lists on hot paths %(2%):\n  src/index.js:27 list QUEUE_KV prefix "queue:lease:" — in the fetch handler', text)
    assert.matches('1%. LOCKS "cron:" — A run state → D1', text)
    assert.matches("comment or a string, not code %(e%.g%. src/index%.js:5 env%.LOCKS%.put%)", text)
  end)
end)

describe("kvaudit.analyze on snippets", function()
  it("follows aliases: const, this field, destructuring with rename, alias of alias", function()
    assert.equals("KV", one("const kv = env.KV;\nawait kv.put('a', 'b');").binding)
    assert.equals("KV", one("class S { constructor(env) { this.store = env.KV; } x() { return this.store.get('a'); } }").binding)
    assert.equals("KV", one("const { KV: box } = ctx.env;\nbox.delete('a');").binding)
    assert.equals("KV", one("const a = env.KV;\nconst b = a;\nb.list();").binding)
    assert.equals("CACHE", one("const { CACHE } = env; await CACHE.get('k')").binding)
  end)

  it("reads a block's head across lines: a for's semicolons, parameters on several lines, a lone {", function()
    -- the ";" inside for (...) would end the head at "i++)"
    local s = one("async function sweep(env, keys) {\n  for (let i = 0; i < keys.length; i++) {\n"
      .. "    await env.KV.list({ prefix: keys[i] });\n  }\n}")
    assert.equals("in a loop (for (let i = 0; i < keys.length; i++))", s.hot)
    assert.equals("sweep", s.fn)
    -- the ")" on the "{" line opens a parenthesis three lines up
    s = one("export async function refreshAll(\n  env,\n  ids\n) {\n  await env.KV.put('k', 'v');\n}")
    assert.equals("refreshAll", s.fn)
    -- "{" alone on its line: the head is the line before
    s = one("function drain(env, names)\n{\n  for (const n of names)\n  {\n    env.KV.put(n, '1');\n  }\n}")
    assert.equals("in a loop (for (const n of names))", s.hot)
    assert.equals("drain", s.fn)
  end)

  it("takes parameters and properties named like a KV namespace, and typed ones", function()
    assert.equals("kv", one("export function f(kv, k) { return kv.get(k); }").binding)
    assert.equals("sessionKv", one("function f(sessionKv) { return sessionKv.delete('x'); }").binding)
    assert.equals("store", one("function f(store: KVNamespace) { return store.put('k', 'v'); }").binding)
    assert.equals("kv", one("await c.kv.put('k', 'v', { expirationTtl: 60 });").binding)
    -- an expression receiver (no name to follow) whose last name the file types
    local s = one("interface Env { STORE: KVNamespace }\n"
      .. "export async function f(get) { return (await get()).STORE.put('k', 'v'); }")
    assert.equals("STORE", s.binding)
    assert.equals("STORE is typed KVNamespace", s.how)
  end)

  it("reads template-literal and concatenated key prefixes", function()
    assert.equals("user:", one("env.KV.get(`user:${id}`)").prefix)
    local s = one("env.KV.get(`plain`)")
    assert.equals("plain", s.key)
    assert.equals("a:", one('env.KV.get("a:" + id)').prefix)
    assert.equals("lease:", one('const P = "lease:";\nenv.KV.put(P + id, v, { expirationTtl: 9 });').prefix)
    assert.is_nil(one("env.KV.get(keyFor(id))").prefix)
  end)

  it("sees code inside ${...} of a template literal, and not the literal around it", function()
    local sites = analyze("const s = `a ${await env.KV.get('in-expr')} b env.KV.put(x) c`;\nenv.KV.delete('after');")
    assert.same({ "x.js:1:get:KV", "x.js:2:delete:KV" }, site_keys(sites))
  end)

  it("keeps track across a multi-line template literal and a block comment", function()
    local src = table.concat({
      "const html = `",
      "  <p>env.KV.put('nope')</p>",
      "  ${items.map((i) => `<li>${i}</li>`).join('')}",
      "`;",
      "/* env.KV.put('nope')",
      "   */ await env.KV.put('yes', v);",
    }, "\n")
    local sites = analyze(src)
    assert.same({ "x.js:6:put:KV" }, site_keys(sites))
  end)

  it("leaves out a call in a string or a comment on a line of its own", function()
    assert.matches("comment or a string", why_excluded('const help = "store it with env.KV.put(key, value)";'))
    assert.matches("comment or a string", why_excluded("const help = 'env.KV.get(k)';"))
    assert.matches("comment or a string", why_excluded("x(); // env.KV.delete(k)"))
    assert.matches("comment or a string", why_excluded("/* env.KV.list() */"))
    assert.matches("comment or a string", why_excluded("/**\n * env.KV.list()\n */"))
  end)

  it("does not take a regex or a division for the start of a string", function()
    local sites = analyze([[const re = /["'`]/; const h = n / 2; await env.KV.get("a");]] .. "\n"
      .. [[const r2 = /\/\//g; env.KV.delete("b"); // env.KV.put("c")]])
    assert.same({ "x.js:1:get:KV", "x.js:2:delete:KV" }, site_keys(sites))
  end)

  it("tells TTL yes / no / unknown", function()
    assert.equals("yes", one("env.KV.put(k, v, { expirationTtl: 60 })").ttl)
    assert.equals("yes", one("env.KV.put(k, v, {\n  expiration: t,\n})").ttl)
    assert.equals("no", one("env.KV.put(k, v)").ttl)
    assert.equals("no", one("env.KV.put(k, v, { metadata: { a: 1 } })").ttl)
    assert.equals("unknown", one("env.KV.put(k, v, { ...opts })").ttl)
    assert.equals("unknown", one("env.KV.put(k, v, opts)").ttl)
    assert.equals("yes", one("const o = { expirationTtl: 5 };\nenv.KV.put(k, JSON.stringify({ a: [1, 2] }), o)").ttl)
  end)

  it("leaves out Cache API, Map, Set, Headers, URLSearchParams, FormData, DO storage", function()
    assert.matches("^Cache API", why_excluded("const c = caches.default;\nc.put(req, res);"))
    assert.matches("^Cache API", why_excluded("const c = await caches.open('v1');\nawait c.delete(req);"))
    assert.matches("^Cache API: cache%.put%(request, response%)", why_excluded("cache.put(request, response.clone());"))
    assert.matches("^a Map", why_excluded("const m = new Map();\nm.get(1);"))
    assert.matches("WeakMap", why_excluded("this.memo = new WeakMap();\nthis.memo.get(o);"))
    assert.matches("^typed Map", why_excluded("function f(m: Map<string, number>) { return m.get('a'); }"))
    assert.matches("^Headers", why_excluded("c.req.raw.headers.get('x');"))
    assert.matches("^URLSearchParams", why_excluded("new URL(u).searchParams.get('q');"))
    assert.matches("^FormData", why_excluded("const f = await request.formData();\nf.get('a');"))
    assert.matches("Durable Object storage", why_excluded("await this.state.storage.put('k', 1);"))
    assert.matches("^the receiver is an expression", why_excluded("(await getStore()).get('k');"))
    assert.matches("^receiver app is not env%.BINDING", why_excluded("app.get('/x', handler);"))
    assert.matches("no key", why_excluded("await env.SECRET.get();"))
  end)

  it("counts .put ( with a space, and not .putIfAbsent or .listen", function()
    local sites = analyze("env.KV.put ('a', 'b');\nserver.listen(8080);\nenv.KV.putIfAbsent('x');")
    assert.same({ "x.js:1:put:KV" }, site_keys(sites))
  end)
end)

describe("kvaudit.wrangler_bindings", function()
  it("reads [[kv_namespaces]], env sections, inline arrays, R2 and Durable Objects from TOML", function()
    local b = kvaudit.wrangler_bindings(cli.slurp(FIX .. "/wrangler.toml"), "wrangler.toml")
    assert.same({ CACHE = "kv", LOCKS = "kv", SESSIONS = "kv", QUEUE_KV = "kv", FILES = "r2", COUNTER = "do" }, b)
  end)

  it("reads wrangler.jsonc with comments and trailing commas", function()
    local b = assert(kvaudit.wrangler_bindings([[{
      // the bindings
      "kv_namespaces": [{ "binding": "KV", "id": "x" },],
      /* bucket */ "r2_buckets": [{ "binding": "B", "bucket_name": "b//not-a-comment" }],
      "durable_objects": { "bindings": [{ "name": "D", "class_name": "C" }] },
      "env": { "prod": { "kv_namespaces": [{ "binding": "KV2", "id": "y" }] } }
    }]], "wrangler.jsonc"))
    assert.same({ KV = "kv", B = "r2", D = "do", KV2 = "kv" }, b)
  end)

  it("refuses a JSON config it cannot parse, naming the file", function()
    local b, err = kvaudit.wrangler_bindings("{ nope", "wrangler.json")
    assert.is_nil(b)
    assert.matches("wrangler%.json: not valid JSON", err)
  end)
end)

describe("kvaudit.glob_matcher", function()
  it("matches components without a slash and whole paths with one", function()
    local m = kvaudit.glob_matcher("test, *.spec.ts,src/legacy/**,**/gen/*.js")
    assert.equals("test", m("test/a.js"))
    assert.equals("test", m("src/test/a.js"))
    assert.equals("*.spec.ts", m("src/a.spec.ts"))
    assert.equals("src/legacy/**", m("src/legacy/deep/x.js"))
    assert.equals("**/gen/*.js", m("gen/x.js"))
    assert.equals("**/gen/*.js", m("a/b/gen/x.js"))
    assert.is_nil(m("src/a.ts"))
    assert.is_nil(m("src/gen/deep/x.js"))
    assert.is_nil(m("src/testing.js"))
  end)
end)

describe("kvaudit baseline", function()
  local dir, root, base
  before_each(function()
    dir, root = copy_fixture()
    base = assert(kvaudit.decode_baseline(kvaudit.encode_baseline(scan(root)), "b.json"))
  end)
  after_each(function() cli.rmrf(dir) end)

  local function rule(cmp, i) return cmp.rules[i] end

  it("round-trips: the same tree passes, with every rule ok", function()
    assert.equals(21, #base.sites)
    assert.equals(9, base.totals.put)
    assert.equals(4, base.totals.put_without_ttl)
    local cmp = kvaudit.compare(base, scan(root))
    assert.is_true(cmp.ok)
    assert.equals(0, #cmp.new)
    assert.equals(0, #cmp.removed)
  end)

  it("keeps passing when code moves: identity is not the line number", function()
    local p = root .. "/src/index.js"
    write(p, "// moved\n\n\n" .. cli.slurp(p))
    local cmp = kvaudit.compare(base, scan(root))
    assert.is_true(cmp.ok, cmp.rules[1].message)
  end)

  it("numbers identical sites of a file 1, 2, … skipping one the binding check leaves out", function()
    -- env.kvBucket is named like an R2 bucket: left out after analysis,
    -- while the parameter kvBucket (named like KV) stays; same file, op,
    -- binding and key for all three
    write(root .. "/src/same.js", table.concat({
      "export async function f(env, kvBucket) {",
      '  await kvBucket.put("k", "v");',
      '  await env.kvBucket.put("k", "v");',
      '  await kvBucket.put("k", "v");',
      "}", "" }, "\n"))
    local ids = {}
    for _, s in ipairs(scan(root).sites) do
      if s.file == "src/same.js" then ids[#ids + 1] = s.line .. " " .. s.id end
    end
    assert.same({ '2 src/same.js|put|kvBucket|"k"#1', '4 src/same.js|put|kvBucket|"k"#2' }, ids)
  end)

  it("fails on a new put without a TTL, naming it, whatever the allowances", function()
    write(root .. "/src/more.js", "export async function m(env) {\n  await env.CACHE.put(\"new-key\", \"v\");\n}\n")
    local cmp = kvaudit.compare(base, scan(root), { total = 100, puts = 100 })
    assert.is_false(cmp.ok)
    assert.is_false(rule(cmp, 1).ok)
    assert.matches('src/more%.js:2 put CACHE key "new%-key"', rule(cmp, 1).message)
    assert.is_true(rule(cmp, 2).ok)
    assert.is_true(rule(cmp, 3).ok)
    assert.is_true(rule(cmp, 4).ok)
  end)

  it("fails on a new list, naming it, whatever the allowances", function()
    write(root .. "/src/more.js", "export const m = (env) => env.LOCKS.list({ prefix: 'lock:' });\n")
    local cmp = kvaudit.compare(base, scan(root), { total = 100, puts = 100 })
    assert.is_false(rule(cmp, 2).ok)
    assert.matches('src/more%.js:1 list LOCKS prefix "lock:"', rule(cmp, 2).message)
  end)

  it("lets totals and puts grow within the allowances and fails above them", function()
    write(root .. "/src/more.js", "export async function m(env) {\n  await env.CACHE.put('a', 'v', { expirationTtl: 60 });\n"
      .. "  await env.CACHE.get('a');\n}\n")
    local now = scan(root)
    local strict = kvaudit.compare(base, now)
    assert.is_true(rule(strict, 1).ok)
    assert.is_false(rule(strict, 3).ok)
    assert.matches("KV sites grew by 2 %(21 → 23%), more than the allowed 0", rule(strict, 3).message)
    assert.matches("src/more%.js:2 put CACHE", rule(strict, 3).message)
    assert.is_false(rule(strict, 4).ok)
    assert.matches("puts grew by 1 %(9 → 10%)", rule(strict, 4).message)
    local within = kvaudit.compare(base, now, { total = 2, puts = 1 })
    assert.is_true(within.ok)
    local total_only = kvaudit.compare(base, now, { total = 1, puts = 1 })
    assert.is_false(rule(total_only, 3).ok)
    assert.is_true(rule(total_only, 4).ok)
  end)

  it("lists sites that are gone", function()
    os.remove(root .. "/src/legacy.js")
    local cmp = kvaudit.compare(base, scan(root))
    assert.is_true(cmp.ok)
    assert.equals(2, #cmp.removed)
  end)

  it("refuses files that are not a baseline, saying how to make one", function()
    local b, err = kvaudit.decode_baseline("[1,2]", "kv.json")
    assert.is_nil(b)
    assert.matches("kv%.json is not a kv%-audit baseline.*write_baseline=kv%.json", err)
    b, err = kvaudit.decode_baseline('{"version":99,"sites":[],"totals":{}}', "kv.json")
    assert.is_nil(b)
    assert.matches("baseline version 99", err)
  end)
end)

describe("kvaudit.scan errors", function()
  it("names a root that is missing or not a directory", function()
    local r, err = kvaudit.scan("/nonexistent/kvrepo")
    assert.is_nil(r)
    assert.matches("root /nonexistent/kvrepo: .*pass %-p root=DIR", err)
    r, err = kvaudit.scan(FIX .. "/wrangler.toml")
    assert.is_nil(r)
    assert.matches("is not a directory", err)
  end)

  it("refuses a kvaudit.json it cannot parse", function()
    local dir, root = copy_fixture()
    write(root .. "/kvaudit.json", "{ bindings: nope")
    local r, err = kvaudit.scan(root)
    cli.rmrf(dir)
    assert.is_nil(r)
    assert.matches("kvaudit%.json: not valid JSON", err)
  end)

  it("takes extra bindings and path globs from its options", function()
    -- without kvaudit.json, LEGACY_STORE is a KV binding only when the options say so
    local r = scan(FIX, { exclude = "lookalikes.js", config = false, bindings = { "LEGACY_STORE" } })
    local s = by_where(r.sites)
    assert.matches("^global binding LEGACY_STORE .*%(a KV namespace in parameters%)", s["src/legacy.js:7:get"].how)
    assert.is_not_nil(s["src/legacy.js:8:put"])
    local without = scan(FIX, { exclude = "lookalikes.js", config = false })
    assert.is_nil(by_where(without.sites)["src/legacy.js:7:get"])
    -- the globs leave files out: src/legacy.js and src/lookalikes.js are not read
    assert.equals(7, r.files)
    local fewer = scan(FIX, { exclude = "src/legacy.js,lookalikes.js", config = false, bindings = { "LEGACY_STORE" } })
    assert.equals(6, fewer.files)
    for _, x in ipairs(fewer.sites) do assert.not_equals("src/legacy.js", x.file) end
    -- without kvaudit.json, test/ is scanned
    local tests = 0
    for _, x in ipairs(r.sites) do if x.file:find("^test/") then tests = tests + 1 end end
    assert.equals(1, tests)
  end)
end)
