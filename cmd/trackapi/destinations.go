package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/sqlite"
	"github.com/trackapi/trackapi/webhook"
)

// destinationsCmd groups the commands on destinations. A running server picks up their changes
// within 2 s.
type destinationsCmd struct {
	Create destinationsCreateCmd `cmd:"" help:"Create a destination; prints its id alone on a line (and a webhook's signing secret once, on stderr)."`
	List   destinationsListCmd   `cmd:"" help:"List destinations with their status, lag, retries and dead letters."`
	Pause  destinationsPauseCmd  `cmd:"" help:"Stop delivering to a destination; its events wait in the log."`
	Resume destinationsResumeCmd `cmd:"" help:"Deliver to a paused destination again, from where it stopped."`
	Delete destinationsDeleteCmd `cmd:"" help:"Delete a destination with its delivery state (retries, dead letters, stats)."`

	RotateSecret destinationsRotateSecretCmd `cmd:"" name:"rotate-secret" help:"Give a webhook destination a new signing secret (printed once on stderr); requests are signed with both until the previous one expires."`
}

type destinationsCreateCmd struct {
	dataFlag
	Name            string   `required:"" help:"A name for people."`
	Type            string   `required:"" enum:"webhook,forward,kafka,file" help:"webhook, forward, kafka or file."`
	URL             string   `name:"url" help:"webhook: the endpoint; forward: the other collector's base URL."`
	Site            string   `help:"forward: the site (tc_s) on the other collector."`
	Token           string   `env:"TRACKAPI_FORWARD_TOKEN" help:"forward: the source key on the other collector ($TRACKAPI_FORWARD_TOKEN keeps it out of the process list)."`
	Brokers         []string `help:"kafka: host:port of the brokers, comma-separated."`
	Topic           string   `help:"kafka: the topic."`
	Path            string   `help:"file: the directory for the hourly NDJSON files."`
	Source          []int64  `help:"Take events of this source only (repeat for several; default: every source)."`
	ConsentCategory string   `help:"Send only events whose user.consent_categories contain this category."`
	Filter          string   `placeholder:"JSON" help:"Condition filter: {\"event_names\":[...],\"exclude_event_names\":[...],\"conditions\":[{\"path\":\"/page_type\",\"op\":\"is\",\"value\":\"home\"}]}."`
	BatchSize       int      `help:"Events a request at most (default: 100)."`
	AllowPrivate    bool     `help:"webhook, forward: allow loopback and private addresses (refused by default)."`
}

