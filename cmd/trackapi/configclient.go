package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/trackapi/trackapi"
)

// configHelp is the rule of the commands that change the configuration (sources, destinations,
// dead letters), shown by their groups' --help.
const configHelp = `Where a server runs, give its admin listener with --server URL (or $TRACKAPI_SERVER) and an admin
token in $TRACKAPI_ADMIN_TOKEN or --admin-token-file PATH: the command then goes through the config
API, checked and logged by the server like any other client. Without --server it opens the
database in --data directly: for when no server runs (before the first start, recovery). The
output and the exit codes are the same either way: 0 done, 1 failed (not found, conflict, token
refused), 2 usage error (including what the API refuses as a bad request). events export and
admin-tokens always work on the database.`

// defaultData is the data directory when --data is not given.
const defaultData = "./trackapi-data"

// configFlags are the flags of the commands that go through a configClient: where the
// configuration is, a running server's config API or a data directory. --data has no default in
// its tag so that giving it can be told from not giving it, which must not go with --server.
type configFlags struct {
	Data           string `placeholder:"DIR" help:"Directory holding the database (default ./trackapi-data), for when no server runs. Not with --server."`
	Server         string `env:"TRACKAPI_SERVER" placeholder:"URL" help:"A running server's admin listener, such as http://127.0.0.1:8081: go through its config API instead of the database."`
	AdminTokenFile string `placeholder:"PATH" help:"With --server: a file holding the admin token ($TRACKAPI_ADMIN_TOKEN otherwise; never a flag, which the process list would show)."`
}

// configClient is what the sources, destinations and dead-letters commands do, once over the
// database (dbClient) and once over the config API (apiClient), so that each command's logic and
// output exist once. Lists are in the database's order, oldest first; errors of the config API
// are *apiError.
type configClient interface {
	// CreateSource makes a source and returns its first key.
	CreateSource(ctx context.Context, site, name string) (key string, err error)
	Sources(ctx context.Context) ([]trackapi.Source, error)
	UpdateSource(ctx context.Context, id int64, change sourceChange) error
	SourceKeys(ctx context.Context, id int64) ([]trackapi.SourceKey, error)
	// RotateSourceKey returns the new key; the others expire after overlap.
	RotateSourceKey(ctx context.Context, id int64, overlap time.Duration) (key string, err error)
	RevokeSourceKey(ctx context.Context, id, keyID int64) error

	// CreateDestination stores d, with a signing secret for a webhook, which it returns.
	CreateDestination(ctx context.Context, d trackapi.Destination) (id int64, secret string, err error)
	Destinations(ctx context.Context) ([]destinationState, error)
	SetDestinationStatus(ctx context.Context, id int64, status string) error
	DeleteDestination(ctx context.Context, id int64) error
	// RotateSigningSecret returns a webhook's new secret; the previous one signs for overlap more.
	RotateSigningSecret(ctx context.Context, id int64, overlap time.Duration) (secret string, err error)

	// DeadLetters returns a page of a destination's dead letters after seq after, and the after of
	// the next page: 0 when this one is the last.
	DeadLetters(ctx context.Context, destination int64, reason string, after int64) ([]trackapi.DeadLetter, int64, error)
	ReplayDeadLetters(ctx context.Context, destination int64, reason string) (int64, error)
	PurgeDeadLetters(ctx context.Context, destination int64, reason string) (int64, error)

	Close() error
}

// sourceChange is what a PATCH of a source changes: the fields that are not nil.
type sourceChange struct {
	Name   *string
	Active *bool
}

// destinationState is a destination with where its delivery stands, as listings show it.
type destinationState struct {
	trackapi.Destination
	State trackapi.DeliveryState
}

// deadLetterPage is how many dead letters one request reads.
const deadLetterPage = 1000

// with opens the configuration the flags name, runs fn with it and closes it. Only commands that
// make something pass create (see openStore); it does not matter with --server.
func (f *configFlags) with(create bool, fn func(configClient) error) error {
	c, err := f.open(create)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// open returns the client the flags ask for: the config API with --server, the database otherwise.
func (f *configFlags) open(create bool) (configClient, error) {
	if f.Server == "" {
		if f.AdminTokenFile != "" {
			return nil, usageError{errors.New("--admin-token-file goes with --server (or $TRACKAPI_SERVER)")}
		}
		data := f.Data
		if data == "" {
			data = defaultData
		}
		return openDBClient(data, create)
	}
	if f.Data != "" {
		return nil, usageError{errors.New("--server (or $TRACKAPI_SERVER) and --data cannot go together: " +
			"--server goes through a running server, --data opens the database when none runs")}
	}
	u, err := url.Parse(f.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--server %q: want the admin listener's base URL, such as http://127.0.0.1:8081", f.Server)}
	}
	token, err := f.adminToken()
	if err != nil {
		return nil, err
	}
	return newAPIClient(f.Server, token)
}

// adminToken reads the admin token from --admin-token-file, or else $TRACKAPI_ADMIN_TOKEN.
func (f *configFlags) adminToken() (string, error) {
	token := os.Getenv("TRACKAPI_ADMIN_TOKEN")
	if f.AdminTokenFile != "" {
		b, err := os.ReadFile(f.AdminTokenFile)
		if err != nil {
			return "", usageError{fmt.Errorf("--admin-token-file: %w", err)}
		}
		token = string(b)
	}
	if token = strings.TrimSpace(token); token == "" {
		return "", usageError{errors.New("--server needs an admin token in $TRACKAPI_ADMIN_TOKEN or a file named by " +
			"--admin-token-file: a server's first start prints one, and `trackapi admin-tokens create --scope write --data DIR` makes one")}
	}
	return token, nil
}

// checkOverlap checks an --expire-previous-in before either client is asked, so that both modes
// refuse the same values the same way.
func checkOverlap(overlap, max time.Duration) error {
	if overlap < 0 || overlap > max {
		return usageError{fmt.Errorf("--expire-previous-in must be between 0 and %s", max)}
	}
	return nil
}
