package spendcounters

// Entered is how many Adds have begun, for tests that race one against a
// rebuild.
func (c *Counters) Entered() int64 { return c.entered.Load() }
