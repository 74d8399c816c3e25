-- bench/lua/common.lua — shared by every wrk script of the harness (loaded with dofile).
--
-- Why a done() callback instead of parsing wrk's text: wrk prints latencies rounded with units
-- ("1.23ms"), while latency:percentile() gives exact microseconds; one JSON line is also
-- trivially parsed by report.py.
--
-- Settings come from the environment because wrk passes script arguments only to init(), and
-- the top-level code (which sets wrk.method/body/headers) runs in every Lua state:
--   BENCH_BODY=FILE        request body (POST), read once per Lua state
--   BENCH_SHAPE=rs,ig,msg  x-fake-shape header (the fake's output items)
--   BENCH_AUTH=TOKEN       bearer token, i.e. the tenant (default "bench")
--   BENCH_EXTRA_HEADER="name: value"  one more request header
--   BENCH_COUNT_STATUS=1   count 2xx / 400 / other statuses exactly (needs a response()
--                          callback, which makes wrk hand every body to Lua: only used where the
--                          bodies are small, i.e. the follow-up workloads)

function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_AUTH") or "bench")
local shape = os.getenv("BENCH_SHAPE")
if shape and shape ~= "" then
   wrk.headers["x-fake-shape"] = shape
end
local extra = os.getenv("BENCH_EXTRA_HEADER") -- "name: value" (the soak's upstream routing)
if extra and extra ~= "" then
   local name, value = extra:match("^([^:]+):%s*(.*)$")
   wrk.headers[name] = value
end
local body_file = os.getenv("BENCH_BODY")
if body_file and body_file ~= "" then
   wrk.body = read_file(body_file)
end

-- Per-thread status counters (read back in done() through the thread handles kept by setup()).
n2xx, n400, nother = 0, 0, 0
local count_status = os.getenv("BENCH_COUNT_STATUS") == "1"

function response(status, headers, body)
   if status >= 200 and status < 300 then
      n2xx = n2xx + 1
   elseif status == 400 then
      n400 = n400 + 1
   else
      nother = nother + 1
   end
end

function init(args)
   -- wrk skips header/body parsing when response is nil after init().
   if not count_status then
      response = nil
   end
end

local threads = {}
function setup(thread)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local s2, s400, so = 0, 0, 0
   for _, t in ipairs(threads) do
      s2 = s2 + (t:get("n2xx") or 0)
      s400 = s400 + (t:get("n400") or 0)
      so = so + (t:get("nother") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
      '"counted":%s,"s2xx":%d,"s400":%d,"sother":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout,
      count_status and "true" or "false", s2, s400, so))
end
