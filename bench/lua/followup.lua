-- bench/lua/followup.lua — W5: follow-ups naming image calls of turns created just before the
-- run (BENCH_IDS: one turn per line, "rs_… ig_… msg_…"). Each follow-up is the classic broken
-- one — a user message and the bare image call without its reasoning item — so every request
-- needs a repair. With BENCH_REPAIRED=1 the follow-up is sent already repaired, as rethread
-- forwards it (reasoning and message inserted as item_references): what the direct and nginx
-- paths send so that the upstream does the same work on every path.
-- Requests are pre-built in init() (building them per request would cost wrk CPU), and each
-- thread starts at a different offset so concurrent connections name different turns.
dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")

local reqs = {}
local i = 0
local base_init = init

function init(args)
   base_init(args)
   local ids = {}
   local path = os.getenv("BENCH_IDS")
   assert(path, "BENCH_IDS not set")
   for line in io.lines(path) do
      local rs, ig, msg = line:match("^(%S+)%s+(%S+)%s+(%S+)")
      if ig then table.insert(ids, {rs, ig, msg}) end
   end
   assert(#ids > 0, "no ids in BENCH_IDS")
   local repaired = os.getenv("BENCH_REPAIRED") == "1"
   for _, t in ipairs(ids) do
      local ig = '{"type":"image_generation_call","id":"' .. t[2] .. '"}'
      if repaired then
         ig = '{"type":"item_reference","id":"' .. t[1] .. '"},' .. ig ..
            ',{"type":"item_reference","id":"' .. t[3] .. '"}'
      end
      local body = '{"model":"gpt-5","input":[{"role":"user","content":"Now make it blue."},' .. ig .. ']}'
      table.insert(reqs, wrk.format("POST", nil, nil, body))
   end
   -- A per-thread starting point: math.random is seeded per Lua state by the clock and address.
   math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
   i = math.random(#reqs) - 1
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end
