package main

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/webhook"
)

// destinationsCmd groups the commands on destinations, through a running server's config API
// (--server) or the database (--data); see configHelp.
type destinationsCmd struct {
	Create destinationsCreateCmd `cmd:"" help:"Create a destination; prints its id alone on a line (and a webhook's signing secret once, on stderr)."`
	List   destinationsListCmd   `cmd:"" help:"List destinations with their status, lag, retries and dead letters."`
	Pause  destinationsPauseCmd  `cmd:"" help:"Stop delivering to a destination; its events wait in the log."`
	Resume destinationsResumeCmd `cmd:"" help:"Deliver to a paused destination again, from where it stopped."`
	Delete destinationsDeleteCmd `cmd:"" help:"Delete a destination with its delivery state (retries, dead letters, stats)."`

	RotateSecret destinationsRotateSecretCmd `cmd:"" name:"rotate-secret" help:"Give a webhook destination a new signing secret (printed once on stderr); requests are signed with both until the previous one expires."`
}

// Help is the rule of --server and --data.
func (destinationsCmd) Help() string { return configHelp }

type destinationsCreateCmd struct {
	configFlags
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
	return c.with(true, func(cc configClient) error {
		id, secret, err := cc.CreateDestination(env.ctx, d)
		if err != nil {
			return err
		}
		if secret != "" {
			// Once, on stderr, so that scripts capturing the id from stdout do not log it by accident.
			fmt.Fprintf(env.stderr, "signing secret of destination %d (shown only this once): %s\n", id, secret)
		}
		_, err = fmt.Fprintln(env.stdout, id)
		return err
	})
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
	configFlags
}

func (c *destinationsListCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		list, err := cc.Destinations(env.ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tTYPE\tSTATUS\tLAG EVENTS\tLAG\tRETRIES\tDEAD LETTERS\tTARGET")
		now := time.Now()
		for _, d := range list {
			lag := "-"
			if !d.State.LagSince.IsZero() {
				lag = now.Sub(d.State.LagSince).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", d.ID, d.Name, d.Type, d.Status,
				d.State.LagEvents, lag, d.State.Retries, d.State.DeadLetters, target(d.Destination))
		}
		return tw.Flush()
	})
}

// target says where a destination sends, without credentials: a URL loses its query string and
// user info, as the config API shows it, so that both modes print the same.
func target(d trackapi.Destination) string {
	switch d.Type {
	case trackapi.DestinationKafka:
		return strings.Join(d.Config.Brokers, ",") + "/" + d.Config.Topic
	case trackapi.DestinationFile:
		return d.Config.Path
	}
	shown := d.Config.URL
	if i := strings.IndexAny(shown, "?#"); i >= 0 {
		shown = shown[:i]
	}
	if u, err := url.Parse(shown); err == nil {
		u.User = nil
		shown = u.String()
	}
	return shown
}

// destinationIDCmd is the shape of the commands on one destination.
type destinationIDCmd struct {
	configFlags
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
	return c.with(false, func(cc configClient) error {
		return cc.SetDestinationStatus(env.ctx, c.ID, status)
	})
}

type destinationsRotateSecretCmd struct {
	destinationIDCmd
	ExpirePreviousIn time.Duration `default:"24h" placeholder:"DURATION" help:"How long the previous secret keeps signing too: 0 (at once) to 168h (7 days)."`
}

func (c *destinationsRotateSecretCmd) Run(env *runEnv) error {
	if err := checkOverlap(c.ExpirePreviousIn, webhook.MaxSecretOverlap); err != nil {
		return err
	}
	return c.with(false, func(cc configClient) error {
		secret, err := cc.RotateSigningSecret(env.ctx, c.ID, c.ExpirePreviousIn)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "new signing secret of destination %d (shown only this once): %s\n", c.ID, secret)
		return nil
	})
}

type destinationsDeleteCmd struct{ destinationIDCmd }

func (c *destinationsDeleteCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		return cc.DeleteDestination(env.ctx, c.ID)
	})
}

// deadLettersCmd lists, replays and purges a destination's dead letters.
type deadLettersCmd struct {
	List   deadLettersListCmd   `cmd:"" help:"List a destination's dead letters, oldest first."`
	Replay deadLettersReplayCmd `cmd:"" help:"Send a destination's dead letters again (all, or those of --reason)."`
	Purge  deadLettersPurgeCmd  `cmd:"" help:"Delete a destination's dead letters without sending them (all, or those of --reason)."`
}

// Help is the rule of --server and --data.
func (deadLettersCmd) Help() string { return configHelp }

type deadLettersFlags struct {
	configFlags
	Destination int64  `required:"" help:"The destination's id."`
	Reason      string `help:"Only dead letters of this kind (rejected, failed) or reason (http_400, timeout, ...)."`
}

type deadLettersListCmd struct {
	deadLettersFlags
}

func (c *deadLettersListCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tEVENT\tKIND\tREASON\tATTEMPTS\tFIRST FAILED\tFAILED\tERROR")
		for after := int64(0); ; {
			page, next, err := cc.DeadLetters(env.ctx, c.Destination, c.Reason, after)
			if err != nil {
				return err
			}
			for _, d := range page {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Seq, d.EventName, d.Kind, d.Reason, d.Attempts,
					d.FirstFailedAt.UTC().Format(time.RFC3339), d.FailedAt.UTC().Format(time.RFC3339), oneLine(d.Error, 120))
			}
			if next == 0 {
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
	return c.with(false, func(cc configClient) error {
		n, err := cc.ReplayDeadLetters(env.ctx, c.Destination, c.Reason)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(env.stdout, "%d dead letters queued for delivery again\n", n)
		return err
	})
}

type deadLettersPurgeCmd struct {
	deadLettersFlags
}

func (c *deadLettersPurgeCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		n, err := cc.PurgeDeadLetters(env.ctx, c.Destination, c.Reason)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(env.stdout, "%d dead letters purged\n", n)
		return err
	})
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
