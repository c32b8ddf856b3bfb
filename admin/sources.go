package admin

import (
	"context"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/sources"
)

// ListSources pages through the sources by id.
func (s *Server) ListSources(ctx context.Context, req adminapi.ListSourcesRequestObject) (adminapi.ListSourcesResponseObject, error) {
	after, err := parseCursor(req.Params.After)
	if err != nil {
		return nil, err
	}
	list, err := s.cfg.Sources.List(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	page := adminapi.SourcePage{Items: []adminapi.Source{}}
	limit := pageLimit(req.Params.Limit)
	for _, src := range list {
		if src.ID <= after {
			continue
		}
		if len(page.Items) == limit {
			page.Next = formatCursor(page.Items[len(page.Items)-1].Id)
			break
		}
		item, err := s.sourceOut(ctx, src, now)
		if err != nil {
			return nil, err
		}
		page.Items = append(page.Items, item)
	}
	return adminapi.ListSources200JSONResponse(page), nil
}

// CreateSource makes a source with its first key; the key is in this answer only.
func (s *Server) CreateSource(ctx context.Context, req adminapi.CreateSourceRequestObject) (adminapi.CreateSourceResponseObject, error) {
	name := req.Body.Site // a name is for people; the site will do until one is given
	if req.Body.Name != nil && *req.Body.Name != "" {
		name = *req.Body.Name
	}
	src, key, err := s.cfg.Sources.Create(ctx, req.Body.Site, name)
	if err != nil {
		return nil, err
	}
	out, err := s.sourceOut(ctx, src, s.now())
	if err != nil {
		return nil, err
	}
	return adminapi.CreateSource201JSONResponse{Source: out, Key: newKeyOut(key, nil)}, nil
}

// GetSource returns one source.
func (s *Server) GetSource(ctx context.Context, req adminapi.GetSourceRequestObject) (adminapi.GetSourceResponseObject, error) {
	out, err := s.sourceByID(ctx, req.SourceId)
	if err != nil {
		return nil, err
	}
	return adminapi.GetSource200JSONResponse(out), nil
}

// UpdateSource renames, deactivates or reactivates a source.
func (s *Server) UpdateSource(ctx context.Context, req adminapi.UpdateSourceRequestObject) (adminapi.UpdateSourceResponseObject, error) {
	if _, err := s.cfg.Sources.Source(ctx, req.SourceId); err != nil {
		return nil, err
	}
	if req.Body.Name != nil {
		if *req.Body.Name == "" {
			return nil, badRequest("name: must not be empty")
		}
		if err := s.cfg.Sources.Rename(ctx, req.SourceId, *req.Body.Name); err != nil {
			return nil, err
		}
	}
	if req.Body.Active != nil {
		if err := s.cfg.Sources.SetActive(ctx, req.SourceId, *req.Body.Active); err != nil {
			return nil, err
		}
	}
	out, err := s.sourceByID(ctx, req.SourceId)
	if err != nil {
		return nil, err
	}
	return adminapi.UpdateSource200JSONResponse(out), nil
}

// ListSourceKeys lists a source's keys, newest first, without the keys.
func (s *Server) ListSourceKeys(ctx context.Context, req adminapi.ListSourceKeysRequestObject) (adminapi.ListSourceKeysResponseObject, error) {
	if _, err := s.cfg.Sources.Source(ctx, req.SourceId); err != nil {
		return nil, err
	}
	keys, err := s.cfg.Sources.Keys(ctx, req.SourceId)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := adminapi.SourceKeyList{Items: make([]adminapi.SourceKey, 0, len(keys))}
	for i := len(keys) - 1; i >= 0; i-- {
		k := keys[i]
		out.Items = append(out.Items, adminapi.SourceKey{Id: k.ID, Prefix: k.Prefix, Live: k.Live(now), CreatedAt: k.CreatedAt.UTC(),
			ExpiresAt: optTime(k.ExpiresAt), RevokedAt: optTime(k.RevokedAt), LastUsedAt: optTime(k.LastUsedAt)})
	}
	return adminapi.ListSourceKeys200JSONResponse(out), nil
}

// RotateSourceKey makes a new key; the source's other live keys expire after the overlap.
func (s *Server) RotateSourceKey(ctx context.Context, req adminapi.RotateSourceKeyRequestObject) (adminapi.RotateSourceKeyResponseObject, error) {
	if _, err := s.cfg.Sources.Source(ctx, req.SourceId); err != nil {
		return nil, err
	}
	overlap := sources.DefaultRotationOverlap
	if req.Body != nil && req.Body.ExpirePreviousAfterSeconds != nil {
		overlap = time.Duration(*req.Body.ExpirePreviousAfterSeconds) * time.Second
	}
	key, err := s.cfg.Sources.RotateKey(ctx, req.SourceId, overlap)
	if err != nil {
		return nil, err
	}
	previous := key.Stored.CreatedAt.Add(overlap).UTC()
	return adminapi.RotateSourceKey201JSONResponse(newKeyOut(key, &previous)), nil
}

// RevokeSourceKey revokes one key of a source.
func (s *Server) RevokeSourceKey(ctx context.Context, req adminapi.RevokeSourceKeyRequestObject) (adminapi.RevokeSourceKeyResponseObject, error) {
	if err := s.cfg.Sources.RevokeKey(ctx, req.SourceId, req.KeyId); err != nil {
		return nil, err
	}
	return adminapi.RevokeSourceKey204Response{}, nil
}

// sourceByID reads one source as the API shows it.
func (s *Server) sourceByID(ctx context.Context, id int64) (adminapi.Source, error) {
	src, err := s.cfg.Sources.Source(ctx, id)
	if err != nil {
		return adminapi.Source{}, err
	}
	return s.sourceOut(ctx, src, s.now())
}

// sourceOut is a source as the API shows it, with its count of live keys.
func (s *Server) sourceOut(ctx context.Context, src trackapi.Source, now time.Time) (adminapi.Source, error) {
	keys, err := s.cfg.Sources.Keys(ctx, src.ID)
	if err != nil {
		return adminapi.Source{}, err
	}
	live := 0
	for _, k := range keys {
		if k.Live(now) {
			live++
		}
	}
	return adminapi.Source{Id: src.ID, Site: src.Site, Name: src.Name, Active: src.Active, LiveKeys: live,
		CreatedAt: src.CreatedAt.UTC()}, nil
}

// newKeyOut is a key as made, shown this once.
func newKeyOut(k sources.NewKey, previousExpireAt *time.Time) adminapi.NewSourceKey {
	return adminapi.NewSourceKey{Id: k.Stored.ID, Key: k.Key, Prefix: k.Stored.Prefix, CreatedAt: k.Stored.CreatedAt.UTC(),
		PreviousExpireAt: previousExpireAt}
}

// optTime is a time for an optional field: nil when zero.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
