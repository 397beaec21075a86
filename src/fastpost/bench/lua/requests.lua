-- Requests for wrk from a file written by fastpost.bench.scenarios (tokens already in it).
-- One request per line, tab-separated: METHOD, PATH, AUTHORIZATION (or "-"), BODY (or "-"),
-- ROUTE (the name its figures are counted under).
-- Each thread walks the list from its own starting point, so every request of the mix
-- runs in its proportion; done() prints p95, which wrk's --latency table leaves out, and a
-- row per route (count, statuses, latency percentiles).
--   wrk -s requests.lua http://host:port -- /path/to/requests.tsv
--
-- Per route: wrk's Lua sees neither connections nor latencies, only request() before each
-- send and response() after each answer, in whatever order the connections finish. So
-- every request carries `X-Request-ID: fpb<n>` (n: its place in the list) and the server
-- sends the id back (fastpost does; so does the bench baseline): response() finds which
-- request it answers, hence its route, and times it from request() with the monotonic
-- clock (wrk starts its own clock right after request() returns). Answers without our id
-- are counted under the route "?".

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } fastpost_timespec;
int clock_gettime(int clock_id, fastpost_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("fastpost_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

-- Latencies go into buckets 1% wide (bucket b holds [STEP^b, STEP^(b+1)) microseconds), so
-- a thread keeps a few hundred numbers per route whatever the request count, and a
-- percentile read from them is within 1% of the exact one.
local STEP = 1.01
local LOG_STEP = math.log(STEP)
-- Lists shorter than this are repeated (with their own ids) so that no id is in flight on
-- two connections of one thread at once.
local MIN_LIST = 4096

local requests = {}
local position = 1
local threads_set_up = 0
local threads = {}

-- Per thread, globals so that done() can read them: routes[n] = the route of request n;
-- sent[n] = when request n went out; tally["ROUTE\tcount"], tally["ROUTE\tmax"],
-- tally["ROUTE\tstatus\tCODE"] and tally["ROUTE\tbucket\tB"]. Flat tables, because
-- thread:get crashes wrk 4.1 on nested ones.
routes = {}
sent = {}
tally = {}

-- setup() runs in the main Lua state; thread:set() puts a global into the thread's own state.
function setup(thread)
  threads_set_up = threads_set_up + 1
  thread:set("thread_id", threads_set_up)
  threads[#threads + 1] = thread
end

local function split(line)
  local fields = {}
  for field in string.gmatch(line, "([^\t]*)\t?") do
    fields[#fields + 1] = field
    if #fields == 5 then break end
  end
  return fields
end

function init(args)
  local path = args[1]
  local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  local lines = {}
  for line in file:lines() do
    if line ~= "" then lines[#lines + 1] = split(line) end
  end
  file:close()
  assert(#lines > 0, "no requests in " .. path)
  local copies = math.ceil(MIN_LIST / #lines)
  for _ = 1, copies do
    for _, f in ipairs(lines) do
      local n = #requests + 1
      local headers = { ["X-Request-ID"] = "fpb" .. n }
      if f[3] ~= "-" then headers["Authorization"] = f[3] end
      local body = nil
      if f[4] ~= "-" then
        body = f[4]
        headers["Content-Type"] = "application/json"
      end
      requests[n] = wrk.format(f[1], f[2], headers, body)
      routes[n] = (f[5] ~= nil and f[5] ~= "") and f[5] or (f[1] .. " " .. f[2])
    end
  end
  position = ((thread_id or 1) * 7919) % #lines + 1
end

function request()
  local n = position
  position = position % #requests + 1
  sent[n] = now_us()
  return requests[n]
end

local function add(key, n)
  tally[key] = (tally[key] or 0) + n
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-ID"]
  local n = id and tonumber(string.match(id, "^fpb(%d+)$"))
  local started = n and sent[n]
  local route = "?"
  if started then
    sent[n] = nil
    route = routes[n]
    local us = now_us() - started
    local max = route .. "\tmax"
    if us > (tally[max] or 0) then tally[max] = us end
    add(route .. "\tbucket\t" .. (us > 1 and math.floor(math.log(us) / LOG_STEP) or 0), 1)
  end
  add(route .. "\tcount", 1)
  add(route .. "\tstatus\t" .. status, 1)
end

local function percentile(s, p)
  local keys = {}
  for b in pairs(s.buckets) do keys[#keys + 1] = b end
  table.sort(keys)
  local timed = 0
  for _, b in ipairs(keys) do timed = timed + s.buckets[b] end
  local rank = math.max(1, math.ceil(p / 100 * timed))
  local seen = 0
  for _, b in ipairs(keys) do
    seen = seen + s.buckets[b]
    if seen >= rank then return math.min(STEP ^ (b + 1), s.max) end
  end
  return s.max
end

local function merged_stats(route)
  local m = merged[route]
  if m == nil then
    m = { count = 0, max = 0, codes = {}, buckets = {} }
    merged[route] = m
  end
  return m
end

function done(summary, latency, requests)
  for _, p in ipairs({ 50, 90, 95, 99 }) do
    io.write(string.format("percentile %g: %d\n", p, latency:percentile(p)))
  end
  -- Each thread's tallies, merged: thread:get copies a global out of the thread's state.
  merged = {}
  local unanswered = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("tally")) do
      local route, kind, x = string.match(key, "^(.-)\t(%a+)\t?(.*)$")
      local m = merged_stats(route)
      if kind == "count" then
        m.count = m.count + n
      elseif kind == "max" then
        if n > m.max then m.max = n end
      elseif kind == "status" then
        m.codes[x] = (m.codes[x] or 0) + n
      else
        local b = tonumber(x)
        m.buckets[b] = (m.buckets[b] or 0) + n
      end
    end
    local names = thread:get("routes")
    for n in pairs(thread:get("sent")) do
      unanswered[names[n]] = (unanswered[names[n]] or 0) + 1
    end
  end
  for route, m in pairs(merged) do
    io.write(string.format("route\t%s\tcount\t%d\n", route, m.count))
    for code, n in pairs(m.codes) do
      io.write(string.format("route\t%s\tstatus %s\t%d\n", route, code, n))
    end
    if next(m.buckets) ~= nil then
      for _, p in ipairs({ 50, 75, 90, 95, 99, 99.9, 99.99 }) do
        io.write(string.format("route\t%s\tp%g\t%.0f\n", route, p, percentile(m, p)))
      end
      io.write(string.format("route\t%s\tmax\t%.0f\n", route, m.max))
    end
  end
  -- Sent and never answered: in flight when the run ended, or lost with a socket error.
  for route, n in pairs(unanswered) do
    io.write(string.format("route\t%s\tunanswered\t%d\n", route, n))
  end
end
