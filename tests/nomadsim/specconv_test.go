package main

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"nomadsim/pb/hclspec"
)

func sAttr(name, typ string, required bool) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Attr{Attr: &hclspec.Attr{Name: name, Type: typ, Required: required}}}
}

func sObj(attrs map[string]*hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Object{Object: &hclspec.Object{Attributes: attrs}}}
}

func sLit(v string) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Literal{Literal: &hclspec.Literal{Value: v}}}
}

func sDefault(p, d *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Default{Default: &hclspec.Default{Primary: p, Default: d}}}
}

// Every spec variant, decoded from HCL through the JSON round trip, gives the value hcldec gives.
func TestEveryVariantDecodes(t *testing.T) {
	inner := sObj(map[string]*hclspec.Spec{"port": sAttr("", "number", true)})
	spec := sObj(map[string]*hclspec.Spec{
		"name":  sAttr("", "string", true), // implied name from the Object key
		"alias": sAttr("other_name", "string", false),
		"mode":  sDefault(sAttr("mode", "string", false), sLit(`"fast"`)),
		"obj":   sDefault(sAttr("obj", "map(number)", false), sLit(`{ a = 1 }`)),
		"one":   {Block: &hclspec.Spec_BlockValue{BlockValue: &hclspec.Block{Nested: inner}}},
		"many":  {Block: &hclspec.Spec_BlockList{BlockList: &hclspec.BlockList{Nested: inner, MaxItems: 3}}},
		"set":   {Block: &hclspec.Spec_BlockSet{BlockSet: &hclspec.BlockSet{Nested: inner}}},
		"byname": {Block: &hclspec.Spec_BlockMap{BlockMap: &hclspec.BlockMap{
			Labels: []string{"key"}, Nested: inner}}},
		"env": {Block: &hclspec.Spec_BlockAttrs{BlockAttrs: &hclspec.BlockAttrs{Type: "string"}}},
		"pair": {Block: &hclspec.Spec_Array{Array: &hclspec.Array{Values: []*hclspec.Spec{
			sAttr("first", "string", false), sLit("2")}}}},
	})
	dec, err := ConvertSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	src := `
name = "n"
other_name = "a"
one { port = 1 }
many { port = 2 }
many { port = "3" }
set { port = 4 }
byname "x" { port = 5 }
env { A = "b" }
first = "f"
`
	enc, err := EncodeConfigBody(src, dec, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := enc.Value
	check := func(path string, got, want cty.Value) {
		t.Helper()
		if !got.RawEquals(want) {
			t.Errorf("%s: got %#v, want %#v", path, got, want)
		}
	}
	port := func(n int64) cty.Value { return cty.ObjectVal(map[string]cty.Value{"port": cty.NumberIntVal(n)}) }
	check("name", v.GetAttr("name"), cty.StringVal("n"))
	check("alias", v.GetAttr("alias"), cty.StringVal("a"))
	check("mode", v.GetAttr("mode"), cty.StringVal("fast"))
	// hcldec returns a Default's literal as written: an object, not the primary's map type.
	check("obj", v.GetAttr("obj"), cty.ObjectVal(map[string]cty.Value{"a": cty.NumberIntVal(1)}))
	check("one", v.GetAttr("one"), port(1))
	check("many", v.GetAttr("many"), cty.ListVal([]cty.Value{port(2), port(3)}))
	check("set", v.GetAttr("set"), cty.SetVal([]cty.Value{port(4)}))
	check("byname", v.GetAttr("byname"), cty.MapVal(map[string]cty.Value{"x": port(5)}))
	check("env", v.GetAttr("env"), cty.MapVal(map[string]cty.Value{"A": cty.StringVal("b")}))
	check("pair", v.GetAttr("pair"), cty.TupleVal([]cty.Value{cty.StringVal("f"), cty.NumberIntVal(2)}))

	// max_items is enforced; so is a required attribute inside a block.
	for _, bad := range []string{
		src + "many { port = 6 }\nmany { port = 7 }\n",
		strings.Replace(src, "one { port = 1 }", "one { }", 1),
	} {
		if _, err := EncodeConfigBody(bad, dec, nil); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestSpecErrorsNameThePath(t *testing.T) {
	cases := map[string]*hclspec.Spec{
		"<root>.x.default.primary: Missing name": sObj(map[string]*hclspec.Spec{
			"x": sDefault(sAttr("", "string", false), sLit(`"a"`))}),
		"<root>.y: unknown spec type": sObj(map[string]*hclspec.Spec{"y": {}}),
		`literal "word" is not a constant`: sObj(map[string]*hclspec.Spec{
			"z": sDefault(sAttr("z", "string", false), sLit("word"))}),
		"needs at least one label": sObj(map[string]*hclspec.Spec{
			"m": {Block: &hclspec.Spec_BlockMap{BlockMap: &hclspec.BlockMap{Nested: sObj(nil)}}}}),
		"has no nested spec": sObj(map[string]*hclspec.Spec{
			"b": {Block: &hclspec.Spec_BlockValue{BlockValue: &hclspec.Block{}}}}),
		`type "list(strin)"`: sObj(map[string]*hclspec.Spec{"l": sAttr("", "list(strin)", false)}),
	}
	for want, spec := range cases {
		_, err := ConvertSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want error containing %q, got %v", want, err)
		}
	}
	if _, err := ConvertSpec(nil); err == nil {
		t.Error("nil spec accepted")
	}
}

func TestHclogLineChecks(t *testing.T) {
	good := `{"@level":"info","@message":"m","@timestamp":"2026-01-02T03:04:05.123456Z"}`
	if p := checkHclogLine(good); p != "" {
		t.Errorf("good line refused: %s", p)
	}
	for _, bad := range []string{
		`plain text`,
		`{"@level":"warning","@message":"m","@timestamp":"2026-01-02T03:04:05.123456Z"}`,
		`{"@level":"info","@message":"m","@timestamp":"2026-01-02T03:04:05.123Z"}`,
		`{"@level":"info","@message":5,"@timestamp":"2026-01-02T03:04:05.123456Z"}`,
	} {
		if checkHclogLine(bad) == "" {
			t.Errorf("bad line accepted: %s", bad)
		}
	}
}
