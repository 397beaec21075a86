-- Requests for wrk from a file written by fastpost.bench.scenarios (tokens already in it).
-- One request per line, tab-separated: METHOD, PATH, AUTHORIZATION (or "-"), BODY (or "-").
-- Each thread walks the list from its own starting point, so every request of the mix
-- runs in its proportion; done() prints p95, which wrk's --latency table leaves out.
--   wrk -s requests.lua http://host:port -- /path/to/requests.tsv

local requests = {}
local position = 1
local threads_set_up = 0

-- setup() runs in the main Lua state; thread:set() puts a global into the thread's own state.
function setup(thread)
  threads_set_up = threads_set_up + 1
  thread:set("thread_id", threads_set_up)
end

local function split(line)
  local fields = {}
  for field in string.gmatch(line, "([^\t]*)\t?") do
    fields[#fields + 1] = field
    if #fields == 4 then break end
  end
  return fields
end

function init(args)
  local path = args[1]
  local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in file:lines() do
    if line ~= "" then
      local f = split(line)
      local headers = {}
      if f[3] ~= "-" then headers["Authorization"] = f[3] end
      local body = nil
      if f[4] ~= "-" then
        body = f[4]
        headers["Content-Type"] = "application/json"
      end
      requests[#requests + 1] = wrk.format(f[1], f[2], headers, body)
    end
  end
  file:close()
  assert(#requests > 0, "no requests in " .. path)
  position = ((thread_id or 1) * 7919) % #requests + 1
end

function request()
  local r = requests[position]
  position = position % #requests + 1
  return r
end

function done(summary, latency, requests)
  for _, p in ipairs({ 50, 90, 95, 99 }) do
    io.write(string.format("percentile %g: %d\n", p, latency:percentile(p)))
  end
end
