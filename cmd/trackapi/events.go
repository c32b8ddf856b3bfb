package main

import (
	"bufio"
	"encoding/json"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/sqlite"
)

type eventsCmd struct {
	Export eventsExportCmd `cmd:"" help:"Write stored events as NDJSON, oldest first, one stored event a line."`
}

type eventsExportCmd struct {
	dataFlag
	Source int64 `placeholder:"ID" help:"Export only this source's events (0: all)."`
}

// exportPage is how many events one read of the event log returns.
const exportPage = 1000

// Run reads the event log page by page through the store's read connections (SQLite's WAL), so
// it needs little memory and works while a server writes to the same directory.
func (c *eventsExportCmd) Run(env *runEnv) error {
	db, err := openStore(c.Data, false, sqlite.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriterSize(env.stdout, 64<<10)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	filter := trackapi.EventFilter{SourceID: c.Source}
	for after := int64(0); ; {
		events, next, err := db.ReadEvents(env.ctx, after, filter, exportPage)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		if len(events) < exportPage {
			break
		}
		after = next
	}
	return w.Flush()
}
