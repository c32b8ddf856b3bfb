package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/trackapi/trackapi/sources"
	"github.com/trackapi/trackapi/sqlite"
)

// sourcesCmd groups the commands on sources and their keys. They work beside a running server on
// the same directory, which sees their changes within 2 s.
type sourcesCmd struct {
	Create     sourcesCreateCmd     `cmd:"" help:"Create a source; prints its key alone on a line (shown only this once)."`
	List       sourcesListCmd       `cmd:"" help:"List sources with their live keys' prefixes."`
	Deactivate sourcesDeactivateCmd `cmd:"" help:"Make a source's keys stop working; its events stay."`
	RotateKey  sourcesRotateKeyCmd  `cmd:"" name:"rotate-key" help:"Give a source a new key (printed alone on a line); the previous keys expire after --expire-previous-in."`
	Keys       sourcesKeysCmd       `cmd:"" help:"List a source's keys: id, prefix, created, expires, revoked, last used."`
	RevokeKey  sourcesRevokeKeyCmd  `cmd:"" name:"revoke-key" help:"Make one key stop working at once (running servers: within 2 s)."`
}

type sourcesCreateCmd struct {
	dataFlag
	Site string `required:"" help:"Site id (tc_s) the source sends for."`
	Name string `required:"" help:"A name for people."`
}

func (c *sourcesCreateCmd) Run(env *runEnv) error {
	return withSources(c.Data, true, func(svc *sources.Service) error {
		_, key, err := svc.Create(env.ctx, c.Site, c.Name)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(env.stdout, key.Key) // the key alone, so that scripts can capture it
		return err
	})
}

type sourcesListCmd struct {
	dataFlag
}

func (c *sourcesListCmd) Run(env *runEnv) error {
	return withSources(c.Data, false, func(svc *sources.Service) error {
		list, err := svc.List(env.ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSITE\tNAME\tACTIVE\tCREATED\tLIVE KEYS")
		for _, s := range list {
			keys, err := svc.Keys(env.ctx, s.ID)
			if err != nil {
				return err
			}
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
			fmt.Fprintf(tw, "%d\t%s\t%s\t%t\t%s\t%s\n", s.ID, s.Site, s.Name, s.Active, s.CreatedAt.UTC().Format(time.RFC3339), live)
		}
		return tw.Flush()
	})
}

type sourcesDeactivateCmd struct {
	dataFlag
	ID int64 `arg:"" help:"The source's id (see sources list)."`
}

func (c *sourcesDeactivateCmd) Run(env *runEnv) error {
	return withSources(c.Data, false, func(svc *sources.Service) error {
		return svc.SetActive(env.ctx, c.ID, false)
	})
}

type sourcesRotateKeyCmd struct {
	dataFlag
	ID               int64         `arg:"" help:"The source's id (see sources list)."`
	ExpirePreviousIn time.Duration `default:"24h" placeholder:"DURATION" help:"How long the previous keys keep working: 0 (at once) to 168h (7 days)."`
}

func (c *sourcesRotateKeyCmd) Run(env *runEnv) error {
	return withSources(c.Data, false, func(svc *sources.Service) error {
		key, err := svc.RotateKey(env.ctx, c.ID, c.ExpirePreviousIn)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(env.stdout, key.Key)
		return err
	})
}

type sourcesKeysCmd struct {
	dataFlag
	ID int64 `arg:"" help:"The source's id (see sources list)."`
}

func (c *sourcesKeysCmd) Run(env *runEnv) error {
	return withSources(c.Data, false, func(svc *sources.Service) error {
		keys, err := svc.Keys(env.ctx, c.ID)
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
	dataFlag
	ID    int64 `arg:"" help:"The source's id."`
	KeyID int64 `arg:"" help:"The key's id (see sources keys)."`
}

func (c *sourcesRevokeKeyCmd) Run(env *runEnv) error {
	return withSources(c.Data, false, func(svc *sources.Service) error {
		return svc.RevokeKey(env.ctx, c.ID, c.KeyID)
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

// withSources opens a data directory's store and runs fn with a source service over it.
func withSources(dir string, create bool, fn func(*sources.Service) error) error {
	return withStore(dir, create, func(db *sqlite.DB) error {
		return fn(sources.New(db, sources.Options{}))
	})
}