func (c *destinationsCreateCmd) Run(env *runEnv) error {
	d := trackapi.Destination{
		Name: c.Name, Type: c.Type, Sources: c.Source, ConsentCategory: c.ConsentCategory,
		Filter: []byte(c.Filter), BatchSize: c.BatchSize, Status: trackapi.DestinationActive,
		Config: trackapi.DestinationConfig{URL: c.URL, AllowPrivate: c.AllowPrivate, Site: c.Site, Token: c.Token,
			Brokers: splitList(c.Brokers), Topic: c.Topic, Path: c.Path},
	}
	var secret string
	if d.Type == trackapi.DestinationWebhook {
		var err error
		if secret, err = webhook.NewSecret(); err != nil {
			return err
		}
		d.Config.Secrets = []trackapi.SigningSecret{{Secret: secret}}
	}
	if err := deliver.ValidateDestination(d, sinkFactories(nil)); err != nil {
		return usageError{err}
	}
	db, err := openStore(c.Data, true, sqlite.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	if len(d.Sources) > 0 {
		for _, id := range d.Sources {
			if _, err := db.Source(env.ctx, id); err != nil {
				return fmt.Errorf("--source %d: %w", id, err)
			}
		}
	}
	d, err = db.CreateDestination(env.ctx, d)
	if err != nil {
		return err
	}
	if secret != "" {
		// Once, on stderr, so that scripts capturing the id from stdout do not log it by accident.
		fmt.Fprintf(env.stderr, "signing secret of destination %d (shown only this once): %s\n", d.ID, secret)
	}
	_, err = fmt.Fprintln(env.stdout, d.ID)
	return err
}

func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

type destinationsListCmd struct {
	dataFlag
}

func (c *destinationsListCmd) Run(env *runEnv) error {
	return withStore(c.Data, false, func(db *sqlite.DB) error {
		list, err := db.Destinations(env.ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tTYPE\tSTATUS\tLAG EVENTS\tLAG\tRETRIES\tDEAD LETTERS\tTARGET")
		now := time.Now()
		for _, d := range list {
			state, err := db.DeliveryState(env.ctx, d.ID)
			if err != nil {
				return err
			}
			lag := "-"
			if !state.LagSince.IsZero() {
				lag = now.Sub(state.LagSince).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", d.ID, d.Name, d.Type, d.Status,
				state.LagEvents, lag, state.Retries, state.DeadLetters, target(d))
		}
		return tw.Flush()
	})
}

// target says where a destination sends, without credentials.
func target(d trackapi.Destination) string {
	switch d.Type {
	case trackapi.DestinationKafka:
		return strings.Join(d.Config.Brokers, ",") + "/" + d.Config.Topic
	case trackapi.DestinationFile:
		return d.Config.Path
	}
	u := d.Config.URL
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return u
}

// destinationIDCmd is the shape of pause, resume and delete: a data directory and an id.
type destinationIDCmd struct {
	dataFlag
	ID int64 `arg:"" help:"The destination's id (see destinations list)."`
}

type destinationsPauseCmd struct{ destinationIDCmd }

func (c *destinationsPauseCmd) Run(env *runEnv) error {
	return c.setStatus(env, trackapi.DestinationPaused)
}

type destinationsResumeCmd struct{ destinationIDCmd }

func (c *destinationsResumeCmd) Run(env *runEnv) error {
	return c.setStatus(env, trackapi.DestinationActive)
}

func (c *destinationIDCmd) setStatus(env *runEnv, status string) error {
	return withStore(c.Data, false, func(db *sqlite.DB) error {
		d, err := db.Destination(env.ctx, c.ID)
		if err != nil {
			return err
		}
		d.Status = status
		_, err = db.UpdateDestination(env.ctx, d)
		return err
	})
}

type destinationsRotateSecretCmd struct {
	destinationIDCmd
	ExpirePreviousIn time.Duration `default:"24h" placeholder:"DURATION" help:"How long the previous secret keeps signing too: 0 (at once) to 168h (7 days)."`
}

func (c *destinationsRotateSecretCmd) Run(env *runEnv) error {
	if c.ExpirePreviousIn < 0 || c.ExpirePreviousIn > webhook.MaxSecretOverlap {
		return usageError{fmt.Errorf("--expire-previous-in must be between 0 and %s", webhook.MaxSecretOverlap)}
	}
	db, err := openStore(c.Data, false, sqlite.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	d, err := db.Destination(env.ctx, c.ID)
	if err != nil {
		return err
	}
	if d.Type != trackapi.DestinationWebhook {
		return fmt.Errorf("destination %d is a %s destination; only webhooks are signed", d.ID, d.Type)
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return err
	}
	d.Config.Secrets = webhook.RotateSecrets(d.Config.Secrets, secret, time.Now(), c.ExpirePreviousIn)
	if _, err := db.UpdateDestination(env.ctx, d); err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "new signing secret of destination %d (shown only this once): %s\n", d.ID, secret)
	return nil
}

type destinationsDeleteCmd struct{ destinationIDCmd }

func (c *destinationsDeleteCmd) Run(env *runEnv) error {
	return withStore(c.Data, false, func(db *sqlite.DB) error {
		return db.DeleteDestination(env.ctx, c.ID)
	})
}

// deadLettersCmd lists and replays a destination's dead letters.
type deadLettersCmd struct {
	List   deadLettersListCmd   `cmd:"" help:"List a destination's dead letters, oldest first."`
	Replay deadLettersReplayCmd `cmd:"" help:"Send a destination's dead letters again (all, or those of --reason)."`
}

type deadLettersFlags struct {
	dataFlag
	Destination int64  `required:"" help:"The destination's id."`
	Reason      string `help:"Only dead letters of this kind (rejected, failed) or reason (http_400, timeout, ...)."`
}

type deadLettersListCmd struct {
	deadLettersFlags
}

func (c *deadLettersListCmd) Run(env *runEnv) error {
	return withStore(c.Data, false, func(db *sqlite.DB) error {
		if _, err := db.Destination(env.ctx, c.Destination); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tEVENT\tKIND\tREASON\tATTEMPTS\tFIRST FAILED\tFAILED\tERROR")
		filter := trackapi.DeadLetterFilter{Reason: c.Reason}
		for after := int64(0); ; {
			page, next, err := db.DeadLetters(env.ctx, c.Destination, filter, after, 1000)
			if err != nil {
				return err
			}
			for _, d := range page {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Seq, d.EventName, d.Kind, d.Reason, d.Attempts,
					d.FirstFailedAt.UTC().Format(time.RFC3339), d.FailedAt.UTC().Format(time.RFC3339), oneLine(d.Error, 120))
			}
			if len(page) < 1000 {
				break
			}
			after = next
		}
		return tw.Flush()
	})
}

type deadLettersReplayCmd struct {
	deadLettersFlags
}

func (c *deadLettersReplayCmd) Run(env *runEnv) error {
	return withStore(c.Data, false, func(db *sqlite.DB) error {
		if _, err := db.Destination(env.ctx, c.Destination); err != nil {
			return err
		}
		n, err := db.ReplayDeadLetters(env.ctx, c.Destination, trackapi.DeadLetterFilter{Reason: c.Reason}, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "%d dead letters queued for delivery again\n", n)
		return nil
	})
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
