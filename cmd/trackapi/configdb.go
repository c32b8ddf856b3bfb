package main

import (
	"context"
	"fmt"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
	"github.com/trackapi/trackapi/webhook"
)

// dbClient is the configClient over a data directory's database, for when no server runs. It
// applies the same rules as the config API (sources.Service for keys, deliver's checks for
// destinations); a server running on the same directory sees its changes within 2 s.
type dbClient struct {
	db   *sqlite.DB
	keys *sources.Service
}

var _ configClient = (*dbClient)(nil)

func openDBClient(dir string, create bool) (*dbClient, error) {
	db, err := openStore(dir, create, sqlite.Options{})
	if err != nil {
		return nil, err
	}
	return &dbClient{db: db, keys: sources.New(db, sources.Options{})}, nil
}

func (c *dbClient) Close() error { return c.db.Close() }

func (c *dbClient) CreateSource(ctx context.Context, site, name string) (string, error) {
	_, key, err := c.keys.Create(ctx, site, name)
	return key.Key, err
}

func (c *dbClient) Sources(ctx context.Context) ([]trackapi.Source, error) {
	return c.keys.List(ctx)
}

func (c *dbClient) UpdateSource(ctx context.Context, id int64, change sourceChange) error {
	if change.Name != nil {
		if err := c.keys.Rename(ctx, id, *change.Name); err != nil {
			return err
		}
	}
	if change.Active != nil {
		return c.keys.SetActive(ctx, id, *change.Active)
	}
	return nil
}

func (c *dbClient) SourceKeys(ctx context.Context, id int64) ([]trackapi.SourceKey, error) {
	return c.keys.Keys(ctx, id)
}

func (c *dbClient) RotateSourceKey(ctx context.Context, id int64, overlap time.Duration) (string, error) {
	key, err := c.keys.RotateKey(ctx, id, overlap)
	return key.Key, err
}

func (c *dbClient) RevokeSourceKey(ctx context.Context, id, keyID int64) error {
	return c.keys.RevokeKey(ctx, id, keyID)
}

// CreateDestination checks d as the delivery engine will use it (a mistake is a usage error, as
// the config API's 400 is), gives a webhook its signing secret, and stores it.
func (c *dbClient) CreateDestination(ctx context.Context, d trackapi.Destination) (int64, string, error) {
	var secret string
	if d.Type == trackapi.DestinationWebhook {
		var err error
		if secret, err = webhook.NewSecret(); err != nil {
			return 0, "", err
		}
		d.Config.Secrets = []trackapi.SigningSecret{{Secret: secret}}
	}
	if err := deliver.ValidateDestination(d, sinkFactories(nil)); err != nil {
		return 0, "", usageError{err}
	}
	for _, id := range d.Sources {
		if _, err := c.db.Source(ctx, id); err != nil {
			return 0, "", usageError{fmt.Errorf("--source %d: %w", id, err)}
		}
	}
	d, err := c.db.CreateDestination(ctx, d)
	if err != nil {
		return 0, "", err
	}
	return d.ID, secret, nil
}

func (c *dbClient) Destinations(ctx context.Context) ([]destinationState, error) {
	list, err := c.db.Destinations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]destinationState, 0, len(list))
	for _, d := range list {
		state, err := c.db.DeliveryState(ctx, d.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, destinationState{Destination: d, State: state})
	}
	return out, nil
}

func (c *dbClient) SetDestinationStatus(ctx context.Context, id int64, status string) error {
	d, err := c.db.Destination(ctx, id)
	if err != nil {
		return err
	}
	d.Status = status
	_, err = c.db.UpdateDestination(ctx, d)
	return err
}

func (c *dbClient) DeleteDestination(ctx context.Context, id int64) error {
	return c.db.DeleteDestination(ctx, id)
}

func (c *dbClient) RotateSigningSecret(ctx context.Context, id int64, overlap time.Duration) (string, error) {
	d, err := c.db.Destination(ctx, id)
	if err != nil {
		return "", err
	}
	if d.Type != trackapi.DestinationWebhook {
		return "", fmt.Errorf("destination %d is a %s destination; only webhooks are signed", d.ID, d.Type)
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return "", err
	}
	d.Config.Secrets = webhook.RotateSecrets(d.Config.Secrets, secret, time.Now(), overlap)
	if _, err := c.db.UpdateDestination(ctx, d); err != nil {
		return "", err
	}
	return secret, nil
}

// DeadLetters checks that the destination exists first: the store lists none for an unknown one,
// where the config API answers 404.
func (c *dbClient) DeadLetters(ctx context.Context, destination int64, reason string, after int64) ([]trackapi.DeadLetter, int64, error) {
	if _, err := c.db.Destination(ctx, destination); err != nil {
		return nil, 0, err
	}
	page, next, err := c.db.DeadLetters(ctx, destination, trackapi.DeadLetterFilter{Reason: reason}, after, deadLetterPage)
	if err != nil || len(page) < deadLetterPage {
		next = 0
	}
	return page, next, err
}

func (c *dbClient) ReplayDeadLetters(ctx context.Context, destination int64, reason string) (int64, error) {
	if _, err := c.db.Destination(ctx, destination); err != nil {
		return 0, err
	}
	n, err := c.db.ReplayDeadLetters(ctx, destination, trackapi.DeadLetterFilter{Reason: reason}, time.Now())
	return int64(n), err
}

func (c *dbClient) PurgeDeadLetters(ctx context.Context, destination int64, reason string) (int64, error) {
	if _, err := c.db.Destination(ctx, destination); err != nil {
		return 0, err
	}
	n, err := c.db.PurgeDeadLetters(ctx, destination, trackapi.DeadLetterFilter{Reason: reason})
	return int64(n), err
}
