package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/trackapi/trackapi"
)

var _ trackapi.InspectorStore = (*DB)(nil)

// inspectorBatch bounds one delete transaction of DeleteExpiredInspectorEntries, so that
// retention never holds the writer, and the commits of events waiting for it, for long.
const inspectorBatch = 5000

// insertInspectorEntry stores one entry; its codes go into inspector_codes with insertEntryCode.
const insertInspectorEntry = `INSERT INTO inspector_entries(at, source_id, site, key_prefix, event_name, event_id, outcome,
	codes, reason, test_code, client_ip, problems, body, batch, idx)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

const insertEntryCode = `INSERT OR IGNORE INTO inspector_codes(code, entry_id) VALUES(?, ?)`

// addEventQuality and addQualityAnomaly add counts into their hour's row, making it when new.
const (
	addEventQuality = `INSERT INTO quality_events(source_id, hour, event_name, collected, with_warnings, rejected, duplicates)
VALUES(?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(source_id, hour, event_name) DO UPDATE SET
	collected = collected + excluded.collected, with_warnings = with_warnings + excluded.with_warnings,
	rejected = rejected + excluded.rejected, duplicates = duplicates + excluded.duplicates`
	addQualityAnomaly = `INSERT INTO quality_anomalies(source_id, hour, event_name, code, path, count, message, sample)
VALUES(?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(source_id, hour, event_name, code, path) DO UPDATE SET
	count = count + excluded.count, message = excluded.message, sample = coalesce(excluded.sample, sample)`
)

// AddInspectorEntries stores entries and adds quality into the stored counts, in one transaction
// on the writer, and sets entries[i].ID. Hours are taken down to the start of their hour (UTC);
// an anomaly's count adds to the stored one, its message replaces it, and so does its sample
// unless nil. Problems and Codes may be nil (stored as empty arrays); an entry's Body must be
// valid JSON. Nothing is stored when it fails.
//
// It is a transaction of its own, not part of the committer's: the committer's transactions
// stay what they were (events, and the sequence read), and waits for this one only as it waits
// for any other write, at the writer connection. The capturer calls it a few times a second at
// most, with a bounded batch (see BenchmarkStoreEventsWithInspector for what that costs the
// commits of events).
func (d *DB) AddInspectorEntries(ctx context.Context, entries []trackapi.InspectorEntry, quality trackapi.QualityReport) error {
	op := fmt.Sprintf("add %d inspector entries", len(entries))
	if len(entries) == 0 && len(quality.Events) == 0 && len(quality.Anomalies) == 0 {
		return nil
	}
	rows := make([]inspectorRow, len(entries))
	for i, e := range entries {
		r, err := encodeInspectorEntry(e)
		if err != nil {
			return fmt.Errorf("%s: entry %d: %w", op, i, err)
		}
		rows[i] = r
	}
	ids := make([]int64, len(entries))
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		if err := insertInspectorRows(ctx, tx, rows, ids); err != nil {
			return err
		}
		return addQuality(ctx, tx, quality)
	})
	if err != nil {
		return d.classify(op, err)
	}
	for i := range entries {
		entries[i].ID = ids[i]
	}
	return nil
}

// inspectorRow is an entry encoded for its insert.
type inspectorRow struct {
	e        trackapi.InspectorEntry
	codes    string // JSON array
	problems string // JSON array
	testCode any    // the test code, or nil for NULL
}

func encodeInspectorEntry(e trackapi.InspectorEntry) (inspectorRow, error) {
	if !json.Valid(e.Body) {
		return inspectorRow{}, fmt.Errorf("the body is not valid JSON")
	}
	codes := e.Codes
	if codes == nil {
		codes = []string{}
	}
	problems := e.Problems
	if problems == nil {
		problems = []trackapi.Problem{}
	}
	c, err := json.Marshal(codes)
	if err != nil {
		return inspectorRow{}, fmt.Errorf("encode codes: %w", err)
	}
	p, err := json.Marshal(problems)
	if err != nil {
		return inspectorRow{}, fmt.Errorf("encode problems: %w", err)
	}
	r := inspectorRow{e: e, codes: string(c), problems: string(p)}
	if e.TestCode != "" {
		r.testCode = e.TestCode
	}
	return r, nil
}

// insertInspectorRows inserts rows and their codes, and writes each row's id into ids.
func insertInspectorRows(ctx context.Context, tx *sql.Tx, rows []inspectorRow, ids []int64) error {
	if len(rows) == 0 {
		return nil
	}
	insert, err := tx.PrepareContext(ctx, insertInspectorEntry)
	if err != nil {
		return err
	}
	defer insert.Close()
	code, err := tx.PrepareContext(ctx, insertEntryCode)
	if err != nil {
		return err
	}
	defer code.Close()
	for i, r := range rows {
		e := r.e
		res, err := insert.ExecContext(ctx, e.At.UnixMilli(), e.SourceID, e.Site, e.KeyPrefix, e.EventName, e.EventID, e.Outcome,
			r.codes, e.Reason, r.testCode, e.ClientIP, r.problems, string(e.Body), e.Batch, e.Index)
		if err != nil {
			return fmt.Errorf("insert entry: %w", err)
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return fmt.Errorf("insert entry: %w", err)
		}
		for _, c := range e.Codes {
			if _, err := code.ExecContext(ctx, c, ids[i]); err != nil {
				return fmt.Errorf("insert code %q of entry %d: %w", c, ids[i], err)
			}
		}
	}
	return nil
}

// addQuality adds the counts of q into their rows.
func addQuality(ctx context.Context, tx *sql.Tx, q trackapi.QualityReport) error {
	err := execEach(ctx, tx, addEventQuality, len(q.Events), func(i int) []any {
		e := q.Events[i]
		return []any{e.SourceID, hourOf(e.Hour), e.EventName, e.Collected, e.WithWarnings, e.Rejected, e.Duplicates}
	})
	if err != nil {
		return fmt.Errorf("add event counts: %w", err)
	}
	err = execEach(ctx, tx, addQualityAnomaly, len(q.Anomalies), func(i int) []any {
		a := q.Anomalies[i]
		var sample any
		if a.Sample != nil {
			sample = string(a.Sample)
		}
		return []any{a.SourceID, hourOf(a.Hour), a.EventName, a.Code, a.Path, a.Count, a.Message, sample}
	})
	if err != nil {
		return fmt.Errorf("add anomaly counts: %w", err)
	}
	return nil
}

// hourOf is the start of t's hour in epoch milliseconds.
func hourOf(t time.Time) int64 {
	return t.UTC().Truncate(time.Hour).UnixMilli()
}

// inspectorColumns are the columns scanInspectorEntry reads, in its order, of inspector_entries
// as e.
const inspectorColumns = `e.id, e.at, e.source_id, e.site, e.key_prefix, e.event_name, e.event_id, e.outcome, e.codes,
	e.reason, e.test_code, e.client_ip, e.problems, e.body, e.batch, e.idx`

func scanInspectorEntry(scan func(...any) error) (trackapi.InspectorEntry, error) {
	var e trackapi.InspectorEntry
	var at int64
	var testCode sql.NullString
	var codes, problems, body []byte
	if err := scan(&e.ID, &at, &e.SourceID, &e.Site, &e.KeyPrefix, &e.EventName, &e.EventID, &e.Outcome, &codes,
		&e.Reason, &testCode, &e.ClientIP, &problems, &body, &e.Batch, &e.Index); err != nil {
		return trackapi.InspectorEntry{}, err
	}
	e.At = time.UnixMilli(at).UTC()
	e.TestCode = testCode.String
	if err := json.Unmarshal(codes, &e.Codes); err != nil {
		return trackapi.InspectorEntry{}, fmt.Errorf("codes of entry %d: %w", e.ID, err)
	}
	if err := json.Unmarshal(problems, &e.Problems); err != nil {
		return trackapi.InspectorEntry{}, fmt.Errorf("problems of entry %d: %w", e.ID, err)
	}
	e.Body = body
	return e, nil
}

// InspectorEntries lists up to limit entries matching f with an ID below before (0: from the
// newest), newest first, and the cursor of the next page: the last entry's ID, or 0 when no
// entry matching f is left below it. A limit below 1 is an error.
//
// The page is one query on a read connection: with a source (and event name), a code or a test
// code, it walks that index from the cursor down and stops after limit+1 matches, so a page
// costs what it returns plus the rows the other filters skip (inspectorQueryPlans in the tests
// holds the plans to that).
func (d *DB) InspectorEntries(ctx context.Context, f trackapi.InspectorFilter, before int64, limit int) ([]trackapi.InspectorEntry, int64, error) {
	if limit < 1 {
		return nil, 0, fmt.Errorf("inspector entries: limit %d, want at least 1", limit)
	}
	query, args := inspectorQuery(f, before, false, limit+1)
	entries, err := d.queryInspector(ctx, query, args)
	if err != nil {
		return nil, 0, d.classify("inspector entries", err)
	}
	if len(entries) <= limit {
		return entries, 0, nil
	}
	entries = entries[:limit]
	return entries, entries[limit-1].ID, nil
}

// InspectorEntriesAfter lists up to limit entries matching f with an ID above after, oldest
// first, and the cursor to pass next time: the last entry's ID, or after when none was returned.
// A limit below 1 is an error. IDs are handed out in the order entries are committed, so a
// reader that resumes from its cursor misses none.
func (d *DB) InspectorEntriesAfter(ctx context.Context, f trackapi.InspectorFilter, after int64, limit int) ([]trackapi.InspectorEntry, int64, error) {
	if limit < 1 {
		return nil, after, fmt.Errorf("inspector entries after %d: limit %d, want at least 1", after, limit)
	}
	query, args := inspectorQuery(f, after, true, limit)
	entries, err := d.queryInspector(ctx, query, args)
	if err != nil {
		return nil, after, d.classify("inspector entries", err)
	}
	next := after
	if len(entries) > 0 {
		next = entries[len(entries)-1].ID
	}
	return entries, next, nil
}

// InspectorEntry returns one entry; an unknown id wraps trackapi.ErrNotFound.
func (d *DB) InspectorEntry(ctx context.Context, id int64) (trackapi.InspectorEntry, error) {
	op := fmt.Sprintf("inspector entry %d", id)
	row := d.reader.QueryRowContext(ctx, `SELECT `+inspectorColumns+` FROM inspector_entries e WHERE e.id = ?`, id)
	e, err := scanInspectorEntry(row.Scan)
	if err == sql.ErrNoRows {
		return trackapi.InspectorEntry{}, fmt.Errorf("%s: %w", op, trackapi.ErrNotFound)
	}
	if err != nil {
		return trackapi.InspectorEntry{}, d.classify(op, err)
	}
	return e, nil
}

func (d *DB) queryInspector(ctx context.Context, query string, args []any) ([]trackapi.InspectorEntry, error) {
	rows, err := d.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	entries := []trackapi.InspectorEntry{}
	for rows.Next() {
		e, err := scanInspectorEntry(rows.Scan)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, rows.Err()
}

// inspectorQuery is the query of a page of entries matching f: with IDs above cursor, oldest
// first, when ascending; else below cursor (0: no bound), newest first. A code filter walks
// inspector_codes for that code (CROSS JOIN makes SQLite keep it the outer loop) and reads each
// entry by its id; the other filters let SQLite choose among the entries' indexes.
func inspectorQuery(f trackapi.InspectorFilter, cursor int64, ascending bool, limit int) (string, []any) {
	var q strings.Builder
	var args []any
	where := func(cond string, arg any) {
		q.WriteString(" AND ")
		q.WriteString(cond)
		args = append(args, arg)
	}
	idColumn := "e.id"
	q.WriteString(`SELECT ` + inspectorColumns)
	if f.Code != "" {
		idColumn = "c.entry_id"
		q.WriteString(` FROM inspector_codes c CROSS JOIN inspector_entries e ON e.id = c.entry_id WHERE c.code = ?`)
		args = append(args, f.Code)
	} else {
		q.WriteString(` FROM inspector_entries e WHERE 1`)
	}
	switch {
	case ascending:
		where(idColumn+" > ?", cursor)
	case cursor > 0:
		where(idColumn+" < ?", cursor)
	}
	switch {
	case f.SourceID != 0:
		where("e.source_id = ?", f.SourceID)
	case f.Unattributed:
		where("e.source_id = ?", 0)
	}
	if f.Site != "" {
		where("e.site = ?", f.Site)
	}
	if f.EventName != "" {
		where("e.event_name = ?", f.EventName)
	}
	if f.Outcome != "" {
		where("e.outcome = ?", f.Outcome)
	}
	if f.TestCode != "" {
		where("e.test_code = ?", f.TestCode)
	}
	if !f.Since.IsZero() {
		where("e.at >= ?", f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where("e.at < ?", f.Until.UnixMilli())
	}
	if ascending {
		q.WriteString(" ORDER BY " + idColumn + " LIMIT ?")
	} else {
		q.WriteString(" ORDER BY " + idColumn + " DESC LIMIT ?")
	}
	args = append(args, limit)
	return q.String(), args
}

// DataQuality returns the counts of one source (0: the events without a known source) for the
// hours that start in [start, end), oldest first, then by event name (and code and path). The
// lists are empty, not nil, when there is nothing.
func (d *DB) DataQuality(ctx context.Context, sourceID int64, start, end time.Time) (trackapi.QualityReport, error) {
	op := fmt.Sprintf("data quality of source %d", sourceID)
	report := trackapi.QualityReport{Events: []trackapi.EventQuality{}, Anomalies: []trackapi.QualityAnomaly{}}
	from, to := start.UnixMilli(), end.UnixMilli()
	err := d.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT hour, event_name, collected, with_warnings, rejected, duplicates
FROM quality_events WHERE source_id = ? AND hour >= ? AND hour < ? ORDER BY hour, event_name`, sourceID, from, to)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			q := trackapi.EventQuality{SourceID: sourceID}
			var hour int64
			if err := rows.Scan(&hour, &q.EventName, &q.Collected, &q.WithWarnings, &q.Rejected, &q.Duplicates); err != nil {
				return err
			}
			q.Hour = time.UnixMilli(hour).UTC()
			report.Events = append(report.Events, q)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		anomalies, err := tx.QueryContext(ctx, `SELECT hour, event_name, code, path, count, message, sample
FROM quality_anomalies WHERE source_id = ? AND hour >= ? AND hour < ? ORDER BY hour, event_name, code, path`, sourceID, from, to)
		if err != nil {
			return err
		}
		defer anomalies.Close()
		for anomalies.Next() {
			a := trackapi.QualityAnomaly{SourceID: sourceID}
			var hour int64
			var sample []byte
			if err := anomalies.Scan(&hour, &a.EventName, &a.Code, &a.Path, &a.Count, &a.Message, &sample); err != nil {
				return err
			}
			a.Hour = time.UnixMilli(hour).UTC()
			if sample != nil {
				a.Sample = sample
			}
			report.Anomalies = append(report.Anomalies, a)
		}
		return anomalies.Err()
	})
	if err != nil {
		return trackapi.QualityReport{}, d.classify(op, err)
	}
	return report, nil
}

