package main

// Converts the hclspec.Spec a plugin returns (ConfigSchema, TaskConfigSchema) into an hcldec.Spec
// with the rules Nomad's client applies (reference §3.4): an Object key is the implied name of a
// direct child; Default, Block.nested, list/set/map nesting and Array elements get no implied
// name; Attr types are bare HCL type expressions; Literal values are HCL expressions evaluated
// with Nomad's spec functions and no variables. Anything Nomad would refuse is an error naming
// the path inside the schema.

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"nomadsim/pb/hclspec"
)

// ConvertSpec turns a plugin's schema into a decoder spec, or fails the way Nomad would.
func ConvertSpec(s *hclspec.Spec) (hcldec.Spec, error) {
	if s == nil {
		return nil, fmt.Errorf("nil spec given")
	}
	return convert(s, "", "<root>")
}

func convert(s *hclspec.Spec, implied, path string) (hcldec.Spec, error) {
	if s == nil {
		return nil, fmt.Errorf("%s: nil spec", path)
	}
	switch b := s.GetBlock().(type) {
	case *hclspec.Spec_Object:
		return convertObject(b.Object, path)
	case *hclspec.Spec_Array:
		if b.Array == nil {
			return nil, fmt.Errorf("%s: empty array spec", path)
		}
		tuple := make(hcldec.TupleSpec, 0, len(b.Array.GetValues()))
		for i, v := range b.Array.GetValues() {
			sub, err := convert(v, "", fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			tuple = append(tuple, sub)
		}
		return tuple, nil
	case *hclspec.Spec_Attr:
		return convertAttr(b.Attr, implied, path)
	case *hclspec.Spec_BlockValue:
		name, nested, err := blockParts(b.BlockValue.GetName(), implied, b.BlockValue.GetNested(), path)
		if err != nil {
			return nil, err
		}
		return &hcldec.BlockSpec{TypeName: name, Nested: nested, Required: b.BlockValue.GetRequired()}, nil
	case *hclspec.Spec_BlockAttrs:
		ba := b.BlockAttrs
		name := nameOr(ba.GetName(), implied)
		if name == "" {
			return nil, fmt.Errorf("%s: missing name in block_attrs spec", path)
		}
		ty, err := parseType(ba.GetType(), path)
		if err != nil {
			return nil, err
		}
		return &hcldec.BlockAttrsSpec{TypeName: name, ElementType: ty, Required: ba.GetRequired()}, nil
	case *hclspec.Spec_BlockList:
		bl := b.BlockList
		name, nested, err := blockParts(bl.GetName(), implied, bl.GetNested(), path)
		if err != nil {
			return nil, err
		}
		return &hcldec.BlockListSpec{TypeName: name, Nested: nested,
			MinItems: int(bl.GetMinItems()), MaxItems: int(bl.GetMaxItems())}, nil
	case *hclspec.Spec_BlockSet:
		bs := b.BlockSet
		name, nested, err := blockParts(bs.GetName(), implied, bs.GetNested(), path)
		if err != nil {
			return nil, err
		}
		return &hcldec.BlockSetSpec{TypeName: name, Nested: nested,
			MinItems: int(bs.GetMinItems()), MaxItems: int(bs.GetMaxItems())}, nil
	case *hclspec.Spec_BlockMap:
		bm := b.BlockMap
		name, nested, err := blockParts(bm.GetName(), implied, bm.GetNested(), path)
		if err != nil {
			return nil, err
		}
		if len(bm.GetLabels()) == 0 {
			return nil, fmt.Errorf("%s: block_map spec %q needs at least one label name", path, name)
		}
		return &hcldec.BlockMapSpec{TypeName: name, LabelNames: bm.GetLabels(), Nested: nested}, nil
	case *hclspec.Spec_Default:
		d := b.Default
		// Nomad decodes both children with no implied name: an Attr here must name itself.
		primary, err := convert(d.GetPrimary(), "", path+".default.primary")
		if err != nil {
			return nil, err
		}
		def, err := convert(d.GetDefault(), "", path+".default.default")
		if err != nil {
			return nil, err
		}
		return &hcldec.DefaultSpec{Primary: primary, Default: def}, nil
	case *hclspec.Spec_Literal:
		return convertLiteral(b.Literal.GetValue(), path)
	case nil:
		return nil, fmt.Errorf("%s: unknown spec type: the Spec sets none of its `block` oneof fields", path)
	default:
		return nil, fmt.Errorf("%s: unknown spec type %T", path, b)
	}
}

func convertObject(o *hclspec.Object, path string) (hcldec.Spec, error) {
	out := hcldec.ObjectSpec{}
	keys := make([]string, 0, len(o.GetAttributes()))
	for k := range o.GetAttributes() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub, err := convert(o.GetAttributes()[k], k, path+"."+k)
		if err != nil {
			return nil, err
		}
		out[k] = sub
	}
	return out, nil
}

func convertAttr(a *hclspec.Attr, implied, path string) (hcldec.Spec, error) {
	name := nameOr(a.GetName(), implied)
	if name == "" {
		return nil, fmt.Errorf("%s: Missing name in attribute spec: an Attr that is not a direct "+
			"child of an Object (for example under Default) must set its name", path)
	}
	ty, err := parseType(a.GetType(), path)
	if err != nil {
		return nil, err
	}
	return &hcldec.AttrSpec{Name: name, Type: ty, Required: a.GetRequired()}, nil
}

func blockParts(name, implied string, nested *hclspec.Spec, path string) (string, hcldec.Spec, error) {
	name = nameOr(name, implied)
	if name == "" {
		return "", nil, fmt.Errorf("%s: missing name in block spec", path)
	}
	if nested == nil {
		return "", nil, fmt.Errorf("%s: block %q has no nested spec", path, name)
	}
	sub, err := convert(nested, "", path+"."+name)
	if err != nil {
		return "", nil, err
	}
	return name, sub, nil
}

func nameOr(name, implied string) string {
	if name != "" {
		return name
	}
	return implied
}

func parseType(src, path string) (cty.Type, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(src), "proto", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilType, fmt.Errorf("%s: type %q does not parse: %s", path, src, diags.Error())
	}
	ty, diags := typeexpr.TypeConstraint(expr)
	if diags.HasErrors() {
		return cty.NilType, fmt.Errorf("%s: type %q is not a type expression (write bare "+
			"identifiers such as string or list(string)): %s", path, src, diags.Error())
	}
	return ty, nil
}

func convertLiteral(src, path string) (hcldec.Spec, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(src), "proto", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: literal %q does not parse as an HCL expression: %s", path, src, diags.Error())
	}
	// No variables: an unquoted word is a variable reference and fails, as in Nomad.
	val, diags := expr.Value(&hcl.EvalContext{Functions: nomadFunctions()})
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: literal %q is not a constant HCL expression (strings need "+
			"quotes): %s", path, src, diags.Error())
	}
	return &hcldec.LiteralSpec{Value: val}, nil
}
