package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/trackapi/trackapi/sqlite"
)

// dbFile is the database's name inside a data directory.
const dbFile = "trackapi.db"

// openStore opens the database of a data directory. Only commands that make something (serve,
// sources create) pass create; the others refuse a directory without a database, so that a
// mistyped --data is an error rather than an empty answer and a stray new directory.
func openStore(dir string, create bool, opts sqlite.Options) (*sqlite.DB, error) {
	path := filepath.Join(dir, dbFile)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating the data directory: %w", err)
		}
	} else if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no trackapi database in %s (is --data right? `trackapi serve` or `trackapi sources create` makes one)", dir)
		}
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	return sqlite.OpenWithOptions(path, opts)
}

// withStore opens a data directory's store (see openStore), runs fn and closes it.
func withStore(dir string, create bool, fn func(*sqlite.DB) error) error {
	db, err := openStore(dir, create, sqlite.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db)
}
