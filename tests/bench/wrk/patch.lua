-- wrk script: every request a PATCH of a new row (random app and subscription IDs), with the
-- benchmark's body; the key comes from the environment (ROWSTREAM_BENCH_KEY).
local key = os.getenv("ROWSTREAM_BENCH_KEY") or "bench-key"
local n = 0

local function uuid()
  return string.format("%08x-%04x-4%03x-8%03x-%012x", math.random(0, 0xffffffff),
    math.random(0, 0xffff), math.random(0, 0xfff), math.random(0, 0xfff),
    math.random(0, 0xffffffffffff))
end

-- Each run's rows are new: the runner gives every run its own seed (ROWSTREAM_BENCH_SEED).
math.randomseed(tonumber(os.getenv("ROWSTREAM_BENCH_SEED") or os.time()))

function setup(thread)
  thread:set("seed", math.random(1, 2 ^ 31))
end

function init(args)
  math.randomseed(seed or os.time())
end

request = function()
  n = n + 1
  local path = "/v1/apps/" .. uuid() .. "/subscriptions/" .. uuid()
  local body = '{"properties": {"n": ' .. n .. ', "plan": "pro", "seats": 3}}'
  return wrk.format("PATCH", path,
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
