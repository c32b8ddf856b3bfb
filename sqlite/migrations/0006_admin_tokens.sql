-- 0006: admin tokens, which authenticate callers of the config API (trackapi.AdminToken).
--
-- Like source keys, a token is kept only as its SHA-256 hash (token_hash, 32 bytes), so that a
-- copy of the database leaks no token; prefix is its first 12 characters in clear ("tka_" and
-- 8 random ones), to tell tokens apart in listings and logs. token_hash is UNIQUE: its index is
-- the lookup of a token presented by a caller.
--
-- Times are epoch milliseconds; expires_at, revoked_at and last_used_at are NULL for never.
-- A revoked token keeps its row, so that listings and logs can still say whose it was.
--
-- AUTOINCREMENT: a token's id appears in logs and audit trails, so an id must name one token
-- for ever, also if rows are ever deleted. Tokens are made by hand, rarely, so the extra write
-- of sqlite_sequence costs nothing that matters.
CREATE TABLE admin_tokens (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	name         TEXT    NOT NULL,
	scope        TEXT    NOT NULL CHECK (scope IN ('read', 'write')),
	prefix       TEXT    NOT NULL,
	token_hash   BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER,
	revoked_at   INTEGER,
	last_used_at INTEGER
);
