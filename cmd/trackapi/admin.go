package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

// openData parses a command's flags and opens the database of its --data directory.
func openData(fs *flag.FlagSet, args []string, data *string) (*sqlite.DB, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	path, err := dbPath(*data)
	if err != nil {
		return nil, err
	}
	return sqlite.Open(path)
}

func sources(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New(`"sources" takes create, list or deactivate`)
	}
	fs, data := newFlags("sources "+args[0], stderr)
	switch sub, rest := args[0], args[1:]; sub {
	case "create":
		site := fs.String("site", "", "site id (tc_s) the source sends for")
		name := fs.String("name", "", "a name for people")
		db, err := openData(fs, rest, data)
		if err != nil {
			return err
		}
		defer db.Close()
		if *site == "" || *name == "" {
			return errors.New("sources create needs --site and --name")
		}
		key := trackapi.NewSourceKey()
		if _, err := db.CreateSource(ctx, *site, *name, trackapi.HashKey(key)); err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, key) // the key alone, so that scripts can capture it
		return err
	case "list":
		db, err := openData(fs, rest, data)
		if err != nil {
			return err
		}
		defer db.Close()
		list, err := db.Sources(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSITE\tNAME\tACTIVE\tCREATED")
		for _, s := range list {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%t\t%s\n", s.ID, s.Site, s.Name, s.Active, s.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	case "deactivate":
		db, err := openData(fs, rest, data)
		if err != nil {
			return err
		}
		defer db.Close()
		if fs.NArg() != 1 {
			return errors.New("sources deactivate takes one source ID")
		}
		id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
		if err != nil {
			return fmt.Errorf("source ID %q: %w", fs.Arg(0), err)
		}
		return db.DeactivateSource(ctx, id)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown sources command %q", sub)
	}
}

// exportEvents writes stored events as NDJSON, oldest first. It reads through SQLite's WAL, so it
// works while a server writes to the same directory.
func exportEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("events export", stderr)
	source := fs.Int64("source", 0, "export only this source's events (0: all)")
	db, err := openData(fs, args, data)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriterSize(stdout, 64<<10)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := db.ExportEvents(ctx, *source, func(e trackapi.StoredEvent) error { return enc.Encode(e) }); err != nil {
		return err
	}
	return w.Flush()
}