// DeleteExpiredInspectorEntries applies the inspector's retention at now and returns how many
// entries it deleted: those older than trackapi.InspectorKeep, those with a test code older than
// trackapi.InspectorTestCodeKeep, and, for each source (0, the entries without a known source,
// counting as one) with more than trackapi.InspectorMaxPerSource, its oldest ones beyond that;
// then the data-quality counts of hours that started before now - trackapi.QualityKeep. Deletes
// run in transactions of at most inspectorBatch entries, so that the commits of events never wait
// long for the writer; a failure keeps what earlier transactions deleted.
func (d *DB) DeleteExpiredInspectorEntries(ctx context.Context, now time.Time) (int, error) {
	op := "delete expired inspector entries"
	deleted := 0
	expire := func(what, query string, args ...any) error {
		for {
			n, err := d.deleteBatch(ctx, query, append(args, inspectorBatch)...)
			deleted += n
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if n < inspectorBatch {
				return nil
			}
		}
	}
	if err := expire("by age", `DELETE FROM inspector_entries WHERE id IN (
	SELECT id FROM inspector_entries WHERE at < ? ORDER BY at LIMIT ?)`, now.Add(-trackapi.InspectorKeep).UnixMilli()); err != nil {
		return deleted, d.classify(op, err)
	}
	if err := expire("test entries by age", `DELETE FROM inspector_entries WHERE id IN (
	SELECT id FROM inspector_entries WHERE test_code IS NOT NULL AND at < ? LIMIT ?)`, now.Add(-trackapi.InspectorTestCodeKeep).UnixMilli()); err != nil {
		return deleted, d.classify(op, err)
	}
	over, err := d.sourcesOverCap(ctx)
	if err != nil {
		return deleted, d.classify(op, err)
	}
	for sourceID, oldestKept := range over {
		if err := expire(fmt.Sprintf("beyond the cap of source %d", sourceID), `DELETE FROM inspector_entries WHERE id IN (
	SELECT id FROM inspector_entries WHERE source_id = ? AND id < ? ORDER BY id LIMIT ?)`, sourceID, oldestKept); err != nil {
			return deleted, d.classify(op, err)
		}
	}
	hour := hourOf(now.Add(-trackapi.QualityKeep))
	err = d.inWriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM quality_events WHERE hour < ?`, hour); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM quality_anomalies WHERE hour < ?`, hour)
		return err
	})
	if err != nil {
		return deleted, d.classify(op+": data-quality counts", err)
	}
	return deleted, nil
}

// deleteBatch runs one delete in a transaction of its own and returns how many rows it deleted.
func (d *DB) deleteBatch(ctx context.Context, query string, args ...any) (int, error) {
	var n int64
	err := d.inWriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// sourcesOverCap returns, for each source with more than trackapi.InspectorMaxPerSource
// entries, the ID of the oldest entry it keeps. It reads on a read connection: an entry added
// meanwhile only makes the cap apply a little late, at the next pass.
func (d *DB) sourcesOverCap(ctx context.Context) (map[int64]int64, error) {
	over := map[int64]int64{}
	err := d.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT source_id FROM inspector_entries GROUP BY source_id HAVING count(*) > ?`,
			trackapi.InspectorMaxPerSource)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return err
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, id := range ids {
			var oldest int64
			if err := tx.QueryRowContext(ctx, `SELECT id FROM inspector_entries WHERE source_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?`,
				id, trackapi.InspectorMaxPerSource-1).Scan(&oldest); err != nil {
				return fmt.Errorf("the oldest entry kept of source %d: %w", id, err)
			}
			over[id] = oldest
		}
		return nil
	})
	return over, err
}
