-- wrk script: POST the same JSON request over and over, as run.py describes it.
--
--   wrk ... -s post.lua URL -- <run_tag> <connections_per_thread> <body> [<header>: <value> ...]
--
-- run.py owns every request's shape (the surface's body, the mnx options, the headers),
-- so the request it checks by hand before the load is the one measured. <body> is the
-- JSON body, or "@" and the path of a file with one JSON body per line: the requests
-- then cycle through those bodies in order ((g) and (h): one user message per body).
-- If a body contains CHAT_ID (below), each request gets a chat id there instead: each
-- thread spreads its requests over one chat per connection and moves each chat to a
-- fresh chat_id after TURNS_PER_CHAT requests, so a request replays 0..19 prior turns
-- (about 10 on average) and the history replayed does not grow over the run. The
-- remaining arguments are request headers.
--
-- Kept cheap on purpose: no response() callback (wrk then does no Lua work per
-- answer) and a few string concatenations per request.

local TURNS_PER_CHAT = 20
local CHAT_ID = "@CHAT_ID@"

local counter = 0
local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_id", thread_count)
end

function init(args)
   run_tag = args[1] or "run"
   conns = tonumber(args[2] or "1")
   local body = args[3] or error("post.lua: no request body given")
   headers = {}
   for i = 4, #args do
      local name, value = args[i]:match("^([^:]+):%s*(.*)$")
      if not name then
         error("post.lua: header argument " .. args[i] .. " is not 'name: value'")
      end
      headers[name] = value
   end
   local bodies = {}
   if body:sub(1, 1) == "@" then
      local file = io.open(body:sub(2), "r") or error("post.lua: cannot read " .. body:sub(2))
      for line in file:lines() do
         if line ~= "" then
            bodies[#bodies + 1] = line
         end
      end
      file:close()
      if #bodies == 0 then
         error("post.lua: no request body in " .. body:sub(2))
      end
   else
      bodies[1] = body
   end
   -- Each body split around its chat id once, here, not per request.
   heads, tails = {}, {}
   for i, text in ipairs(bodies) do
      local at = text:find(CHAT_ID, 1, true)
      if at then
         heads[i] = text:sub(1, at - 1)
         tails[i] = text:sub(at + #CHAT_ID)
      else
         heads[i] = text
      end
   end
   body_count = #bodies
   if body_count == 1 and not tails[1] then
      fixed_body = heads[1]
   end
end

function request()
   if fixed_body then
      return wrk.format("POST", nil, headers, fixed_body)
   end
   local n = counter % body_count + 1
   local slot = counter % conns
   local generation = math.floor(counter / (conns * TURNS_PER_CHAT))
   counter = counter + 1
   if not tails[n] then
      return wrk.format("POST", nil, headers, heads[n])
   end
   local chat_id = run_tag .. "-t" .. thread_id .. "-c" .. slot .. "-g" .. generation
   return wrk.format("POST", nil, headers, heads[n] .. chat_id .. tails[n])
end

-- One machine-readable line; run.py parses it. Latencies are in microseconds.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f max_us=%d " ..
      "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
