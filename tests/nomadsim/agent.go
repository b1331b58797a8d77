package main

// `nomadsim agent-start`: the Nomad agent's start-up as seen by a driver plugin (reference §1.7,
// §5.1): scan plugin_dir (a failing stat of any entry aborts the agent; directories and files
// without an execute bit are skipped; an executable needs a matching `plugin "<file>"` block),
// then per plugin: launch #1 PluginInfo + ConfigSchema, launch #2 SetConfig twice without
// nomad_config, launch #3 the driver manager's instance (SetConfig with nomad_config, Init,
// Fingerprint and TaskEvents streams held open). Prints one JSON report on stdout.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"nomadsim/pb/base"
	"nomadsim/pb/drivers"
)

// pluginBlock is one `plugin "<file>" { args = [...] config { ... } }` of the agent file.
type pluginBlock struct {
	Name   string
	Args   []string
	Config map[string]any // nil when there is no config block
}

func parseAgentFile(path string) (pluginDir string, blocks map[string]pluginBlock, err error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return "", nil, diags
	}
	body := file.Body.(*hclsyntax.Body)
	ctx := evalContext(nil)
	if a := body.Attributes["plugin_dir"]; a != nil {
		v, d := a.Expr.Value(ctx)
		if d.HasErrors() {
			return "", nil, d
		}
		pluginDir = v.AsString()
	}
	blocks = map[string]pluginBlock{}
	for _, b := range body.Blocks {
		if b.Type != "plugin" {
			continue
		}
		if len(b.Labels) != 1 {
			return "", nil, fmt.Errorf("%s: a plugin block takes exactly one label", b.DefRange())
		}
		pb := pluginBlock{Name: b.Labels[0]}
		for n, a := range b.Body.Attributes {
			if n != "args" {
				return "", nil, fmt.Errorf("%s: unexpected attribute %q in plugin block (args, config)", a.SrcRange, n)
			}
			v, d := a.Expr.Value(ctx)
			if d.HasErrors() {
				return "", nil, d
			}
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				pb.Args = append(pb.Args, e.AsString())
			}
		}
		for _, inner := range b.Body.Blocks {
			if inner.Type != "config" {
				return "", nil, fmt.Errorf("%s: unexpected block %q in plugin block", inner.DefRange(), inner.Type)
			}
			m, err := bodyToGeneric(inner.Body, ctx)
			if err != nil {
				return "", nil, err
			}
			pb.Config = m
		}
		blocks[pb.Name] = pb
	}
	return pluginDir, blocks, nil
}

type stepLog struct {
	Launch string  `json:"launch"`
	Call   string  `json:"call"`
	OK     bool    `json:"ok"`
	Detail string  `json:"detail,omitempty"`
	Ms     float64 `json:"ms,omitempty"`
}

type agentReport struct {
	Plugin      string           `json:"plugin"`
	Steps       []stepLog        `json:"steps"`
	Info        map[string]any   `json:"plugin_info,omitempty"`
	Fingerprint map[string]any   `json:"fingerprint,omitempty"`
	Events      []map[string]any `json:"events,omitempty"`
	LogProblems []string         `json:"log_problems,omitempty"`
	Error       string           `json:"error,omitempty"`
}

