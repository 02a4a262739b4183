"""The Lua scripts of the Redis broker, registered once per client and sent as EVALSHA (pipelined)."""

from __future__ import annotations

from typing import Any

__all__ = ["NOTE_SKIPS", "RAISE_SEEN", "Scripts"]

# Counts frames a realtime group skipped. Each writer numbers its entries; per group we keep the highest
# number delivered. A jump past it counts the gap as skipped; an older number arriving later (another
# replica of the group took it) takes one back. Replicas in other processes agree because Redis keeps it.
# The group's total never goes below zero (a replica may report an older frame before the first jump);
# the script returns the change of that total, so the replicas' sums add up to it.
NOTE_SKIPS = """
local total = tonumber(redis.call('HGET', KEYS[1], '_skipped') or '0')
local skipped = total
for i = 1, #ARGV, 2 do
  local w = ARGV[i]
  local q = tonumber(ARGV[i + 1])
  if q then
    local hi = tonumber(redis.call('HGET', KEYS[1], w))
    if not hi then
      redis.call('HSET', KEYS[1], w, q)
    elseif q > hi then
      skipped = skipped + (q - hi - 1)
      redis.call('HSET', KEYS[1], w, q)
    elseif q < hi and skipped > 0 then
      skipped = skipped - 1
    end
  end
end
redis.call('HSET', KEYS[1], '_skipped', skipped)
redis.call('EXPIRE', KEYS[1], 86400)
return skipped - total
"""

# A group's newest sequence number seen from a writer only ever goes up (for readers that left another path).
RAISE_SEEN = """
local hi = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > hi then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], 86400)
return 0
"""


class Scripts:
    """The scripts registered on one client (`client.register_script`): call them with `client=pipe` to pipeline."""

    def __init__(self, client: Any) -> None:
        self.note_skips: Any = client.register_script(NOTE_SKIPS)
        self.raise_seen: Any = client.register_script(RAISE_SEEN)
