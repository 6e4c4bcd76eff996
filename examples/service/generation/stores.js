// Where generation sessions live between requests. A record is what continues a session
// anywhere: { state: Uint8Array (PerformerLMState.serialize), logits: Float32Array (the
// last step's, to pick the next token), sampler: TokenSamplerState }.
//
// One writer at a time: a request takes a session with a lease (owner token, leaseMs),
// renewed by every save; a save whose lease is gone (expired, taken by another replica) is
// refused, so two replicas never advance one session at once. A replica that dies holds
// its leases until they expire. Records expire ttlMs after their last save.
//
//   acquire(id, owner)      -> record | null (no such session); SessionBusy when leased
//   create(id, owner)       -> lease for a new id
//   save(id, owner, record) -> LeaseLost when the lease is not owner's
//   renew(id, owner)        -> extends the lease without a save; LeaseLost likewise
//   release(id, owner), delete(id) -> 'deleted' | 'missing' | 'busy', close()
'use strict';

class SessionBusy extends Error {
  constructor(id) {
    super(`session ${id} is generating in another request; retry when it ends`);
    this.name = 'SessionBusy';
  }
}

class LeaseLost extends Error {
  constructor(id) {
    super(`session ${id}: this request's lease on it expired or was taken`);
    this.name = 'LeaseLost';
  }
}

const copyRecord = (r) => ({ state: Uint8Array.from(r.state), logits: Float32Array.from(r.logits), sampler: { ...r.sampler } });

/** In this process only (the default): nothing to install, sessions end with the process. */
class MemorySessionStore {
  shared = false;

  constructor({ ttlMs, leaseMs }) {
    this.ttlMs = ttlMs;
    this.leaseMs = leaseMs;
    this.sessions = new Map(); // id -> { record, expires, lease: { owner, expires } | null }
    this.sweeper = setInterval(() => this.sweep(), Math.min(ttlMs, 60000)).unref();
  }

  sweep(now = Date.now()) {
    for (const [id, s] of this.sessions) if (s.expires <= now && !this.leased(s, now)) this.sessions.delete(id);
  }

  leased(s, now = Date.now()) {
    return s.lease !== null && s.lease.expires > now;
  }

  async acquire(id, owner) {
    const s = this.sessions.get(id);
    if (s === undefined || s.record === null || s.expires <= Date.now()) return null;
    if (this.leased(s) && s.lease.owner !== owner) throw new SessionBusy(id);
    s.lease = { owner, expires: Date.now() + this.leaseMs };
    return copyRecord(s.record);
  }

  async create(id, owner) {
    this.sessions.set(id, { record: null, expires: Date.now() + this.ttlMs, lease: { owner, expires: Date.now() + this.leaseMs } });
  }

  async save(id, owner, record) {
    const s = this.sessions.get(id);
    if (s === undefined || !this.leased(s) || s.lease.owner !== owner) throw new LeaseLost(id);
    s.record = copyRecord(record);
    s.expires = Date.now() + this.ttlMs;
    s.lease.expires = Date.now() + this.leaseMs;
  }

  async renew(id, owner) {
    const s = this.sessions.get(id);
    if (s === undefined || !this.leased(s) || s.lease.owner !== owner) throw new LeaseLost(id);
    s.lease.expires = Date.now() + this.leaseMs;
  }

  async release(id, owner) {
    const s = this.sessions.get(id);
    if (s !== undefined && s.lease?.owner === owner) {
      s.lease = null;
      if (s.record === null) this.sessions.delete(id); // never saved: nothing to continue
    }
  }

  async delete(id) {
    const s = this.sessions.get(id);
    if (s === undefined || s.record === null) return 'missing';
    if (this.leased(s)) return 'busy';
    this.sessions.delete(id);
    return 'deleted';
  }

  async close() {
    clearInterval(this.sweeper);
  }
}

// The lease and the record change together in one script, so no replica can save after
// losing its lease, and no one can delete a session while it generates.
const SCRIPTS = {
  acquire: {
    numberOfKeys: 2, // lease, record; ARGV owner, leaseMs
    lua: `local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {-1} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('HGET', KEYS[2], 'state'), redis.call('HGET', KEYS[2], 'logits'), redis.call('HGET', KEYS[2], 'sampler')}`,
  },
  create: {
    numberOfKeys: 2, // lease, record; ARGV owner, leaseMs
    lua: `if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 0 end
return 1`,
  },
  save: {
    numberOfKeys: 2, // lease, record; ARGV owner, state, logits, sampler, ttlMs, leaseMs
    lua: `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'state', ARGV[2], 'logits', ARGV[3], 'sampler', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1`,
  },
  renew: {
    numberOfKeys: 1, // lease; ARGV owner, leaseMs
    lua: `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])`,
  },
  release: {
    numberOfKeys: 1, // lease; ARGV owner
    lua: `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`,
  },
  remove: {
    numberOfKeys: 2, // lease, record
    lua: `if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
return redis.call('DEL', KEYS[2])`,
  },
};

const bytes = (b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice();

/** In Redis: any replica continues any session (`--redis URL`). */
class RedisSessionStore {
  shared = true;

  constructor({ url, ttlMs, leaseMs, prefix = 'performer:' }) {
    const Redis = require('ioredis');
    this.redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
    for (const [name, { numberOfKeys, lua }] of Object.entries(SCRIPTS)) this.redis.defineCommand(name, { numberOfKeys, lua });
    this.ttlMs = ttlMs;
    this.leaseMs = leaseMs;
    this.prefix = prefix;
  }

  async connect() {
    await this.redis.connect();
    await this.redis.ping();
  }

  // One hash slot per session ({id}), so the scripts also run on a Redis Cluster.
  keys(id) {
    return [`${this.prefix}lease:{${id}}`, `${this.prefix}session:{${id}}`];
  }

  async acquire(id, owner) {
    const reply = await this.redis.acquireBuffer(...this.keys(id), owner, this.leaseMs);
    if (reply[0] === -1) throw new SessionBusy(id);
    if (reply[0] === 0) return null;
    const [, state, logits, sampler] = reply;
    const l = bytes(logits);
    return { state: bytes(state), logits: new Float32Array(l.buffer, 0, l.length / 4), sampler: JSON.parse(sampler.toString('utf8')) };
  }

  async create(id, owner) {
    if ((await this.redis.create(...this.keys(id), owner, this.leaseMs)) !== 1) throw new SessionBusy(id);
  }

  async save(id, owner, record) {
    const logits = Buffer.from(record.logits.buffer, record.logits.byteOffset, record.logits.byteLength);
    const ok = await this.redis.save(...this.keys(id), owner, Buffer.from(record.state), logits, JSON.stringify(record.sampler), this.ttlMs, this.leaseMs);
    if (ok !== 1) throw new LeaseLost(id);
  }

  async renew(id, owner) {
    if ((await this.redis.renew(this.keys(id)[0], owner, this.leaseMs)) !== 1) throw new LeaseLost(id);
  }

  async release(id, owner) {
    await this.redis.release(this.keys(id)[0], owner);
  }

  async delete(id) {
    const n = await this.redis.remove(...this.keys(id));
    return n === -1 ? 'busy' : n === 1 ? 'deleted' : 'missing';
  }

  async close() {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

module.exports = { MemorySessionStore, RedisSessionStore, SessionBusy, LeaseLost };
