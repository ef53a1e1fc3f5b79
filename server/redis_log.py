"""The Redis job log shared by `RedisQueue` (the server's side) and `RedisWorker` (the workers'):
key names, the Lua scripts that change a job's state atomically, and job (de)coding.

Every value is JSON or a plain string; nothing read from Redis is ever unpickled. Keys live under one
prefix on one Redis (not Cluster: the scripts build key names from the prefix). The design is in
docs/ARCHITECTURE.md ("Redis Streams backend").
"""
from __future__ import annotations

import json

from .store import Job

GROUP = "workers"
DEFAULT_PREFIX = "vidgraph:"
JOB_FIELDS = ("prompt_id", "number", "status", "attempts", "max_attempts", "interruptions",
              "client_id", "prompt_json", "extra_data_json", "outputs_to_execute_json",
              "partial_targets_json", "model_set", "pool", "entry", "worker", "enqueued_at",
              "started_at", "finished_at", "outputs_json", "status_json", "meta_json", "cancel")


class Keys:
    def __init__(self, prefix: str = DEFAULT_PREFIX):
        self.prefix = prefix
        self.pending = prefix + "pending"          # zset: run order of every pending job
        self.running = prefix + "running"          # set
        self.history = prefix + "history"          # zset by finish order
        self.pools = prefix + "pools"              # set of pool names
        self.paused = prefix + "paused"
        self.dead = prefix + "dead"                # stream: the dead-letter list
        self.workers = prefix + "workers"          # hash: worker id -> JSON
        self.events = prefix + "events"            # channel: worker -> servers
        self.control = prefix + "control"          # channel: servers -> workers

    def job(self, prompt_id: str) -> str:
        return f"{self.prefix}job:{prompt_id}"

    def pool(self, name: str) -> str:
        return f"{self.prefix}pool:{name}"

    def stream(self, name: str) -> str:
        return f"{self.prefix}q:{name}"

    def warm(self, model_set: str) -> str:
        return f"{self.prefix}warm:{model_set}"

    def alive(self, worker_id: str) -> str:
        return f"{self.prefix}alive:{worker_id}"


def client_options() -> dict:
    """Connection options for both clients: a connection Redis dropped (a restart) is re-made
    and the command retried, instead of failing the first command after it."""
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry

    return {"socket_connect_timeout": 5, "health_check_interval": 30,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            "retry_on_error": [ConnectionError, TimeoutError]}


def job_from_hash(h: dict) -> Job:
    partial = h.get("partial_targets_json") or ""
    return Job(prompt_id=h["prompt_id"], number=_number(h["number"]),
               prompt=json.loads(h["prompt_json"]), extra_data=json.loads(h["extra_data_json"]),
               outputs_to_execute=json.loads(h["outputs_to_execute_json"]),
               partial_targets=json.loads(partial) if partial else None,
               client_id=h.get("client_id") or None, attempts=int(h.get("attempts") or 0),
               interruptions=int(h.get("interruptions") or 0))


def history_entry(h: dict) -> dict:
    job = job_from_hash(h)
    return {"prompt": job.queue_item(), "outputs": json.loads(h.get("outputs_json") or "{}"),
            "status": json.loads(h.get("status_json") or "{}"),
            "meta": json.loads(h.get("meta_json") or "{}")}


def _number(value) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else number


# -- Lua: every state change of a job is one script, so no reader sees half of it ------------------
# ARGV[1] is always the key prefix.

_COMMON = """
local p = ARGV[1]
local function stream(pool) return p .. 'q:' .. pool end
local function ensure_group(pool)
  pcall(redis.call, 'XGROUP', 'CREATE', stream(pool), 'workers', '0', 'MKSTREAM')
end
local function owner_of(pool, entry)
  local rows = redis.call('XPENDING', stream(pool), 'workers', entry, entry, 1)
  if #rows == 0 then return false end
  return rows[1][2]
end
local function drop_token(pool, entry)
  redis.call('XACK', stream(pool), 'workers', entry)
  redis.call('XDEL', stream(pool), entry)
  redis.call('HDEL', p .. 'bound:' .. pool, entry)
end
local function unqueue(id)
  local jk = p .. 'job:' .. id
  local pool = redis.call('HGET', jk, 'pool')
  redis.call('ZREM', p .. 'pending', id)
  if pool then redis.call('ZREM', p .. 'pool:' .. pool, id) end
  redis.call('DEL', jk)
end
local function finish(id, pool, entry, status, outputs, status_obj, meta, now, max_history)
  local jk = p .. 'job:' .. id
  local seq = redis.call('INCR', p .. 'finish_counter')
  redis.call('HSET', jk, 'status', status, 'finished_at', now, 'finish_seq', seq,
             'outputs_json', outputs, 'status_json', status_obj, 'meta_json', meta)
  redis.call('SREM', p .. 'running', id)
  redis.call('ZADD', p .. 'history', seq, id)
  drop_token(pool, entry)
  local extra = redis.call('ZCARD', p .. 'history') - tonumber(max_history)
  if extra > 0 then
    for _, old in ipairs(redis.call('ZRANGE', p .. 'history', 0, extra - 1)) do
      redis.call('DEL', p .. 'job:' .. old)
    end
    redis.call('ZREMRANGEBYRANK', p .. 'history', 0, extra - 1)
  end
end
"""

