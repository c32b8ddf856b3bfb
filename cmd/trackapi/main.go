// Command trackapi runs the collect server and manages its sources and stored events
// (DESIGN.md §6). It only wires the packages together; the work is done in server/, sqlite/ and
// importer/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

const usage = `trackapi collects events sent with the HTTP Tracking API v2.0.

Usage:
  trackapi serve [--addr :8080] [--data ./trackapi-data] [--log-level info]
  trackapi sources create [--data DIR] --site S --name N     prints the new key
  trackapi sources list [--data DIR]
  trackapi sources deactivate [--data DIR] ID
  trackapi events export [--data DIR] [--source ID]          NDJSON, oldest first
  trackapi send --url URL --site S --token K [--failed F] FILE|-   bulk import of NDJSON events
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "trackapi:", err)
		}
		os.Exit(2)
	}
}

// run dispatches a command line; stdout carries results (keys, listings, exports) and stderr
// logs and messages, so that results can be piped.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(ctx, rest, stdout, stderr)
	case "sources":
		return sources(ctx, rest, stdout, stderr)
	case "events":
		if len(rest) == 0 || rest[0] != "export" {
			fmt.Fprint(stderr, usage)
			return errors.New(`"events" takes the subcommand "export"`)
		}
		return exportEvents(ctx, rest[1:], stdout, stderr)
	case "send":
		return sendCommand(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// newFlags makes a flag set with the --data flag every command shares.
func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./trackapi-data", "directory holding the database")
	return fs, data
}

// dbPath is the database file in a data directory, which is created if needed.
func dbPath(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating the data directory: %w", err)
	}
	return filepath.Join(dataDir, "trackapi.db"), nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