func runAgentStart(args []string) int {
	fs := flag.NewFlagSet("agent-start", flag.ContinueOnError)
	pluginDir := fs.String("plugin-dir", "", "Nomad's plugin_dir (absolute); overrides plugin_dir in the config file")
	configPath := fs.String("config", "", "agent HCL file with plugin \"<file>\" { config { ... } } blocks")
	only := fs.String("name", "", "only this plugin file name")
	watch := fs.Float64("watch-s", 0, "after the first fingerprint, keep both streams open this long and fail if one ends")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(msg string) int { fmt.Fprintln(os.Stderr, "nomadsim agent-start: "+msg); return 1 }
	if *configPath == "" {
		return fail("--config is required")
	}
	dirFromFile, blocks, err := parseAgentFile(*configPath)
	if err != nil {
		return fail("agent config: " + err.Error())
	}
	dir := *pluginDir
	if dir == "" {
		dir = dirFromFile
	}
	if dir == "" || !filepath.IsAbs(dir) {
		return fail(fmt.Sprintf("plugin_dir %q must be an absolute path", dir))
	}
	found, err := scanPluginDir(dir, blocks)
	if err != nil {
		return fail(err.Error())
	}
	reports := []agentReport{}
	rc := 0
	for _, name := range found {
		if *only != "" && name != *only {
			continue
		}
		r := startOne(filepath.Join(dir, name), blocks[name], time.Duration(*watch*float64(time.Second)))
		if r.Error != "" {
			rc = 1
			fmt.Fprintf(os.Stderr, "plugin %s: %s\n", name, r.Error)
		}
		printSummary(name, r)
		reports = append(reports, r)
	}
	if len(reports) == 0 {
		return fail("no plugin in " + dir + " is referenced by a plugin block")
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(reports)
	return rc
}

// scanPluginDir applies the loader's discovery rules and returns the configured plugin files.
func scanPluginDir(dir string, blocks map[string]pluginBlock) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to read plugin directory %q: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			// Nomad aborts plugin loading, and with it the agent, on any entry it cannot stat.
			return nil, fmt.Errorf("failed to stat file %q: %w (the Nomad agent would not start)", p, err)
		}
		if st.IsDir() {
			fmt.Fprintf(os.Stderr, "skipping subdir in plugin folder: %s\n", p)
			continue
		}
		if st.Mode().Perm()&0o111 == 0 {
			fmt.Fprintf(os.Stderr, "skipping un-executable file in plugin folder: %s\n", p)
			continue
		}
		if _, ok := blocks[e.Name()]; !ok {
			fmt.Fprintf(os.Stderr, "plugin not referenced in the agent configuration file, loading skipped: %s\n", p)
			continue
		}
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, nil
}

