package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/labstack/echo/v4"
	echomw "github.com/oapi-codegen/echo-middleware"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/admintokens"
)

// Tokens is the admin token service (*admintokens.Service).
type Tokens interface {
	Authenticate(ctx context.Context, token string) (trackapi.AdminToken, error)
	Create(ctx context.Context, name string, scope trackapi.AdminScope, ttl time.Duration) (admintokens.NewToken, error)
	List(ctx context.Context) ([]trackapi.AdminToken, error)
	Revoke(ctx context.Context, id int64) error
}

// The security schemes of admin.yaml: a token of either scope may read, only a write token may
// change.
const (
	schemeRead  = "adminRead"
	schemeWrite = "adminWrite"
)

// tokenKey is where the authenticated token is kept in the request's context, for the strict
// handlers (which get only the context) and the request log.
type tokenKey struct{}

// tokenFromContext returns the request's authenticated token.
func tokenFromContext(ctx context.Context) (trackapi.AdminToken, bool) {
	t, ok := ctx.Value(tokenKey{}).(trackapi.AdminToken)
	return t, ok
}

// tokenOf returns the authenticated token of an Echo request.
func tokenOf(c echo.Context) (trackapi.AdminToken, bool) {
	return tokenFromContext(c.Request().Context())
}

// setToken keeps the authenticated token with the request.
func setToken(c echo.Context, t trackapi.AdminToken) {
	c.SetRequest(c.Request().WithContext(context.WithValue(c.Request().Context(), tokenKey{}, t)))
}

// authenticate is kin-openapi's AuthenticationFunc: it checks the bearer token of a request
// against the operation's security scheme. Its errors are echo.HTTPErrors, which the validator
// middleware passes on as they are: 401 for no usable token, 403 for a read token on a write
// route.
func (s *Server) authenticate(ctx context.Context, in *openapi3filter.AuthenticationInput) error {
	c := echomw.GetEchoContext(ctx)
	if c == nil {
		return errors.New("admin: no echo context in the validator's context")
	}
	raw, ok := bearer(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok {
		return apiError(http.StatusUnauthorized, "unauthorized", "send an admin token: Authorization: Bearer <token>")
	}
	token, err := s.cfg.Tokens.Authenticate(c.Request().Context(), raw)
	if err != nil {
		var authErr *admintokens.AuthError
		if errors.As(err, &authErr) {
			return apiError(http.StatusUnauthorized, "unauthorized", authErr.Error())
		}
		return err // the store: a 503 or a 500
	}
	if in.SecuritySchemeName == schemeWrite && !token.Scope.Allows(trackapi.ScopeWrite) {
		setToken(c, token)
		return apiError(http.StatusForbidden, "forbidden",
			fmt.Sprintf("this request changes something and needs a token of scope write; this one (%s) is %s", token.Prefix, token.Scope))
	}
	setToken(c, token)
	return nil
}

// bearer reads the token of an Authorization header.
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.ToLower(scheme)), []byte("bearer")) != 1 {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// tokenParams are query parameters that look like credentials. A token in a URL ends up in
// proxies' and servers' logs and in browser history, so a request with one is refused whatever it
// carries, rather than ignoring the parameter and letting the habit spread.
var tokenParams = []string{"token", "access_token", "admin_token", "api_key", "apikey", "key"}

// refuseTokenInURL answers 401 to a request with a credential in its query string.
func refuseTokenInURL(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		query := c.Request().URL.Query()
		for _, p := range tokenParams {
			if query.Has(p) {
				return apiError(http.StatusUnauthorized, "unauthorized",
					"admin tokens are not accepted in the URL (it ends up in logs); send Authorization: Bearer <token>")
			}
		}
		return next(c)
	}
}
