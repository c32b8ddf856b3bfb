package apidocs

import (
	"bytes"
	"encoding/json"
	"fmt"

	"gopkg.in/yaml.v3"
)

// JSON returns the YAML document doc as JSON, indented, with the keys of each mapping in the
// order of the YAML (a spec reads as written, info first; encoding/json would sort them). Scalars
// keep their YAML types: 3.0 and true stay a number and a boolean, '200' stays a string, and a
// timestamp, which JSON has no type for, is the string as written. Aliases are expanded. A
// document JSON cannot hold (a merge key, a key that is not a scalar, a number out of range) is
// an error.
func JSON(doc []byte) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("apidocs: reading YAML: %w", err)
	}
	var compact bytes.Buffer
	c := converter{b: &compact}
	if err := c.write(&root); err != nil {
		return nil, fmt.Errorf("apidocs: converting YAML to JSON: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("apidocs: converting YAML to JSON: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// maxNodes bounds the nodes written, aliases expanded: the specs have a few thousand, and a
// document of aliases of aliases would otherwise expand exponentially (yaml.v3 bounds
// that when decoding into values, not into nodes).
const maxNodes = 1 << 20

// converter writes a YAML node tree as compact JSON to b.
type converter struct {
	b     *bytes.Buffer
	nodes int // written so far
}

func (c *converter) write(n *yaml.Node) error {
	if c.nodes++; c.nodes > maxNodes {
		return fmt.Errorf("more than %d nodes, aliases expanded", maxNodes)
	}
	b := c.b
	switch n.Kind {
	case 0, yaml.DocumentNode:
		if len(n.Content) == 0 { // an empty document
			b.WriteString("null")
			return nil
		}
		return c.write(n.Content[0])
	case yaml.AliasNode:
		return c.write(n.Alias)
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
				return fmt.Errorf("line %d: a key JSON cannot hold", k.Line)
			}
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeString(b, k.Value); err != nil {
				return err
			}
			b.WriteByte(':')
			if err := c.write(v); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := c.write(item); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case yaml.ScalarNode:
		return writeScalar(b, n)
	}
	return fmt.Errorf("line %d: a YAML node of kind %d", n.Line, n.Kind)
}

func writeScalar(b *bytes.Buffer, n *yaml.Node) error {
	var v any
	switch n.ShortTag() {
	case "!!null":
		b.WriteString("null")
		return nil
	case "!!bool":
		var x bool
		if err := n.Decode(&x); err != nil {
			return err
		}
		v = x
	case "!!int", "!!float":
		if err := n.Decode(&v); err != nil {
			return err
		}
	default: // !!str, !!timestamp (as written), !!binary (its base64)
		return writeString(b, n.Value)
	}
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	b.Write(j)
	return nil
}

func writeString(b *bytes.Buffer, s string) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode's newline
	return nil
}