# ARGV: prefix, prompt_id, body_sha256, number ('' = next), front ('1'/'0'), max_queue (0 = none),
# model_set, now, max_attempts, client_id, prompt_json, extra_data_json, outputs_json, partial_json
SUBMIT = _COMMON + """
local id = ARGV[2]
local jk = p .. 'job:' .. id
if redis.call('EXISTS', jk) == 1 then
  if redis.call('HGET', jk, 'body_sha256') ~= ARGV[3] then return {'conflict', ''} end
  return {'exists', redis.call('HGET', jk, 'number')}
end
local pending = redis.call('ZCARD', p .. 'pending')
if tonumber(ARGV[6]) > 0 and pending >= tonumber(ARGV[6]) then return {'full', tostring(pending)} end
local counter = redis.call('INCR', p .. 'counter')
local number = ARGV[4]
if number == '' then
  if ARGV[5] == '1' then number = tostring(-counter) else number = tostring(counter) end
end
local pool = 'any'
if ARGV[7] ~= '' and redis.call('EXISTS', p .. 'warm:' .. ARGV[7]) == 1 then pool = 'm:' .. ARGV[7] end
redis.call('HSET', jk, 'prompt_id', id, 'body_sha256', ARGV[3], 'number', number, 'status', 'queued',
           'attempts', 0, 'max_attempts', ARGV[9], 'interruptions', 0, 'client_id', ARGV[10],
           'prompt_json', ARGV[11], 'extra_data_json', ARGV[12], 'outputs_to_execute_json', ARGV[13],
           'partial_targets_json', ARGV[14], 'model_set', ARGV[7], 'pool', pool, 'enqueued_at', ARGV[8])
redis.call('ZADD', p .. 'pending', number, id)
redis.call('ZADD', p .. 'pool:' .. pool, number, id)
if redis.call('SADD', p .. 'pools', pool) == 1 then ensure_group(pool) end
redis.call('XADD', stream(pool), '*', 'pool', pool)
return {'created', number}
"""

# ARGV: prefix, pool, entry, worker, now. A token read from a pool's stream takes the front job.
BIND = _COMMON + """
local pool, entry, worker = ARGV[2], ARGV[3], ARGV[4]
local already = redis.call('HGET', p .. 'bound:' .. pool, entry)
if already then return {'bound', already} end  -- a retry after a lost reply: the same job
if redis.call('GET', p .. 'paused') == '1' then
  drop_token(pool, entry)
  redis.call('XADD', stream(pool), '*', 'pool', pool)  -- the token waits for the resume
  return {'paused'}
end
local popped = redis.call('ZPOPMIN', p .. 'pool:' .. pool)
if #popped == 0 then drop_token(pool, entry) return {'empty'} end
local id = popped[1]
local jk = p .. 'job:' .. id
redis.call('ZREM', p .. 'pending', id)
redis.call('SADD', p .. 'running', id)
redis.call('HSET', jk, 'status', 'running', 'worker', worker, 'entry', entry, 'started_at', ARGV[5])
redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('HSET', p .. 'bound:' .. pool, entry, id)
return {'bound', id}
"""

# ARGV: prefix, pool, entry, worker. A reclaimed token: its job runs again on this worker.
REBIND = _COMMON + """
local pool, entry, worker = ARGV[2], ARGV[3], ARGV[4]
local id = redis.call('HGET', p .. 'bound:' .. pool, entry)
if not id then return {'unbound'} end
local jk = p .. 'job:' .. id
if redis.call('HGET', jk, 'status') ~= 'running' then drop_token(pool, entry) return {'gone'} end
redis.call('HSET', jk, 'worker', worker)
redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('HINCRBY', jk, 'interruptions', 1)
return {'bound', id}
"""

