package admin

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/trackapi/trackapi/gen/adminapi"
)

// specYAML is admin.yaml as built into the binary, turned back into YAML once: the generated
// package embeds it as JSON.
var specYAML = sync.OnceValues(func() ([]byte, error) {
	raw, err := adminapi.GetSpecJSON()
	if err != nil {
		return nil, fmt.Errorf("admin: the embedded spec: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil { // JSON is YAML
		return nil, fmt.Errorf("admin: the embedded spec: %w", err)
	}
	blockStyle(&doc)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("admin: encoding the spec as YAML: %w", err)
	}
	return out.Bytes(), nil
})

// blockStyle drops the flow style that JSON's braces and quotes give every node.
func blockStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle | yaml.DoubleQuotedStyle
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// GetAdminSpec serves the config API's spec, for generators and the docs.
func (s *Server) GetAdminSpec(context.Context, adminapi.GetAdminSpecRequestObject) (adminapi.GetAdminSpecResponseObject, error) {
	spec, err := specYAML()
	if err != nil {
		return nil, err
	}
	return adminapi.GetAdminSpec200ApplicationyamlResponse{Body: bytes.NewReader(spec), ContentLength: int64(len(spec))}, nil
}
