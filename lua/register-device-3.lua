--[[
  Redeem a one-time pairing code and create the device it pairs, atomically: a code
  pairs exactly one device.

  Input:
    KEYS[1]  pairing code key               {S}:pairing-code:<code>
    KEYS[2]  device hash                    {S}:device:<device>
    KEYS[3]  devices set                    {S}:devices

    ARGV[1]  device id (new)
    ARGV[2]  SHA-256 of the device token (hex)
    ARGV[3]  device name
    ARGV[4]  phone number, "" if not given
    ARGV[5]  now (ms)
    ARGV[6]  segments per minute
    ARGV[7]  segments per day

  Output:
    the owner the code was made for: an account id, or "" for a platform pool device

  Errors:
    PAIRING_CODE_INVALID           unknown, expired or already used
    BAD_REQUEST <reason>           the device id exists already
]]
local rcall = redis.call

local codeKey = KEYS[1]
local deviceKey = KEYS[2]
local devicesKey = KEYS[3]

local owner = rcall("GET", codeKey)
if not owner then
  return redis.error_reply("PAIRING_CODE_INVALID the pairing code is unknown, expired or used")
end
if rcall("EXISTS", deviceKey) == 1 then
  return redis.error_reply("BAD_REQUEST device id taken")
end
rcall("DEL", codeKey)
rcall("HSET", deviceKey, "id", ARGV[1], "account", owner, "token_sha256", ARGV[2],
  "name", ARGV[3], "phone_number", ARGV[4], "created", ARGV[5],
  "per_minute", ARGV[6], "per_day", ARGV[7])
rcall("SADD", devicesKey, ARGV[1])
return owner
