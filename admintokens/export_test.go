package admintokens

// NegativeCacheSize is how many unknown tokens s remembers, for tests of its bound.
func NegativeCacheSize(s *Service) int { return s.unknown.Size() }

// WaitForWrites waits for the background last-used writes in flight.
func WaitForWrites(s *Service) { s.lastUsed.Wait() }
