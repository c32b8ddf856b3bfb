package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/trackapi/trackapi/client"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/ingest"
)

// constructors are the client's constructors of standard events. TestConstructorsMatchTheSpec
// fails when events.go has one that is not listed here.
var constructors = []any{
	client.PageView, client.Search, client.Login, client.SignUp, client.SelectContent, client.GenerateLead,
	client.AddPaymentInfo, client.AddShippingInfo, client.AddToCart, client.ViewItem, client.AddToWishlist,
	client.RemoveFromCart, client.ViewCart, client.BeginCheckout, client.ViewItemList, client.SelectItem,
	client.Purchase, client.Refund, client.SelectPromotion, client.ViewPromotion, client.AdView, client.AdClick,
}

// The spec's standard events and the client's constructors agree: each standard event has one
// constructor, each constructor makes a standard event, and each property the spec requires is
// set from one of the constructor's parameters (two calls with different arguments give two
// different values). The events they make are stored without a warning.
func TestConstructorsMatchTheSpec(t *testing.T) {
	standard, err := ingest.StandardEvents()
	if err != nil {
		t.Fatal(err)
	}

	// Every exported function of events.go that returns a gen.Event, but Custom, is listed.
	declared := constructorsDeclared(t, "events.go")
	var listed []string
	for _, f := range constructors {
		listed = append(listed, strings.TrimPrefix(runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name(), "github.com/trackapi/trackapi/client."))
	}
	slices.Sort(listed)
	if !slices.Equal(declared, listed) {
		t.Fatalf("events.go declares the constructors\n%v\nthis test lists\n%v", declared, listed)
	}

	e := newEnv(t)
	c := e.client("")
	made := map[string]bool{}
	for _, f := range constructors {
		first, second := build(t, f, 1), build(t, f, 2)
		name := first.EventName
		t.Run(name, func(t *testing.T) {
			required, ok := standard[name]
			if !ok {
				t.Fatalf("makes %s, which is not a standard event of openapi.yaml", name)
			}
			if made[name] {
				t.Fatalf("a second constructor of %s", name)
			}
			made[name] = true
			a, b := encode(t, first), encode(t, second)
			for _, prop := range required {
				if v, ok := a[prop]; !ok || string(v) == "null" {
					t.Errorf("%s is not set", prop)
				} else if string(v) == string(b[prop]) {
					t.Errorf("%s is %s whatever the arguments: not a parameter", prop, v)
				}
			}
			for _, event := range []gen.Event{first, second} {
				res, err := c.Send(context.Background(), event)
				if err != nil || res.Status != client.StatusDelivered || len(res.Warnings) != 0 {
					t.Errorf("sent: %v, warnings %+v, %v", res, res.Warnings, err)
				}
			}
		})
	}
	for _, name := range slices.Sorted(maps.Keys(standard)) {
		if !made[name] {
			t.Errorf("no constructor makes the standard event %s of openapi.yaml (requires %v)", name, standard[name])
		}
	}
}

// constructorsDeclared lists the exported functions of file that return a gen.Event, but Custom.
func constructorsDeclared(t *testing.T, file string) []string {
	t.Helper()
	parsed, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, decl := range parsed.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || !fn.Name.IsExported() || fn.Name.Name == "Custom" || fn.Type.Results == nil || len(fn.Type.Results.List) != 1 {
			continue
		}
		if sel, ok := fn.Type.Results.List[0].Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Event" {
			names = append(names, fn.Name.Name)
		}
	}
	slices.Sort(names)
	return names
}

// build calls the constructor f with arguments of its parameters' types that differ with variant.
func build(t *testing.T, f any, variant int) gen.Event {
	t.Helper()
	fn := reflect.ValueOf(f)
	args := make([]reflect.Value, fn.Type().NumIn())
	for i := range args {
		var arg any
		switch typ := fn.Type().In(i); typ {
		case reflect.TypeFor[string]():
			arg = fmt.Sprintf("s%d-%d", variant, i)
		case reflect.TypeFor[float64]():
			arg = float64(variant*10 + i)
		case reflect.TypeFor[int]():
			arg = variant*10 + i
		case reflect.TypeFor[client.Item]():
			arg = item(variant)
		case reflect.TypeFor[[]client.Item]():
			arg = []client.Item{item(variant)}
		case reflect.TypeFor[gen.User]():
			arg = client.NewUser(fmt.Sprintf("anon-%d", variant), "1")
		default:
			t.Fatalf("%v: no argument for a %v", fn, typ)
		}
		args[i] = reflect.ValueOf(arg)
	}
	return fn.Call(args)[0].Interface().(gen.Event)
}

func item(variant int) client.Item {
	return client.Item{ID: fmt.Sprintf("SKU-%d", variant), Quantity: variant, Product: client.Product{ID: "P-1", Name: "Blue runner", Price: 49.92}}
}

// encode is the event's root as the client sends it.
func encode(t *testing.T, e gen.Event) map[string]json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
