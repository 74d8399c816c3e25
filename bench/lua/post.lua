-- bench/lua/post.lua — the same POST (body from BENCH_BODY) on every request: W1, W2, the SSE
-- kind of the soak, W4's follow-up and the W5 prefill. wrk builds the request once per thread.
dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
