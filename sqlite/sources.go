package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trackapi/trackapi"
)

// CreateSource stores a new active source with the hash of its key. It fails when another source
// has the same key hash.
func (d *DB) CreateSource(ctx context.Context, site, name string, keyHash []byte) (trackapi.Source, error) {
	now := time.Now().UnixMilli()
	res, err := d.writer.ExecContext(ctx,
		`INSERT INTO sources(site, name, key_hash, active, created_at) VALUES(?, ?, ?, 1, ?)`,
		site, name, keyHash, now)
	if err != nil {
		return trackapi.Source{}, fmt.Errorf("create source %q: %w", name, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return trackapi.Source{}, fmt.Errorf("create source %q: %w", name, err)
	}
	return trackapi.Source{
		ID:        id,
		Site:      site,
		Name:      name,
		KeyHash:   bytes.Clone(keyHash),
		Active:    true,
		CreatedAt: time.UnixMilli(now).UTC(),
	}, nil
}

// Sources lists all sources, active or not, oldest first. The list is empty, not nil, when there
// are none.
func (d *DB) Sources(ctx context.Context) ([]trackapi.Source, error) {
	rows, err := d.reader.QueryContext(ctx, `SELECT `+sourceColumns+` FROM sources ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	defer rows.Close()
	sources := []trackapi.Source{}
	for rows.Next() {
		s, err := scanSource(rows)
		if err != nil {
			return nil, fmt.Errorf("list sources: %w", err)
		}
		sources = append(sources, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	return sources, nil
}

// SourceByKeyHash finds the source, active or not, whose key has this hash: one lookup on the
// unique index of key_hash. An unknown hash wraps trackapi.ErrNotFound.
func (d *DB) SourceByKeyHash(ctx context.Context, keyHash []byte) (trackapi.Source, error) {
	row := d.reader.QueryRowContext(ctx, `SELECT `+sourceColumns+` FROM sources WHERE key_hash = ?`, keyHash)
	s, err := scanSource(row)
	if errors.Is(err, sql.ErrNoRows) {
		return trackapi.Source{}, fmt.Errorf("find source by key: %w", trackapi.ErrNotFound)
	}
	if err != nil {
		return trackapi.Source{}, fmt.Errorf("find source by key: %w", err)
	}
	return s, nil
}

const sourceColumns = `id, site, name, key_hash, active, created_at`

// scanSource reads the sourceColumns of one row.
func scanSource(row interface{ Scan(...any) error }) (trackapi.Source, error) {
	var s trackapi.Source
	var createdAt int64
	if err := row.Scan(&s.ID, &s.Site, &s.Name, &s.KeyHash, &s.Active, &createdAt); err != nil {
		return trackapi.Source{}, err
	}
	s.CreatedAt = time.UnixMilli(createdAt).UTC()
	return s, nil
}

// DeactivateSource makes a source's key stop working; its events stay stored. Deactivating an
// inactive source is not an error; an unknown id is, wrapping trackapi.ErrNotFound.
func (d *DB) DeactivateSource(ctx context.Context, id int64) error {
	res, err := d.writer.ExecContext(ctx, `UPDATE sources SET active = 0 WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("deactivate source %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("deactivate source %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("deactivate source %d: %w", id, trackapi.ErrNotFound)
	}
	return nil
}
