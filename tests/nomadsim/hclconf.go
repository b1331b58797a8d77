package main

// The path a config block takes inside Nomad before it reaches a plugin (reference §3.1, §3.2):
// the agent or job file is first read into a generic map (blocks become lists of maps), that map
// is JSON-encoded and parsed again as HCL JSON, decoded with the plugin's spec (defaults apply,
// unknown keys and type mismatches fail), and the resulting cty value is encoded with go-cty's
// msgpack using the value's own type. Those bytes are what SetConfig / StartTask carry.

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	ctymsgpack "github.com/zclconf/go-cty/cty/msgpack"
)

// nomadFunctions are the functions Nomad offers in config blocks and spec literals.
func nomadFunctions() map[string]function.Function {
	return map[string]function.Function{
		"abs":        stdlib.AbsoluteFunc,
		"coalesce":   stdlib.CoalesceFunc,
		"concat":     stdlib.ConcatFunc,
		"hasindex":   stdlib.HasIndexFunc,
		"int":        stdlib.IntFunc,
		"jsondecode": stdlib.JSONDecodeFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"length":     stdlib.LengthFunc,
		"lower":      stdlib.LowerFunc,
		"max":        stdlib.MaxFunc,
		"min":        stdlib.MinFunc,
		"reverse":    stdlib.ReverseFunc,
		"strlen":     stdlib.StrlenFunc,
		"substr":     stdlib.SubstrFunc,
		"upper":      stdlib.UpperFunc,
	}
}

// Encoded is one config block after Nomad's pipeline.
type Encoded struct {
	Msgpack []byte
	Value   cty.Value
}

// DiagError carries HCL diagnostics; its text names the offending argument or block.
type DiagError struct {
	Stage string // "parse" (the file itself) or "decode" (against the plugin's schema)
	Diags hcl.Diagnostics
}

func (e *DiagError) Error() string { return e.Stage + ": " + e.Diags.Error() }

func evalContext(vars map[string]string) *hcl.EvalContext {
	ctx := &hcl.EvalContext{Functions: nomadFunctions()}
	if len(vars) > 0 {
		ctx.Variables = map[string]cty.Value{}
		for k, v := range vars {
			ctx.Variables[k] = cty.StringVal(v)
		}
	}
	return ctx
}

// EncodeConfigBody runs the HCL text of a config {} body through Nomad's pipeline.
// vars are the task environment for a task config (nil for the plugin config).
func EncodeConfigBody(src string, spec hcldec.Spec, vars map[string]string) (*Encoded, error) {
	file, diags := hclsyntax.ParseConfig([]byte(src), "config.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, &DiagError{"parse", diags}
	}
	generic, err := bodyToGeneric(file.Body.(*hclsyntax.Body), evalContext(vars))
	if err != nil {
		return nil, err
	}
	return EncodeGeneric(generic, spec, vars)
}

// EncodeGeneric is ParseHclInterface + EncodeDriverConfig for an already generic map.
func EncodeGeneric(generic map[string]any, spec hcldec.Spec, vars map[string]string) (*Encoded, error) {
	raw, err := json.Marshal(generic)
	if err != nil {
		return nil, fmt.Errorf("encode config as JSON: %w", err)
	}
	file, diags := hcljson.Parse(raw, "config.json")
	if diags.HasErrors() {
		return nil, &DiagError{"parse", diags}
	}
	val, diags := hcldec.Decode(file.Body, spec, evalContext(vars))
	if diags.HasErrors() {
		return nil, &DiagError{"decode", diags}
	}
	packed, err := ctymsgpack.Marshal(val, val.Type())
	if err != nil {
		return nil, fmt.Errorf("msgpack-encode the config value: %w", err)
	}
	return &Encoded{Msgpack: packed, Value: val}, nil
}

// bodyToGeneric reads an HCL body the way Nomad's config loaders see it: attributes become
// values, each block becomes one more map appended to a list under its type, and block labels
// nest as further single-key lists (`b "x" { }` -> {"b": [{"x": [{...}]}]}).
func bodyToGeneric(body *hclsyntax.Body, ctx *hcl.EvalContext) (map[string]any, error) {
	out := map[string]any{}
	names := make([]string, 0, len(body.Attributes))
	for n := range body.Attributes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		attr := body.Attributes[n]
		val, diags := attr.Expr.Value(ctx)
		if diags.HasErrors() {
			return nil, &DiagError{"parse", diags}
		}
		g, err := ctyToGeneric(val)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", n, err)
		}
		out[n] = g
	}
	for _, blk := range body.Blocks {
		inner, err := bodyToGeneric(blk.Body, ctx)
		if err != nil {
			return nil, err
		}
		var item any = inner
		for i := len(blk.Labels) - 1; i >= 0; i-- {
			item = map[string]any{blk.Labels[i]: []any{item}}
		}
		list, _ := out[blk.Type].([]any)
		out[blk.Type] = append(list, item)
	}
	return out, nil
}

func ctyToGeneric(v cty.Value) (any, error) {
	if !v.IsWhollyKnown() {
		return nil, fmt.Errorf("value is not known")
	}
	raw, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return nil, err
	}
	var g any
	dec := json.NewDecoder(bytesReader(raw))
	dec.UseNumber() // keep number text exact, as Nomad's JSON round trip does
	if err := dec.Decode(&g); err != nil {
		return nil, err
	}
	return g, nil
}

// ValueJSON renders a decoded config value for the test client.
func ValueJSON(v cty.Value) json.RawMessage {
	raw, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return json.RawMessage(fmt.Sprintf("%q", err.Error()))
	}
	return raw
}
