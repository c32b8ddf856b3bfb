package admin

import (
	"context"
	"errors"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admintokens"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// defaultTokenDays is how long a token made through the API works when the request does not say.
const defaultTokenDays = 90

// ListAdminTokens lists the tokens that are not revoked, newest first, by prefix.
func (s *Server) ListAdminTokens(ctx context.Context, _ adminapi.ListAdminTokensRequestObject) (adminapi.ListAdminTokensResponseObject, error) {
	list, err := s.cfg.Tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	out := adminapi.AdminTokenList{Items: make([]adminapi.AdminToken, 0, len(list))}
	for i := len(list) - 1; i >= 0; i-- {
		if !list[i].RevokedAt.IsZero() {
			continue
		}
		out.Items = append(out.Items, adminTokenOut(list[i]))
	}
	return adminapi.ListAdminTokens200JSONResponse(out), nil
}

// CreateAdminToken makes a token; it is in this answer only.
func (s *Server) CreateAdminToken(ctx context.Context, req adminapi.CreateAdminTokenRequestObject) (adminapi.CreateAdminTokenResponseObject, error) {
	days := defaultTokenDays
	if req.Body.ExpiresInDays != nil {
		days = *req.Body.ExpiresInDays
	}
	made, err := s.cfg.Tokens.Create(ctx, req.Body.Name, trackapi.AdminScope(req.Body.Scope), time.Duration(days)*24*time.Hour)
	if errors.Is(err, admintokens.ErrInvalid) {
		return nil, badRequest("%v", err)
	}
	if err != nil {
		return nil, err
	}
	return adminapi.CreateAdminToken201JSONResponse(adminapi.AdminTokenCreated{
		AdminToken: adminTokenOut(made.Stored), Token: made.Token}), nil
}

// RevokeAdminToken revokes a token; it stops working at once here.
func (s *Server) RevokeAdminToken(ctx context.Context, req adminapi.RevokeAdminTokenRequestObject) (adminapi.RevokeAdminTokenResponseObject, error) {
	if err := s.cfg.Tokens.Revoke(ctx, req.TokenId); err != nil {
		return nil, err
	}
	return adminapi.RevokeAdminToken204Response{}, nil
}

func adminTokenOut(t trackapi.AdminToken) adminapi.AdminToken {
	return adminapi.AdminToken{Id: t.ID, Name: t.Name, Scope: adminapi.AdminScope(t.Scope), Prefix: t.Prefix,
		CreatedAt: t.CreatedAt.UTC(), ExpiresAt: optTime(t.ExpiresAt), LastUsedAt: optTime(t.LastUsedAt)}
}
