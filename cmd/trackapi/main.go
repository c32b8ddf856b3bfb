// Command trackapi runs the collect server and manages its sources and stored events. It only
// wires the packages together: the work is done in server/ (HTTP), ingest/ (event rules),
// sources/ (keys), admintokens/ (config API tokens), sqlite/ (the store) and importer/ (bulk
// sends). The sources, destinations and dead-letters commands go through a running server's
// config API (gen/adminapi's client) with --server, and through the database otherwise: each is
// written once over configClient (configclient.go), implemented by apiClient and dbClient.
//
// Commands and flags are declared as structs for github.com/alecthomas/kong, which gives every
// command its own --help, checks required flags and keeps the dispatch out of hand-written code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/alecthomas/kong"
)

// cli is the command line: one field a command.
type cli struct {
	Serve   serveCmd   `cmd:"" help:"Run the collect server on the embedded SQLite store."`
	Sources sourcesCmd `cmd:"" help:"Create, list, rename, deactivate sources and rotate their keys (--server: through a running server)."`
	Events  eventsCmd  `cmd:"" help:"Read stored events."`

	Destinations destinationsCmd `cmd:"" help:"Route stored events to webhooks, other collectors, Kafka or files (--server: through a running server)."`
	DeadLetters  deadLettersCmd  `cmd:"" name:"dead-letters" help:"List, replay and purge the events a destination did not take (--server: through a running server)."`
	Send         sendCmd         `cmd:"" help:"Bulk import of NDJSON events through the partners' client."`
	AdminTokens  adminTokensCmd  `cmd:"" name:"admin-tokens" help:"Make, list and revoke the tokens of the config API (Authorization: Bearer; scopes read and write)."`
}

// dataFlag is the --data flag of every command that works on a data directory.
type dataFlag struct {
	Data string `default:"./trackapi-data" placeholder:"DIR" help:"Directory holding the database."`
}

// runEnv is what every command's Run gets: the context, and where to write. Results (keys,
// listings, exports) go to stdout so that they can be piped; logs and messages go to stderr.
type runEnv struct {
	ctx            context.Context
	stdout, stderr io.Writer
}

const description = "trackapi collects events sent with the HTTP Tracking API v2.0."

func main() {
	code := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(code)
}

// exitRequest is how kong's --help (which wants to exit the process) ends run instead.
type exitRequest int

// run parses a command line and runs it; it returns the process's exit code: 0, 1 when the
// command failed, 2 for a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("trackapi"),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitRequest(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars(sendDefaults),
	)
	if err != nil {
		fmt.Fprintln(stderr, "trackapi:", err)
		return 2
	}
	noCommand := len(args) == 0
	defer func() {
		if r := recover(); r != nil {
			exit, ok := r.(exitRequest)
			if !ok {
				panic(r)
			}
			code = int(exit)
			if noCommand {
				code = 2 // the usage was printed because no command was given
			}
		}
	}()
	if noCommand {
		args = []string{"--help"}
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "trackapi:", err)
		var perr *kong.ParseError
		if errors.As(err, &perr) {
			parser.Stdout = stderr // stdout carries results only
			_ = perr.Context.PrintUsage(true)
		}
		return 2
	}
	if err := kctx.Run(&runEnv{ctx: ctx, stdout: stdout, stderr: stderr}); err != nil {
		fmt.Fprintln(stderr, "trackapi:", err)
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			return coded.ExitCode()
		}
		return 1
	}
	return 0
}

// usageError is a command line that parsed but makes no sense; it exits 2 like a parse error.
type usageError struct{ error }

// ExitCode is what run returns for it.
func (usageError) ExitCode() int { return 2 }

func itoa(n int) string { return strconv.Itoa(n) }

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
