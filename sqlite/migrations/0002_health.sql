-- 0002: a table for the readiness probe's test writes (see DB.Ping). It is empty between probes.

CREATE TABLE health (
	at  INTEGER NOT NULL,
	pad BLOB    NOT NULL
);