func startOne(path string, pb pluginBlock, watch time.Duration) (r agentReport) {
	r.Plugin = path
	argv := append([]string{path}, pb.Args...)
	step := func(launch, call string, start time.Time, err error) bool {
		s := stepLog{Launch: launch, Call: call, OK: err == nil, Ms: float64(time.Since(start).Microseconds()) / 1000}
		if err != nil {
			s.Detail = err.Error()
			r.Error = fmt.Sprintf("%s %s: %s", launch, call, err)
		}
		r.Steps = append(r.Steps, s)
		return err == nil
	}
	ctx := context.Background()
	var all []*Instance
	defer func() {
		for _, inst := range all {
			for _, l := range inst.rawStderr.Lines() {
				if p := checkHclogLine(l); p != "" {
					r.LogProblems = append(r.LogProblems, p+": "+l)
				}
			}
		}
	}()
	launch := func(name string, withDriver bool) *Instance {
		t := time.Now()
		inst, err := Launch(LaunchOptions{Argv: argv, WithDriver: &withDriver})
		if inst != nil {
			all = append(all, inst)
		}
		if !step(name, "handshake", t, err) {
			return nil
		}
		return inst
	}
	kill := func(name string, inst *Instance) {
		t := time.Now()
		k := inst.Kill()
		var err error
		if !k.Graceful {
			err = errors.New("plugin did not exit after GRPCController.Shutdown; go-plugin had to SIGKILL it")
		}
		step(name, "kill", t, err)
	}

	// Launch #1: fingerprint the plugin binary.
	l1 := launch("launch1", false)
	if l1 == nil {
		return r
	}
	t := time.Now()
	info, err := l1.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err == nil {
		if p := checkPluginInfo(info); p != "" {
			err = errors.New(p)
		}
		r.Info = protoToMap(info)
	}
	if !step("launch1", "PluginInfo", t, err) {
		l1.Kill()
		return r
	}
	t = time.Now()
	schema, err := l1.Base.ConfigSchema(ctx, &base.ConfigSchemaRequest{})
	if err == nil && schema.Spec != nil {
		l1.ConfigSpec, err = ConvertSpec(schema.Spec)
	}
	if !step("launch1", "ConfigSchema", t, err) {
		l1.Kill()
		return r
	}
	kill("launch1", l1)
	spec := l1.ConfigSpec

	var packed []byte
	if spec == nil && pb.Config != nil {
		step("config", "decode", time.Now(), errors.New("the plugin has no config schema but its plugin block has a config block"))
		return r
	}
	if spec != nil {
		cfg := pb.Config
		if cfg == nil {
			cfg = map[string]any{}
		}
		t = time.Now()
		enc, err := EncodeGeneric(cfg, spec, nil)
		if !step("config", "decode", t, err) {
			return r
		}
		packed = enc.Msgpack
		// Launch #2: validate the config; Dispense and validatePluginConfig each call SetConfig.
		l2 := launch("launch2", false)
		if l2 == nil {
			return r
		}
		for i := 1; i <= 2; i++ {
			t = time.Now()
			_, err := l2.Base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: packed, PluginApiVersion: "v0.1.0"})
			if !step("launch2", fmt.Sprintf("SetConfig#%d", i), t, err) {
				l2.Kill()
				return r
			}
		}
		kill("launch2", l2)
	}

	// Launch #3: the driver manager's long-lived instance.
	l3 := launch("launch3", true)
	if l3 == nil {
		return r
	}
	defer func() {
		t := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := l3.Driver.Shutdown(sctx, &drivers.ShutdownRequest{})
		cancel()
		if status.Code(err) == codes.Unimplemented {
			err = nil
		}
		step("launch3", "Shutdown", t, err)
		l3.closeStreams()
		kill("launch3", l3)
	}()
	t = time.Now()
	_, err = l3.Base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: packed, PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMaxPort: 14512, ClientMinPort: 14000}}})
	if !step("launch3", "SetConfig", t, err) {
		return r
	}
	t = time.Now()
	_, err = l3.Driver.Init(ctx, &drivers.InitRequest{})
	if status.Code(err) == codes.Unimplemented {
		err = nil
	}
	if !step("launch3", "Init", t, err) {
		return r
	}
	t = time.Now()
	err = l3.StartStream("fingerprint", func(c context.Context) (func() (proto.Message, error), error) {
		st, err := l3.Driver.Fingerprint(c, &drivers.FingerprintRequest{})
		if err != nil {
			return nil, err
		}
		return func() (proto.Message, error) { return st.Recv() }, nil
	})
	if err == nil {
		err = l3.StartStream("events", func(c context.Context) (func() (proto.Message, error), error) {
			st, err := l3.Driver.TaskEvents(c, &drivers.TaskEventsRequest{})
			if err != nil {
				return nil, err
			}
			return func() (proto.Message, error) { return st.Recv() }, nil
		})
	}
	if !step("launch3", "open Fingerprint+TaskEvents", t, err) {
		return r
	}
	t = time.Now()
	// The client waits up to 50 s for the first fingerprint of every driver.
	msgs, ended, endErr := l3.Stream("fingerprint").Poll(1, 50*time.Second)
	if len(msgs) > 0 {
		r.Fingerprint = msgs[0]
	}
	err = nil
	switch {
	case len(msgs) == 0 && ended:
		err = fmt.Errorf("Fingerprint stream ended before the first fingerprint (%s)", orEOF(endErr))
	case len(msgs) == 0:
		err = errors.New("no fingerprint within 50 s")
	}
	if !step("launch3", "first Fingerprint", t, err) {
		return r
	}
	if watch > 0 {
		t = time.Now()
		time.Sleep(watch)
		err = nil
		for _, name := range []string{"fingerprint", "events"} {
			msgs, ended, endErr := l3.Stream(name).Poll(0, 0)
			if name == "fingerprint" && len(msgs) > 0 {
				r.Fingerprint = msgs[len(msgs)-1]
			}
			if name == "events" {
				r.Events = msgs
			}
			if ended {
				err = fmt.Errorf("%s stream ended (%s): Nomad would re-dispense the plugin at once", name, orEOF(endErr))
			}
		}
		step("launch3", fmt.Sprintf("streams open for %s", watch), t, err)
	}
	return r
}

func orEOF(s string) string {
	if s == "" {
		return "EOF"
	}
	return s
}

// printSummary shows on stderr what `nomad node status -verbose` would show for the driver.
func printSummary(name string, r agentReport) {
	if r.Fingerprint == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "driver %v (plugin file %s): %v: %v\n",
		r.Info["name"], name, r.Fingerprint["health"], r.Fingerprint["health_description"])
	attrs, _ := r.Fingerprint["attributes"].(map[string]any)
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(os.Stderr, "  %-28s = %s\n", k, renderAttribute(attrs[k]))
	}
}

// renderAttribute is Nomad's rendering of a structs.Attribute: the value, then the unit.
func renderAttribute(a any) string {
	m, _ := a.(map[string]any)
	unit, _ := m["unit"].(string)
	for _, k := range []string{"string_val", "int_val", "float_val", "bool_val"} {
		if v, ok := m[k]; ok {
			return fmt.Sprint(v) + unit
		}
	}
	return ""
}
