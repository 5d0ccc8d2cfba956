-- wrk script of `make bench`: the same request mix against every configuration.
--
-- A fixed, deterministic pool of requests, cycled: per 100 requests, 94 carry a
-- distinct-looking 36-byte user ID in x-user-id (the sticky-hash path), 3 carry
-- the override header x-canary: canary, 3 carry neither (anonymous). None of the
-- user IDs is listed in any config's `users`, so the large config (e) does the
-- same work as the typical one (d) plus the cost of its size.
--
-- With BENCH_HOSTS=N in the environment (issue 21's configurations), each block of
-- 100 requests goes to the next of N service hosts, svc000.example.com onward.
--
-- With the script argument `first-visits` (`wrk ... -- first-visits`) every request
-- carries neither: a new visitor, which `anonymous: "cookie"` issues an ID.
--
-- done() prints one JSON line that bench/bench.py parses.

local pool = {}
local next_index = 0

local function user_id(n)
  -- 36 bytes, UUID-shaped, deterministic.
  local a = (n * 2654435761) % 4294967296
  local b = (n * 40503) % 65536
  return string.format("%08x-%04x-4%03x-a%03x-%012d", a, b, n % 4096, (a / 65536) % 4096, n)
end

function init(args)
  local hosts = tonumber(os.getenv("BENCH_HOSTS") or "0") or 0
  local first_visits = args[1] == "first-visits"
  local base = {
    ["user-agent"] = "wrk-canary-bench",
    ["accept"] = "*/*",
  }
  for n = 0, 9999 do
    local h = {}
    for k, v in pairs(base) do h[k] = v end
    if hosts > 0 then
      h["Host"] = string.format("svc%03d.example.com", math.floor(n / 100) % hosts)
    end
    local kind = n % 100
    if first_visits then
      -- no user ID, no override, no cookie
    elseif kind < 3 then
      h["x-canary"] = "canary"
    elseif kind >= 6 then
      h["x-user-id"] = user_id(n)
    end
    pool[#pool + 1] = wrk.format("GET", "/", h)
  end
end

function request()
  next_index = next_index % #pool + 1
  return pool[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
