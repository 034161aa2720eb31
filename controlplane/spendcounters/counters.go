// Package spendcounters keeps the runbook's live spend counters in Redis:
// `redis-cli GET dash:spend:daily:total` and `KEYS dash:spend:daily:*` go on
// working for the dashboards and scripts written against them, fed by the
// spend ledger instead of by hand.
//
// The ledger in the store is the truth; Redis is a cache of today's sums.
// Adds are queued and written in the background, so recording spend never
// waits on Redis.
// The control plane stays correct with Redis down, flushed or wiped: every
// write here is best effort, and the counters are rebuilt from the store on
// start, at the day's rollover, when Redis comes back after an outage and
// when a flush is noticed (a marker key that vanished).
//
// # Keys and units
//
// Each counter has two keys, written together by one Lua script so they
// never disagree:
//
//	<prefix>:<name>          dollars, a decimal string ("12.345678"), so the
//	                         runbook's GET still reads as money;
//	<prefix>:<name>:micros   integer micro-dollars, the exact value (INCRBY).
//
// Names are "total", the agent itself (the runbook's
// dash:spend:daily:<agent>), "tier:<tier>" and "model:<model>". No name
// can write into another's counter: an agent named "total", or any agent
// name holding ':' (which could read as "tier:x", "model:x", a dated copy
// or a :micros key), is counted under "agent:<name>" with ':' and '%'
// written as %3A and %25; a model name that would read as a dated copy or
// a :micros key, or holds '%', is counted under "model:" and the same
// escaping. Ordinary names (forge, qwen2.5:7b) keep their plain keys. The keys
// without a date hold today in the control plane's time zone; every
// counter also has dated copies (<prefix>:<name>:<YYYY-MM-DD> and
// ...:<YYYY-MM-DD>:micros) so yesterday stays readable after the rollover.
// Every key expires two days after its last write. The dollar strings are
// formatted from the integer inside Redis, so no float ever touches a sum.
package spendcounters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Entry is one recorded spend event, as far as the counters care.
type Entry struct {
	Agent, Tier, Model, Provider string
	CostMicros                   int64
}

// DayTotals is one day's spend from the store, in micro-dollars: what a
// rebuild writes.
type DayTotals struct {
	Total   int64
	ByAgent map[string]int64
	ByTier  map[string]int64
	ByModel map[string]int64
}

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Config configures the counters.
type Config struct {
	// Client is the Redis connection; or URL (redis://host:port/db), from
	// which New makes one. One of them is required.
	Client *redis.Client
	URL    string
	// Prefix starts every key (default "dash:spend:daily", the runbook's).
	Prefix string
	// TTL is how long a key lives after its last write (default 48h).
	TTL time.Duration
	// AddTimeout bounds one flush of queued adds (default 250ms).
	AddTimeout time.Duration
	// FlushInterval is the longest an add waits in the queue (default
	// 50ms); adds arriving together are written together.
	FlushInterval time.Duration
	// CheckInterval is how often Run looks for a rollover, an outage's end
	// or a flush (default 5s).
	CheckInterval time.Duration
	// ResyncInterval is how often Run rebuilds anyway (default 10m;
	// negative: never), which bounds any drift from an Add racing a
	// rebuild.
	ResyncInterval time.Duration
	Logger         *slog.Logger
	Clock          Clock
	// Location is the time zone of a "day" when Today is unset (default
	// UTC).
	Location *time.Location
	// Today returns the current day, YYYY-MM-DD in the configured zone;
	// default: Clock's now in Location.
	Today func() string
	// Totals reads a day's spend from the store. Required.
	Totals func(ctx context.Context, day string) (DayTotals, error)
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "dash:spend:daily"
	}
	if c.TTL <= 0 {
		c.TTL = 48 * time.Hour
	}
	if c.AddTimeout <= 0 {
		c.AddTimeout = 250 * time.Millisecond
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 50 * time.Millisecond
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 5 * time.Second
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.Today == nil {
		clock, loc := c.Clock, c.Location
		c.Today = func() string { return clock.Now().In(loc).Format(time.DateOnly) }
	}
	return c
}

