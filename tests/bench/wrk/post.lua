-- wrk script: every request a POST /v1/updates of ROWSTREAM_BENCH_UPDATES updates (default
-- 100), each of a new row (a random subscription of one of 100 apps); the key comes from the
-- environment (ROWSTREAM_BENCH_KEY).
local key = os.getenv("ROWSTREAM_BENCH_KEY") or "bench-key"
local size = tonumber(os.getenv("ROWSTREAM_BENCH_UPDATES") or "100")
local apps = {}
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
  for i = 1, 100 do apps[i] = uuid() end
end

request = function()
  local items = {}
  for i = 1, size do
    n = n + 1
    items[i] = '{"app_id": "' .. apps[math.random(1, 100)] .. '", "subscription_id": "' ..
      uuid() .. '", "properties": {"n": ' .. n .. ', "plan": "pro", "seats": 3}}'
  end
  return wrk.format("POST", "/v1/updates",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"},
    "[" .. table.concat(items, ",") .. "]")
end
