-- wrk script: POST one OpenAI chat completion per request.
--
--   wrk ... -s post.lua URL -- <mode> <api_key> <run_tag> <connections_per_thread>
--
-- mode:
--   plain        {"model","messages"} only: for the fake upstream and LiteLLM's proxy
--   passthrough  the gateway with every mnx feature off
--   features     the gateway with history + system prompt + state on. Each thread
--                spreads its requests over one chat per connection and moves each
--                chat to a fresh chat_id after TURNS_PER_CHAT requests, so a request
--                replays 0..19 prior turns (about 10 on average) and the history
--                replayed does not grow over the run.
--
-- Kept cheap on purpose: no response() callback (wrk then does no Lua work per
-- answer) and a few string concatenations per request.

local TURNS_PER_CHAT = 20

local counter = 0
local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_id", thread_count)
end

function init(args)
   mode = args[1] or "plain"
   api_key = args[2] or "sk-fake"
   run_tag = args[3] or "run"
   conns = tonumber(args[4] or "1")
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. api_key,
   }
   local messages = '"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]'
   if mode == "plain" then
      fixed_body = "{" .. messages .. "}"
   elseif mode == "passthrough" then
      fixed_body = "{" .. messages ..
         ',"mnx":{"log":false,"history":false,"system_prompt":false,"learn":false}}'
   elseif mode == "features" then
      body_head = "{" .. messages .. ',"mnx":{"subject_id":"bench_user","chat_id":"'
      body_tail = '","history":true,"log":true,"system_prompt":true,' ..
         '"state":{"load":true,"key":"task"}}}'
   else
      error("unknown mode " .. mode)
   end
end

function request()
   if fixed_body then
      return wrk.format("POST", nil, headers, fixed_body)
   end
   local slot = counter % conns
   local generation = math.floor(counter / (conns * TURNS_PER_CHAT))
   counter = counter + 1
   local chat_id = run_tag .. "-t" .. thread_id .. "-c" .. slot .. "-g" .. generation
   return wrk.format("POST", nil, headers, body_head .. chat_id .. body_tail)
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