// ErrUnavailable is Add's answer while Redis is known to be down: the
// counters are rebuilt once it is back, so the add is not retried.
var ErrUnavailable = errors.New("spendcounters: redis unavailable; counters will be rebuilt when it is back")

// Counters writes the live counters. Its methods are safe for concurrent
// use.
type Counters struct {
	cfg    Config
	rdb    *redis.Client
	ownRDB bool
	log    *slog.Logger

	// mu guards the state below; a rebuild holds it for writing, the
	// flusher for reading, so no add lands between a rebuild's read of
	// the store and its write.
	mu sync.RWMutex
	// liveDay is the day the undated keys hold; empty until the first
	// rebuild.
	liveDay string
	// dirty says the counters may be wrong (an Add failed, Redis was
	// down) and the next check must rebuild. Atomic: Adds set it under
	// the read lock.
	dirty atomic.Bool
	// down says Redis failed last time: Add answers at once until a
	// check finds it back.
	down       atomic.Bool
	lastResync time.Time
	// entered numbers Adds as they are queued (after the ledger's
	// commit); cut[day] is the number a rebuild of day read before it
	// asked the store. A queued add numbered at or below it was committed
	// before the store was read, so its spend is in the rebuilt sums and
	// the flusher must not write it again.
	entered atomic.Int64
	cut     map[string]int64
	// queue holds the adds the flusher has not written yet.
	qmu   sync.Mutex
	queue []queued
	wake  chan struct{}
	// raced says Adds began while the last rebuild read the store: some
	// of them may be in its sums and counted again, so the next check
	// rebuilds once more.
	raced atomic.Bool
}

var dayPattern = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)

// New checks cfg and returns the counters; it does not touch Redis.
func New(cfg Config) (*Counters, error) {
	cfg = cfg.WithDefaults()
	if cfg.Totals == nil {
		return nil, errors.New("spendcounters: Config.Totals is required")
	}
	if strings.ContainsAny(cfg.Prefix, "*?[] ") {
		return nil, fmt.Errorf("spendcounters: prefix %q: no glob characters or spaces", cfg.Prefix)
	}
	c := &Counters{cfg: cfg, log: cfg.Logger, rdb: cfg.Client, cut: map[string]int64{}, wake: make(chan struct{}, 1)}
	c.dirty.Store(true)
	if c.rdb == nil {
		if cfg.URL == "" {
			return nil, errors.New("spendcounters: Config.Client or Config.URL is required")
		}
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("spendcounters: redis url: %w", err)
		}
		// Short dial and I/O timeouts: a counter is worth less than the
		// call that would wait on it.
		opt.DialTimeout = 2 * time.Second
		opt.ReadTimeout = time.Second
		opt.WriteTimeout = time.Second
		opt.MaxRetries = 1
		c.rdb, c.ownRDB = redis.NewClient(opt), true
	}
	return c, nil
}

// Close closes the Redis client if New made it.
func (c *Counters) Close() error {
	if c.ownRDB {
		return c.rdb.Close()
	}
	return nil
}

// markerKey holds when and for which day the counters were last rebuilt.
// '#' cannot appear in an agent name, so it never collides with a counter;
// once it is gone, Redis was flushed (or the key evicted) and Run rebuilds.
func (c *Counters) markerKey() string { return c.cfg.Prefix + ":#rebuilt" }

// addScript adds to counter pairs: KEYS are (micros, dollars) pairs,
// ARGV[1] the ttl in seconds, then one delta per pair. The dollars key is
// set from the integer, so both always agree.
var addScript = redis.NewScript(`
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local v = redis.call('INCRBY', KEYS[i], ARGV[(i + 1) / 2 + 1])
  redis.call('EXPIRE', KEYS[i], ttl)
  local a, sign = math.abs(v), ''
  if v < 0 then sign = '-' end
  redis.call('SET', KEYS[i + 1], string.format('%s%d.%06d', sign, math.floor(a / 1000000), a % 1000000), 'EX', ttl)
end
return #KEYS / 2
`)

