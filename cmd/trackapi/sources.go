package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/trackapi/trackapi"
)

// sourcesCmd groups the commands on sources and their keys, through a running server's config
// API (--server) or the database (--data); see configHelp.
type sourcesCmd struct {
	Create     sourcesCreateCmd     `cmd:"" help:"Create a source; prints its key alone on a line (shown only this once)."`
	List       sourcesListCmd       `cmd:"" help:"List sources with their live keys' prefixes."`
	Rename     sourcesRenameCmd     `cmd:"" help:"Give a source another name."`
	Deactivate sourcesDeactivateCmd `cmd:"" help:"Make a source's keys stop working; its events stay."`
	Activate   sourcesActivateCmd   `cmd:"" help:"Make a deactivated source's live keys work again."`
	RotateKey  sourcesRotateKeyCmd  `cmd:"" name:"rotate-key" help:"Give a source a new key (printed alone on a line); the previous keys expire after --expire-previous-in."`
	Keys       sourcesKeysCmd       `cmd:"" help:"List a source's keys: id, prefix, created, expires, revoked, last used."`
	RevokeKey  sourcesRevokeKeyCmd  `cmd:"" name:"revoke-key" help:"Make one key stop working at once (running servers: within 2 s)."`
}

// Help is the rule of --server and --data.
func (sourcesCmd) Help() string { return configHelp }

type sourcesCreateCmd struct {
	configFlags
	Site string `required:"" help:"Site id (tc_s) the source sends for."`
	Name string `required:"" help:"A name for people."`
}

func (c *sourcesCreateCmd) Run(env *runEnv) error {
	return c.with(true, func(cc configClient) error {
		key, err := cc.CreateSource(env.ctx, c.Site, c.Name)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(env.stdout, key) // the key alone, so that scripts can capture it
		return err
	})
}

type sourcesListCmd struct {
	configFlags
}

func (c *sourcesListCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		list, err := cc.Sources(env.ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSITE\tNAME\tACTIVE\tCREATED\tLIVE KEYS")
		for _, s := range list {
			keys, err := cc.SourceKeys(env.ctx, s.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%t\t%s\t%s\n", s.ID, s.Site, s.Name, s.Active, s.CreatedAt.UTC().Format(time.RFC3339), liveKeys(keys, now))
		}
		return tw.Flush()
	})
}

// liveKeys is the LIVE KEYS column: the live keys' prefixes, with their expiry when they have one.
func liveKeys(keys []trackapi.SourceKey, now time.Time) string {
	live := ""
	for _, k := range keys {
		if !k.Live(now) {
			continue
		}
		prefix := k.Prefix
		if prefix == "" {
			prefix = fmt.Sprintf("key %d", k.ID) // made before keys had prefixes
		}
		if !k.ExpiresAt.IsZero() {
			prefix += " (expires " + k.ExpiresAt.UTC().Format(time.RFC3339) + ")"
		}
		if live != "" {
			live += ", "
		}
		live += prefix
	}
	return live
}

// sourceIDCmd is the shape of the commands on one source.
type sourceIDCmd struct {
	configFlags
	ID int64 `arg:"" help:"The source's id (see sources list)."`
}

// update applies change to the source.
func (c *sourceIDCmd) update(env *runEnv, change sourceChange) error {
	return c.with(false, func(cc configClient) error {
		return cc.UpdateSource(env.ctx, c.ID, change)
	})
}

type sourcesRenameCmd struct {
	sourceIDCmd
	Name string `arg:"" help:"The new name."`
}

func (c *sourcesRenameCmd) Run(env *runEnv) error {
	return c.update(env, sourceChange{Name: &c.Name})
}

type sourcesDeactivateCmd struct{ sourceIDCmd }

func (c *sourcesDeactivateCmd) Run(env *runEnv) error {
	active := false
	return c.update(env, sourceChange{Active: &active})
}

type sourcesActivateCmd struct{ sourceIDCmd }

func (c *sourcesActivateCmd) Run(env *runEnv) error {
	active := true
	return c.update(env, sourceChange{Active: &active})
}

type sourcesRotateKeyCmd struct {
	sourceIDCmd
	ExpirePreviousIn time.Duration `default:"24h" placeholder:"DURATION" help:"How long the previous keys keep working: 0 (at once) to 168h (7 days)."`
}

func (c *sourcesRotateKeyCmd) Run(env *runEnv) error {
	if err := checkOverlap(c.ExpirePreviousIn, trackapi.MaxRotationOverlap); err != nil {
		return err
	}
	return c.with(false, func(cc configClient) error {
		key, err := cc.RotateSourceKey(env.ctx, c.ID, c.ExpirePreviousIn)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(env.stdout, key)
		return err
	})
}

type sourcesKeysCmd struct{ sourceIDCmd }

func (c *sourcesKeysCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		keys, err := cc.SourceKeys(env.ctx, c.ID)
		if err != nil {
			return err
		}
		now := time.Now()
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY ID\tPREFIX\tLIVE\tCREATED\tEXPIRES\tREVOKED\tLAST USED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%d\t%s\t%t\t%s\t%s\t%s\t%s\n", k.ID, orDash(k.Prefix), k.Live(now),
				timeOrDash(k.CreatedAt), timeOrDash(k.ExpiresAt), timeOrDash(k.RevokedAt), timeOrDash(k.LastUsedAt))
		}
		return tw.Flush()
	})
}

type sourcesRevokeKeyCmd struct {
	configFlags
	ID    int64 `arg:"" help:"The source's id."`
	KeyID int64 `arg:"" help:"The key's id (see sources keys)."`
}

func (c *sourcesRevokeKeyCmd) Run(env *runEnv) error {
	return c.with(false, func(cc configClient) error {
		return cc.RevokeSourceKey(env.ctx, c.ID, c.KeyID)
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
