package admin

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/gen/ops"
	"github.com/trackapi/trackapi/internal/apidocs"
)

// GetAdminSpec serves admin.yaml as it is in the repository, for generators and the docs.
func (s *Server) GetAdminSpec(context.Context, adminapi.GetAdminSpecRequestObject) (adminapi.GetAdminSpecResponseObject, error) {
	return adminapi.GetAdminSpec200ApplicationyamlResponse{
		Body: bytes.NewReader(adminapi.SpecYAML), ContentLength: int64(len(adminapi.SpecYAML)),
	}, nil
}

// specJSON is admin.yaml as JSON, converted once.
var specJSON = sync.OnceValues(func() ([]byte, error) {
	b, err := apidocs.JSON(adminapi.SpecYAML)
	if err != nil {
		return nil, fmt.Errorf("admin: the embedded spec: %w", err)
	}
	return b, nil
})

// GetAdminSpecJson serves admin.yaml as JSON (the docs page reads this one).
func (s *Server) GetAdminSpecJson(context.Context, adminapi.GetAdminSpecJsonRequestObject) (adminapi.GetAdminSpecJsonResponseObject, error) {
	b, err := specJSON()
	if err != nil {
		return nil, err
	}
	return rawJSON(b), nil
}

// rawJSON is a 200 with a JSON body as it is: the generated response type is a map, which would
// lose the order of the keys.
type rawJSON []byte

func (r rawJSON) VisitGetAdminSpecJsonResponse(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(r)))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(r)
	return err
}

// docs is the config API's docs page, built once.
var docs = sync.OnceValues(func() (*apidocs.Docs, error) {
	return apidocs.New(apidocs.Config{Title: "trackapi config API", SpecURL: "/admin.json", BasePath: "/docs/"})
})

// withDocs is the operations API of ops.yaml with the config API's docs page in place of the
// collect API's: the admin listener documents its own API (the collect API's spec stays at
// /openapi.yaml, as on the public listener).
type withDocs struct {
	ops.ServerInterface
}

// GetDocs serves the config API's docs page. It needs no token: the page holds no data, and
// "Try it out" sends the token given to its "Authorize".
func (withDocs) GetDocs(c echo.Context) error {
	d, err := docs()
	if err != nil {
		return err
	}
	d.ServePage(c.Response())
	return nil
}

// GetDocsAsset serves a file of the docs page.
func (withDocs) GetDocsAsset(c echo.Context, asset string) error {
	d, err := docs()
	if err != nil {
		return err
	}
	if !d.ServeAsset(c.Response(), c.Request(), asset) {
		return apiError(http.StatusNotFound, "not_found", "no such file of the docs page: "+asset)
	}
	return nil
}