// names are the counters an entry counts in.
func names(e Entry) []string {
	n := []string{"total"}
	if e.Agent != "" {
		n = append(n, AgentCounter(e.Agent))
	}
	if e.Tier != "" {
		n = append(n, "tier:"+e.Tier)
	}
	if e.Model != "" {
		n = append(n, ModelCounter(e.Model))
	}
	return n
}

// counterEscaper writes the characters that could make one counter's key
// read as another's. '%' is escaped too, so an escaped name never equals
// an ordinary one.
var counterEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// AgentCounter is the counter name of agent: the name itself (the
// runbook's dash:spend:daily:<agent>) unless it would collide with the
// total or hold a ':', then "agent:" and the name escaped.
func AgentCounter(agent string) string {
	if agent == "total" || strings.ContainsAny(agent, ":%") {
		return "agent:" + counterEscaper.Replace(agent)
	}
	return agent
}

// ModelCounter is the counter name of model: "model:<model>", escaped
// when the name would read as a dated copy or a :micros key of another
// model's counter (or holds '%').
func ModelCounter(model string) string {
	i := strings.LastIndexByte(model, ':')
	if strings.Contains(model, "%") || (i >= 0 && (model[i+1:] == "micros" || dayPattern.MatchString(model[i+1:]))) {
		return "model:" + counterEscaper.Replace(model)
	}
	return "model:" + model
}

