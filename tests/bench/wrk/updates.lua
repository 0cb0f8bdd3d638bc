-- wrk script: every update of a new row. Without ROWSTREAM_BENCH_POST, every request is a PATCH
-- (a random app and subscription); with ROWSTREAM_BENCH_POST=N, a POST /v1/updates of N updates
-- (each a random subscription of one of 100 apps). The key: ROWSTREAM_BENCH_KEY. Each run's rows
-- are new: the runner gives every run its own seed (ROWSTREAM_BENCH_SEED). With
-- ROWSTREAM_BENCH_DELAY_MS, each connection waits that long before each request: a steady rate of
-- about connections x 1000 / delay requests/s (wrk has no rate option).
local key = os.getenv("ROWSTREAM_BENCH_KEY") or "bench-key"
local post = tonumber(os.getenv("ROWSTREAM_BENCH_POST") or "0")
local pause = tonumber(os.getenv("ROWSTREAM_BENCH_DELAY_MS") or "0")
local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
local apps = {}
local n = 0

math.randomseed(tonumber(os.getenv("ROWSTREAM_BENCH_SEED") or os.time()))

local function uuid()
  return string.format("%08x-%04x-4%03x-8%03x-%012x", math.random(0, 0xffffffff),
    math.random(0, 0xffff), math.random(0, 0xfff), math.random(0, 0xfff),
    math.random(0, 0xffffffffffff))
end

local function properties()
  n = n + 1
  return '{"n": ' .. n .. ', "plan": "pro", "seats": 3}'
end

function setup(thread)
  thread:set("seed", math.random(1, 2 ^ 31))
end

function init(args)
  math.randomseed(seed or os.time())
  for i = 1, 100 do apps[i] = uuid() end
end

if pause > 0 then
  delay = function()
    return pause
  end
end

request = function()
  if post == 0 then
    local path = "/v1/apps/" .. uuid() .. "/subscriptions/" .. uuid()
    return wrk.format("PATCH", path, headers, '{"properties": ' .. properties() .. '}')
  end
  local items = {}
  for i = 1, post do
    items[i] = '{"app_id": "' .. apps[math.random(1, 100)] .. '", "subscription_id": "' ..
      uuid() .. '", "properties": ' .. properties() .. '}'
  end
  return wrk.format("POST", "/v1/updates", headers, "[" .. table.concat(items, ",") .. "]")
end
