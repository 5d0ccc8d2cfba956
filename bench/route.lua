-- Configuration (c) of `make bench`: canary-router's common path as an Envoy
-- Lua filter. Override header, else murmur3 x86 32 (seed 0) of "salt:user" against
-- the canary's weight in 10000 buckets, else a weighted random draw; then the
-- route header. No cookies, no user list, no metrics, no validation.
-- SALT and CANARY_BUCKETS are substituted by bench/bench.py.

local bit = require("bit")
local band, bxor, lshift, rshift, rol, tobit = bit.band, bit.bxor, bit.lshift, bit.rshift, bit.rol, bit.tobit
local byte = string.byte

-- Low 32 bits of a * b, for a 32-bit a and a non-negative constant b < 2^32,
-- exactly (every partial product stays below 2^53).
local function mul32(a, b)
  local alo = band(a, 0xffff)
  local ahi = rshift(a, 16)
  return tobit(alo * b + lshift(ahi * band(b, 0xffff), 16))
end

local function murmur3_32(key)
  local len = #key
  local h = 0
  local nblocks = len - len % 4
  for i = 1, nblocks, 4 do
    local b1, b2, b3, b4 = byte(key, i, i + 3)
    local k = bit.bor(b1, lshift(b2, 8), lshift(b3, 16), lshift(b4, 24))
    k = mul32(rol(mul32(k, 0xcc9e2d51), 15), 0x1b873593)
    h = rol(bxor(h, k), 13)
    h = tobit(mul32(h, 5) + 0xe6546b64)
  end
  local rem = len % 4
  if rem > 0 then
    local k = 0
    if rem >= 3 then k = bxor(k, lshift(byte(key, nblocks + 3), 16)) end
    if rem >= 2 then k = bxor(k, lshift(byte(key, nblocks + 2), 8)) end
    k = bxor(k, byte(key, nblocks + 1))
    k = mul32(rol(mul32(k, 0xcc9e2d51), 15), 0x1b873593)
    h = bxor(h, k)
  end
  h = bxor(h, len)
  h = bxor(h, rshift(h, 16))
  h = mul32(h, 0x85ebca6b)
  h = bxor(h, rshift(h, 13))
  h = mul32(h, 0xc2b2ae35)
  h = bxor(h, rshift(h, 16))
  if h < 0 then h = h + 4294967296 end
  return h
end

local PREFIX = "SALT:"
local CANARY_BUCKETS = CANARY_BUCKETS_VALUE

function envoy_on_request(handle)
  local headers = handle:headers()
  local version = headers:get("x-canary")
  if version ~= "canary" and version ~= "stable" then
    local user = headers:get("x-user-id")
    local bucket
    if user ~= nil and #user > 0 then
      bucket = murmur3_32(PREFIX .. user) % 10000 + 1
    else
      bucket = math.random(10000)
    end
    if bucket <= CANARY_BUCKETS then version = "canary" else version = "stable" end
  end
  headers:replace("x-canary-version", version)
end