# ARGV: prefix, prompt_id, pool, entry, worker, status, outputs, status_obj, meta, now, max_history,
# dead-letter reason ('' = none). Only the owner of the job's token finishes it: exactly once.
# Scripts may run twice (the client retries a call whose reply a Redis restart lost): BIND and
# FINISH answer a repeat as they answered the first call.
FINISH = _COMMON + """
local id, pool, entry, worker = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local job = redis.call('HMGET', p .. 'job:' .. id, 'status', 'worker', 'entry', 'finished_at')
if job[4] and job[2] == worker and job[3] == entry then return 'done' end  -- a retried call
if owner_of(pool, entry) ~= worker then return 'lost' end
if job[1] ~= 'running' then
  drop_token(pool, entry)
  return 'gone'
end
finish(id, pool, entry, ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
if ARGV[12] ~= '' then
  redis.call('XADD', p .. 'dead', 'MAXLEN', '~', '10000', '*', 'prompt_id', id, 'reason', ARGV[12],
             'worker', worker, 'at', ARGV[10])
end
return 'done'
"""

# ARGV: prefix, pool, entry, mode. A token this worker will not use: acknowledged, and (unless
# mode is 'drop') a fresh one put at the end of its stream for another worker.
REQUEUE_TOKEN = _COMMON + """
local pool, entry = ARGV[2], ARGV[3]
drop_token(pool, entry)
if ARGV[4] ~= 'drop' then redis.call('XADD', stream(pool), '*', 'pool', pool) end
return 1
"""

# ARGV: prefix, prompt_id, pool, entry, worker. Back to the queue without using up an attempt.
REQUEUE = _COMMON + """
local id, pool, entry, worker = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if owner_of(pool, entry) ~= worker then return 'lost' end
local jk = p .. 'job:' .. id
local number = redis.call('HGET', jk, 'number')
redis.call('HSET', jk, 'status', 'queued', 'worker', '')
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('SREM', p .. 'running', id)
redis.call('ZADD', p .. 'pending', number, id)
redis.call('ZADD', p .. 'pool:' .. pool, number, id)
drop_token(pool, entry)
redis.call('XADD', stream(pool), '*', 'pool', pool)
return 'queued'
"""

# ARGV: prefix, pool, entry, worker. Keep a lease: reset the token's idle time if still ours.
RENEW = _COMMON + """
local pool, entry, worker = ARGV[2], ARGV[3], ARGV[4]
if owner_of(pool, entry) ~= worker then return 0 end
redis.call('XCLAIM', stream(pool), 'workers', worker, 0, entry, 'JUSTID')
return 1
"""

# ARGV: prefix, ids... ('*' alone = every pending job). Returns how many were removed.
DELETE_QUEUED = _COMMON + """
local ids = {}
if ARGV[2] == '*' then ids = redis.call('ZRANGE', p .. 'pending', 0, -1)
else for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end end
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('HGET', p .. 'job:' .. id, 'status') == 'queued' then
    unqueue(id)
    removed = removed + 1
  end
end
return removed
"""

# ARGV: prefix, prompt_id, position. Returns {'moved', position} or {'status', status|''}.
MOVE = _COMMON + """
local id, position = ARGV[2], tonumber(ARGV[3])
local jk = p .. 'job:' .. id
local status = redis.call('HGET', jk, 'status')
if status ~= 'queued' then return {'status', status or ''} end
local others = {}
local rows = redis.call('ZRANGE', p .. 'pending', 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do
  if rows[i] ~= id then others[#others + 1] = tonumber(rows[i + 1]) end
end
if position > #others then position = #others end
local number
if #others == 0 then number = 1
elseif position == 0 then number = others[1] - 1
elseif position == #others then number = others[#others] + 1
else number = (others[position] + others[position + 1]) / 2 end
local text = string.format('%.17g', number)
redis.call('HSET', jk, 'number', text)
redis.call('ZADD', p .. 'pending', text, id)
redis.call('ZADD', p .. 'pool:' .. redis.call('HGET', jk, 'pool'), text, id)
return {'moved', position}
"""

# ARGV: prefix, prompt_id. Pending: removed. Running: marked, the caller tells the workers.
CANCEL = _COMMON + """
local id = ARGV[2]
local jk = p .. 'job:' .. id
local status = redis.call('HGET', jk, 'status')
if status == 'queued' then unqueue(id) return 'pending' end
if status == 'running' then redis.call('HSET', jk, 'cancel', '1') return 'running' end
return status or ''
"""

SCRIPTS = {"submit": SUBMIT, "bind": BIND, "rebind": REBIND, "finish": FINISH, "requeue": REQUEUE,
           "requeue_token": REQUEUE_TOKEN,
           "renew": RENEW, "delete_queued": DELETE_QUEUED, "move": MOVE, "cancel": CANCEL}


def register_scripts(client) -> dict:
    """name -> callable script (`script(args=[...])`) on a sync or asyncio redis client."""
    return {name: client.register_script(source) for name, source in SCRIPTS.items()}


def dumps(value) -> str:
    from vidgraph.engine.jsontext import json_text

    return json_text(value, separators=(",", ":"))