// Add queues entries recorded for day and returns at once: the ledger's
// hot path never waits on Redis. Run's flusher (or Flush) writes the
// queue in one script call per day, coalescing the adds of many reports.
// While Redis is known to be down Add answers ErrUnavailable and drops
// the entries: Run rebuilds the counters from the ledger once Redis
// answers again.
func (c *Counters) Add(ctx context.Context, day string, entries []Entry) error {
	if !dayPattern.MatchString(day) {
		return fmt.Errorf("spendcounters: day %q: want YYYY-MM-DD", day)
	}
	deltas := map[string]int64{}
	for _, e := range entries {
		if e.CostMicros == 0 {
			continue
		}
		for _, n := range names(e) {
			deltas[n] += e.CostMicros
		}
	}
	if len(deltas) == 0 {
		return nil
	}
	// Numbered after the ledger's commit: a rebuild that reads the ledger
	// after this point has the spend (see cut).
	seq := c.entered.Add(1)
	if c.down.Load() {
		return ErrUnavailable
	}
	c.qmu.Lock()
	if len(c.queue) >= maxQueued {
		c.qmu.Unlock()
		// Redis cannot keep up: drop, and let a rebuild catch up.
		c.dirty.Store(true)
		return errors.New("spendcounters: queue full; counters will be rebuilt")
	}
	c.queue = append(c.queue, queued{seq: seq, day: day, deltas: deltas})
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// queued is one Add waiting for the flusher.
type queued struct {
	seq    int64
	day    string
	deltas map[string]int64
}

// maxQueued bounds the adds waiting for Redis.
const maxQueued = 100_000

// Flush writes the queued adds: one script call per day, within
// AddTimeout. Adds a rebuild has already counted are skipped. A failure
// drops them and marks Redis down; Run rebuilds once it answers.
func (c *Counters) Flush(ctx context.Context) error {
	c.qmu.Lock()
	q := c.queue
	c.queue = nil
	c.qmu.Unlock()
	if len(q) == 0 {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	byDay := map[string]map[string]int64{}
	for _, it := range q {
		if it.seq <= c.cut[it.day] {
			continue // a rebuild read the ledger after it: already counted
		}
		m := byDay[it.day]
		if m == nil {
			m = map[string]int64{}
			byDay[it.day] = m
		}
		for n, d := range it.deltas {
			m[n] += d
		}
	}
	if c.down.Load() {
		return ErrUnavailable
	}
	for _, day := range slices.Sorted(maps.Keys(byDay)) {
		deltas := byDay[day]
		live := day == c.liveDay
		keys := make([]string, 0, 4*len(deltas))
		args := make([]any, 1, 1+2*len(deltas))
		args[0] = int64(c.cfg.TTL / time.Second)
		for _, n := range slices.Sorted(maps.Keys(deltas)) {
			k := c.key(n, day)
			keys = append(keys, k+":micros", k)
			args = append(args, deltas[n])
			if live {
				k := c.key(n, "")
				keys = append(keys, k+":micros", k)
				args = append(args, deltas[n])
			}
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.AddTimeout)
		err := addScript.Run(actx, c.rdb, keys, args...).Err()
		cancel()
		if err != nil {
			c.setDown(true)
			return fmt.Errorf("spendcounters: add: %w", err)
		}
		if !live && day == c.cfg.Today() {
			// The day rolled over and the undated keys still hold
			// yesterday: the next check rebuilds them.
			c.dirty.Store(true)
		}
	}
	return nil
}

// key is the counter's key, dated when day is set.
func (c *Counters) key(name, day string) string {
	if day == "" {
		return c.cfg.Prefix + ":" + name
	}
	return c.cfg.Prefix + ":" + name + ":" + day
}

// Rebuild replaces day's counters with the store's totals: the dated
// copies, and the undated keys when day is today (then the undated keys
// of other days' counters that saw no spend today are deleted).
func (c *Counters) Rebuild(ctx context.Context, day string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, rebuildTimeout)
	defer cancel()
	return c.rebuildLocked(ctx, day, day == c.cfg.Today())
}

func (c *Counters) rebuildLocked(ctx context.Context, day string, live bool) error {
	if !dayPattern.MatchString(day) {
		return fmt.Errorf("spendcounters: day %q: want YYYY-MM-DD", day)
	}
	before := c.entered.Load()
	t, err := c.cfg.Totals(ctx, day)
	if err != nil {
		return fmt.Errorf("spendcounters: rebuild %s: read totals: %w", day, err)
	}
	want := map[string]int64{"total": t.Total}
	for k, v := range t.ByAgent {
		want[AgentCounter(k)] = v
	}
	for k, v := range t.ByTier {
		want["tier:"+k] = v
	}
	for k, v := range t.ByModel {
		want[ModelCounter(k)] = v
	}
	// Find the keys this rebuild owns, so counters without spend go.
	var stale []string
	iter := c.rdb.Scan(ctx, 0, c.cfg.Prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		name, kday, ok := c.parseKey(k)
		if !ok {
			continue
		}
		if kday == day || (live && kday == "") {
			if _, keep := want[name]; !keep {
				stale = append(stale, k)
			}
		}
	}
	if err := iter.Err(); err != nil {
		c.setDown(true)
		return fmt.Errorf("spendcounters: rebuild %s: scan: %w", day, err)
	}
	_, err = c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if len(stale) > 0 {
			p.Del(ctx, stale...)
		}
		for n, v := range want {
			for _, d := range []string{day, ""} {
				if d == "" && !live {
					continue
				}
				k := c.key(n, d)
				p.Set(ctx, k+":micros", v, c.cfg.TTL)
				p.Set(ctx, k, FormatDollars(v), c.cfg.TTL)
			}
		}
		if live {
			p.Set(ctx, c.markerKey(), day+" "+c.cfg.Clock.Now().UTC().Format(time.RFC3339), c.cfg.TTL)
		}
		return nil
	})
	if err != nil {
		c.setDown(true)
		return fmt.Errorf("spendcounters: rebuild %s: %w", day, err)
	}
	if live {
		c.liveDay = day
	}
	c.cut[day] = before
	if c.entered.Load() != before {
		c.raced.Store(true)
	}
	for d := range c.cut {
		if d < previousDay(previousDay(day)) {
			delete(c.cut, d)
		}
	}
	return nil
}

// setDown records Redis failing (or answering again); a failure also
// means the counters missed writes.
func (c *Counters) setDown(down bool) {
	if down {
		c.dirty.Store(true)
	}
	c.down.Store(down)
}

// parseKey splits a key under the prefix into its counter name and day
// ("" for the undated keys); the marker and foreign keys are not ok.
func (c *Counters) parseKey(k string) (name, day string, ok bool) {
	rest, found := strings.CutPrefix(k, c.cfg.Prefix+":")
	if !found || k == c.markerKey() {
		return "", "", false
	}
	rest = strings.TrimSuffix(rest, ":micros")
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && dayPattern.MatchString(rest[i+1:]) {
		return rest[:i], rest[i+1:], rest[:i] != ""
	}
	return rest, "", rest != ""
}

// Check does one round of Run's watch: it finds Redis back after an
// outage, a flush (the marker gone), a rollover or a due resync, and
// rebuilds today and yesterday when any of them happened.
func (c *Counters) Check(ctx context.Context) error {
	// Ask Redis before taking the lock: Adds must not wait on a slow
	// answer.
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	n, err := c.rdb.Exists(pctx, c.markerKey()).Result()
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	today := c.cfg.Today()
	reason := ""
	dirty, down := c.dirty.Load(), c.down.Load()
	switch {
	case err != nil:
		if !down {
			c.log.WarnContext(ctx, "redis unreachable: live spend counters paused (the ledger is unaffected)", "err", err)
		}
		c.setDown(true)
		return fmt.Errorf("spendcounters: %w", err)
	case down:
		reason = "redis is back"
	case c.liveDay == "":
		reason = "start"
	case n == 0:
		reason = "marker key gone (flush or eviction)"
	case today != c.liveDay:
		reason = "day rollover"
	case dirty:
		reason = "a write failed"
	case c.raced.Load():
		reason = "reports raced the last rebuild"
	case c.cfg.ResyncInterval > 0 && c.cfg.Clock.Now().Sub(c.lastResync) >= c.cfg.ResyncInterval:
		reason = "periodic resync"
	default:
		return nil
	}
	c.dirty.Store(false)
	c.down.Store(false)
	c.raced.Store(false)
	// Bound the time Adds skip for this rebuild.
	ctx, cancel = context.WithTimeout(ctx, rebuildTimeout)
	defer cancel()
	if err := c.rebuildLocked(ctx, today, true); err != nil {
		c.dirty.Store(true)
		return err
	}
	if err := c.rebuildLocked(ctx, previousDay(today), false); err != nil {
		c.dirty.Store(true)
		return err
	}
	c.lastResync = c.cfg.Clock.Now()
	level := slog.LevelInfo
	if reason == "periodic resync" || reason == "reports raced the last rebuild" {
		level = slog.LevelDebug
	}
	c.log.Log(ctx, level, "live spend counters rebuilt from the ledger", "reason", reason, "day", today)
	return nil
}

// rebuildTimeout bounds one check's rebuilds.
const rebuildTimeout = 10 * time.Second

func previousDay(day string) string {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return day
	}
	return t.AddDate(0, 0, -1).Format(time.DateOnly)
}

// Run rebuilds the counters at once, then checks every CheckInterval
// until ctx ends; it returns nil then. Redis being down is logged, never
// returned: the control plane runs on without it.
func (c *Counters) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.flushLoop(ctx) })
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	for {
		if err := c.Check(ctx); err != nil && ctx.Err() == nil {
			c.log.DebugContext(ctx, "live spend counters check failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// flushLoop writes queued adds as they come, at most FlushInterval late:
// woken by an add, it waits out the interval so the adds of concurrent
// reports go in one script call.
func (c *Counters) flushLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			_ = c.Flush(context.WithoutCancel(ctx))
			return
		case <-c.wake:
		}
		select {
		case <-ctx.Done():
		case <-time.After(c.cfg.FlushInterval):
		}
		if err := c.Flush(ctx); err != nil && ctx.Err() == nil {
			c.log.DebugContext(ctx, "live spend counters: flush failed", "err", err)
		}
	}
}

// FormatDollars renders micro-dollars as the dollar string the keys hold:
// "12.345678".
func FormatDollars(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	return sign + strconv.FormatInt(micros/1_000_000, 10) + "." + fmt.Sprintf("%06d", micros%1_000_000)
}
