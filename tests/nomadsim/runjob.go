package main

// `nomadsim run-job`: what `nomad job run` + `nomad alloc logs -f` + `nomad alloc status -stats`
// show a job author, for a job file with one task, without a Nomad agent. It replays the agent's
// plugin start-up (plugin_dir discovery, ConfigSchema, SetConfig with the agent file's plugin
// block, Init, the first Fingerprint), then runs the task through the task-runner emulation
// (taskrunner.go: alloc dir, logmon FIFOs, TaskConfig, StartTask, kill sequence, DestroyTask) by
// the same serve commands the tests use, printing task events, stats samples and log lines as
// they arrive. A batch job runs until the task exits; a service until it exits, --run-for
// passes, or run-job gets SIGINT/SIGTERM (then the task is stopped with its kill_signal and
// kill_timeout, as `nomad job stop` does). The exit code is the task's (128+signal when killed).

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// jobTask is the one task of a job file, with the job-level facts run-job needs.
type jobTask struct {
	JobType string
	Driver  string
	Spec    TaskSpec
	Ignored []string // task-level settings the rig does not emulate
}

func parseJobFile(path string) (*jobTask, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	top := file.Body.(*hclsyntax.Body)
	jobs := blocksOf(top, "job")
	if len(jobs) != 1 || len(jobs[0].Labels) != 1 {
		return nil, fmt.Errorf("%s: expected exactly one `job \"<name>\" { ... }` block", path)
	}
	job := jobs[0]
	jt := &jobTask{JobType: "service"}
	jt.Spec.Job = job.Labels[0]
	if err := stringAttr(job.Body, "type", &jt.JobType); err != nil {
		return nil, err
	}
	if err := stringAttr(job.Body, "namespace", &jt.Spec.Namespace); err != nil {
		return nil, err
	}
	switch jt.JobType {
	case "batch", "service":
	default:
		return nil, fmt.Errorf("%s: job type %q: run-job runs batch and service jobs", path, jt.JobType)
	}
	groups := blocksOf(job.Body, "group")
	if len(groups) != 1 || len(groups[0].Labels) != 1 {
		return nil, fmt.Errorf("%s: run-job runs jobs with exactly one `group \"<name>\"` block", path)
	}
	jt.Spec.Group = groups[0].Labels[0]
	nets := blocksOf(groups[0].Body, "network")
	if len(nets) > 1 {
		return nil, fmt.Errorf("%s: group %q has more than one network block", path, jt.Spec.Group)
	}
	if len(nets) == 1 {
		ns, ignored, err := parseNetworkBlock(nets[0])
		if err != nil {
			return nil, err
		}
		jt.Spec.Network = ns
		jt.Ignored = append(jt.Ignored, ignored...)
	}
	tasks := blocksOf(groups[0].Body, "task")
	if len(tasks) != 1 || len(tasks[0].Labels) != 1 {
		return nil, fmt.Errorf("%s: run-job runs groups with exactly one `task \"<name>\"` block", path)
	}
	task := tasks[0]
	s := &jt.Spec
	s.Name = task.Labels[0]
	if err := stringAttr(task.Body, "driver", &jt.Driver); err != nil {
		return nil, err
	}
	if jt.Driver == "" {
		return nil, fmt.Errorf("%s: task %q has no driver", path, s.Name)
	}
	if err := stringAttr(task.Body, "user", &s.User); err != nil {
		return nil, err
	}
	if err := stringAttr(task.Body, "kill_signal", &s.KillSignal); err != nil {
		return nil, err
	}
	var killTimeout string
	if err := stringAttr(task.Body, "kill_timeout", &killTimeout); err != nil {
		return nil, err
	}
	if killTimeout != "" {
		d, err := time.ParseDuration(killTimeout)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%s: task %q: kill_timeout %q is not a duration such as \"5s\"", path, s.Name, killTimeout)
		}
		secs := d.Seconds()
		s.KillTimeoutS = &secs
	}
	configs := blocksOf(task.Body, "config")
	if len(configs) > 1 {
		return nil, fmt.Errorf("%s: task %q has more than one config block", path, s.Name)
	}
	if len(configs) == 1 {
		// The block's source text, given to the plugin's task schema like Nomad's jobspec does.
		c := configs[0]
		s.Config = string(src[c.OpenBraceRange.End.Byte:c.CloseBraceRange.Start.Byte])
	}
	for _, env := range blocksOf(task.Body, "env") {
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		for name, a := range env.Body.Attributes {
			v, err := attrValue(a)
			if err != nil {
				return nil, err
			}
			if !v.Type().Equals(cty.String) {
				return nil, fmt.Errorf("%s: env %s must be a string", a.SrcRange, name)
			}
			s.Env[name] = v.AsString()
		}
	}
	for _, res := range blocksOf(task.Body, "resources") {
		for name, dst := range map[string]*int64{"cpu": &s.CPU, "memory": &s.Memory, "memory_max": &s.MemoryMax} {
			if err := intAttr(res.Body, name, dst); err != nil {
				return nil, err
			}
		}
		var cores int64
		if err := intAttr(res.Body, "cores", &cores); err != nil {
			return nil, err
		}
		s.ReservedCores = int(cores)
	}
	for _, logs := range blocksOf(task.Body, "logs") {
		if a := logs.Body.Attributes["disabled"]; a != nil {
			v, err := attrValue(a)
			if err != nil {
				return nil, err
			}
			if !v.Type().Equals(cty.Bool) {
				return nil, fmt.Errorf("%s: logs.disabled must be true or false", a.SrcRange)
			}
			s.LogsDisabled = v.True()
		}
	}
	for _, b := range task.Body.Blocks {
		switch b.Type {
		case "config", "env", "resources", "logs":
		default:
			jt.Ignored = append(jt.Ignored, b.Type)
		}
	}
	return jt, nil
}

// parseNetworkBlock reads a group's `network { mode, hostname, dns { servers, searches, options } }`;
// port blocks are listed as ignored (the rig maps no ports: the host reaches a bridge alloc at
// its own address).
func parseNetworkBlock(b *hclsyntax.Block) (*NetworkSpec, []string, error) {
	ns := &NetworkSpec{}
	if err := stringAttr(b.Body, "mode", &ns.Mode); err != nil {
		return nil, nil, err
	}
	switch ns.Mode {
	case "", "host", "bridge", "none":
	default:
		return nil, nil, fmt.Errorf("%s: network mode %q: the rig emulates host, bridge and none", b.TypeRange, ns.Mode)
	}
	if err := stringAttr(b.Body, "hostname", &ns.Hostname); err != nil {
		return nil, nil, err
	}
	var ignored []string
	for _, inner := range b.Body.Blocks {
		switch inner.Type {
		case "dns":
			d := &DNSSpec{}
			for name, dst := range map[string]*[]string{"servers": &d.Servers, "searches": &d.Searches, "options": &d.Options} {
				if err := stringListAttr(inner.Body, name, dst); err != nil {
					return nil, nil, err
				}
			}
			ns.DNS = d
		default:
			ignored = append(ignored, "network."+inner.Type)
		}
	}
	return ns, ignored, nil
}

func stringListAttr(body *hclsyntax.Body, name string, dst *[]string) error {
	a, v, err := optionalAttr(body, name)
	if a == nil || err != nil {
		return err
	}
	if v.IsNull() || !(v.Type().IsTupleType() || v.Type().IsListType()) {
		return fmt.Errorf("%s: %s must be a list of strings", a.SrcRange, name)
	}
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() || !e.Type().Equals(cty.String) {
			return fmt.Errorf("%s: %s must be a list of strings", a.SrcRange, name)
		}
		*dst = append(*dst, e.AsString())
	}
	return nil
}

func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

// optionalAttr is body's attribute name and its value; a nil attribute when it is not set.
func optionalAttr(body *hclsyntax.Body, name string) (*hclsyntax.Attribute, cty.Value, error) {
	a := body.Attributes[name]
	if a == nil {
		return nil, cty.NilVal, nil
	}
	v, err := attrValue(a)
	return a, v, err
}

func attrValue(a *hclsyntax.Attribute) (cty.Value, error) {
	v, d := a.Expr.Value(evalContext(nil))
	if d.HasErrors() {
		return cty.NilVal, d
	}
	return v, nil
}

func stringAttr(body *hclsyntax.Body, name string, dst *string) error {
	a, v, err := optionalAttr(body, name)
	if a == nil || err != nil {
		return err
	}
	if v.IsNull() || !v.Type().Equals(cty.String) {
		return fmt.Errorf("%s: %s must be a string", a.SrcRange, name)
	}
	*dst = v.AsString()
	return nil
}

func intAttr(body *hclsyntax.Body, name string, dst *int64) error {
	a, v, err := optionalAttr(body, name)
	if a == nil || err != nil {
		return err
	}
	if v.IsNull() || !v.Type().Equals(cty.Number) {
		return fmt.Errorf("%s: %s must be a whole number", a.SrcRange, name)
	}
	n, acc := v.AsBigFloat().Int64()
	if acc != big.Exact || n < 0 {
		return fmt.Errorf("%s: %s must be a whole number >= 0", a.SrcRange, name)
	}
	*dst = n
	return nil
}

// jobRun holds one run-job invocation: the in-process serve dispatcher and what it printed.
type jobRun struct {
	s       *server
	out     io.Writer
	outMu   sync.Mutex
	summary runSummary
}

type runSummary struct {
	Job      string           `json:"job"`
	TaskID   string           `json:"task_id,omitempty"`
	AllocDir string           `json:"alloc_dir,omitempty"`
	Network  map[string]any   `json:"network,omitempty"` // the group network the rig made
	Events   []map[string]any `json:"events"`
	Stats    []map[string]any `json:"stats"`
	Stdout   []string         `json:"stdout"`
	Stderr   []string         `json:"stderr"`
	Stopped  bool             `json:"stopped"` // run-job stopped it (service, --run-for or a signal)
	Result   map[string]any   `json:"result,omitempty"`
	Error    string           `json:"error,omitempty"`
	ExitCode int              `json:"exit_code"`
}

func (j *jobRun) printf(format string, a ...any) {
	j.outMu.Lock()
	defer j.outMu.Unlock()
	fmt.Fprintf(j.out, format, a...)
}

func (j *jobRun) call(cmd string, params map[string]any) (response, error) {
	req := request{}
	for k, v := range params {
		req[k] = mustJSON(v)
	}
	return j.s.dispatch(cmd, req)
}

func runRunJob(args []string) int {
	fs := flag.NewFlagSet("run-job", flag.ContinueOnError)
	pluginDir := fs.String("plugin-dir", "", "Nomad's plugin_dir (absolute); overrides plugin_dir in the config file")
	configPath := fs.String("config", "", "agent HCL file with the plugin \"<name>\" { config { ... } } block")
	runFor := fs.Duration("run-for", 10*time.Second, "service jobs: stop the task after this long")
	timeout := fs.Duration("timeout", 10*time.Minute, "batch jobs: stop the task if it has not exited after this long")
	statsEvery := fs.Duration("stats-interval", time.Second, "TaskStats collection interval (0: no stats)")
	allocRoot := fs.String("alloc-root", "", "directory for alloc dirs (default: a temporary one, removed)")
	keepAlloc := fs.Bool("keep-alloc-dir", false, "leave the alloc dir (logs) in place after the run")
	summaryPath := fs.String("summary", "", "also write a JSON summary (events, stats, logs, result) here")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: nomadsim run-job --plugin-dir DIR --config agent.hcl [flags] JOBFILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	failf := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "nomadsim run-job: "+format+"\n", a...)
		return 1
	}
	if fs.NArg() != 1 || *configPath == "" {
		fs.Usage()
		return 2
	}
	jt, err := parseJobFile(fs.Arg(0))
	if err != nil {
		return failf("job file: %v", err)
	}
	dirFromFile, blocks, err := parseAgentFile(*configPath)
	if err != nil {
		return failf("agent config: %v", err)
	}
	dir := *pluginDir
	if dir == "" {
		dir = dirFromFile
	}
	if dir == "" || !filepath.IsAbs(dir) {
		return failf("plugin_dir %q must be an absolute path", dir)
	}
	found, err := scanPluginDir(dir, blocks)
	if err != nil {
		return failf("%v", err)
	}
	if !contains(found, jt.Driver) {
		return failf("task %q uses driver %q, but %s has no executable %q with a matching plugin block in %s",
			jt.Spec.Name, jt.Driver, dir, jt.Driver, *configPath)
	}
	root := *allocRoot
	if root == "" {
		root, err = os.MkdirTemp("", "nomadsim-alloc-")
		if err != nil {
			return failf("%v", err)
		}
		if !*keepAlloc {
			defer os.RemoveAll(root)
		}
	} else if root, err = filepath.Abs(root); err != nil {
		return failf("%v", err)
	}

	j := &jobRun{
		s:   &server{out: json.NewEncoder(io.Discard), instances: map[string]*Instance{}, quit: make(chan struct{})},
		out: os.Stdout,
	}
	j.summary.Job = jt.Spec.Job
	rc := j.run(jt, filepath.Join(dir, jt.Driver), blocks[jt.Driver], root, *runFor, *timeout, *statsEvery, *keepAlloc)
	j.summary.ExitCode = rc
	if *summaryPath != "" {
		raw, _ := json.MarshalIndent(&j.summary, "", "  ")
		if err := os.WriteFile(*summaryPath, raw, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "nomadsim run-job: summary: %v\n", err)
		}
	}
	return rc
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (j *jobRun) fail(format string, a ...any) int {
	msg := fmt.Sprintf(format, a...)
	j.summary.Error = msg
	j.printf("==> error: %s\n", msg)
	return 1
}

func (j *jobRun) run(jt *jobTask, pluginPath string, pb pluginBlock, root string,
	runFor, timeout, statsEvery time.Duration, keepAlloc bool) int {
	// From here on Ctrl-C stops the task (once started) instead of orphaning the plugin.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// Plugin start-up, as the agent's driver manager does it.
	if _, err := j.call("launch", map[string]any{"argv": append([]string{pluginPath}, pb.Args...), "with_driver": true}); err != nil {
		return j.fail("launching plugin %s: %v", pluginPath, err)
	}
	defer func() {
		_, _ = j.call("shutdown", map[string]any{})
	}()
	if _, err := j.call("config_schema", nil); err != nil {
		return j.fail("%v", err)
	}
	inst, _ := j.s.instance(request{})
	setParams := map[string]any{}
	if inst.ConfigSpec != nil {
		cfg := pb.Config
		if cfg == nil {
			cfg = map[string]any{}
		}
		enc, err := EncodeGeneric(cfg, inst.ConfigSpec, nil)
		if err != nil {
			return j.fail("plugin %q config block: %v", jt.Driver, err)
		}
		setParams["msgpack_hex"] = hex.EncodeToString(enc.Msgpack)
	}
	if _, err := j.call("set_config", setParams); err != nil {
		return j.fail("%v", err)
	}
	if _, err := j.call("init", nil); err != nil && !strings.Contains(err.Error(), "Unimplemented") {
		return j.fail("%v", err)
	}
	if _, err := j.call("fingerprint_start", nil); err != nil {
		return j.fail("%v", err)
	}
	fps, _, _ := inst.Stream("fingerprint").Poll(1, 50*time.Second)
	if len(fps) == 0 {
		return j.fail("driver %q sent no fingerprint within 50 s", jt.Driver)
	}
	fp := fps[0]
	j.printf("==> driver %q: %v (%v)\n", jt.Driver, fp["health"], fp["health_description"])
	if fp["health"] != "HEALTHY" {
		return j.fail("driver %q is not healthy; Nomad would not place this task on the node", jt.Driver)
	}
	if _, err := j.call("events_start", nil); err != nil {
		return j.fail("%v", err)
	}
	if len(jt.Ignored) > 0 {
		j.printf("==> note: the rig ignores these task blocks: %s\n", strings.Join(jt.Ignored, ", "))
	}

	// The task.
	j.printf("==> job %q (%s), group %q, task %q: starting\n", jt.Spec.Job, jt.JobType, jt.Spec.Group, jt.Spec.Name)
	stopEvents := make(chan struct{})
	eventsDone := make(chan struct{})
	var taskID, allocID string
	var idMu sync.Mutex
	go func() {
		defer close(eventsDone)
		j.followEvents(inst, stopEvents, func(e map[string]any) bool {
			idMu.Lock()
			defer idMu.Unlock()
			// Before StartTask returns the task id is unknown: match by task name.
			if taskID == "" {
				return e["task_name"] == jt.Spec.Name
			}
			return e["task_id"] == taskID || (e["alloc_id"] == allocID && e["task_name"] == jt.Spec.Name)
		})
	}()
	finishEvents := func() {
		time.Sleep(300 * time.Millisecond) // events emitted just before the last call
		close(stopEvents)
		<-eventsDone
	}
	started, err := j.call("run_task_start", map[string]any{"task": jt.Spec, "alloc_root": root, "timeout_s": 900})
	if err != nil {
		finishEvents()
		// The alloc runner removes a failed alloc's dir on GC; run-job does it now.
		var f *failure
		if errors.As(err, &f) && !keepAlloc {
			if dir, _ := f.fields["alloc_dir"].(string); dir != "" {
				_ = os.RemoveAll(dir)
			}
		}
		return j.fail("StartTask: %v", err)
	}
	idMu.Lock()
	taskID, _ = started["task_id"].(string)
	allocID, _ = started["alloc_id"].(string)
	idMu.Unlock()
	j.summary.TaskID = taskID
	j.summary.AllocDir, _ = started["alloc_dir"].(string)
	j.printf("==> task %s started; alloc dir %s\n", taskID, j.summary.AllocDir)
	if net, _ := started["network"].(response); net != nil {
		j.summary.Network = net
		if addr, _ := net["address"].(string); addr != "" {
			j.printf("==> network %v: the alloc is at %s (namespace %v)\n", net["mode"], addr, net["netns"])
		} else {
			j.printf("==> network %v: namespace %v, loopback only\n", net["mode"], net["netns"])
		}
	}

	stopLogs := make(chan struct{})
	var logsWG sync.WaitGroup
	for _, stream := range []string{"stdout", "stderr"} {
		p, _ := started[stream+"_log"].(string)
		logsWG.Add(1)
		go func() {
			defer logsWG.Done()
			j.tailLog(p, stream, stopLogs)
		}()
	}
	statsDone := make(chan struct{})
	if statsEvery > 0 {
		if _, err := j.call("stats_start", map[string]any{"task_id": taskID, "interval_s": statsEvery.Seconds(), "stream": "stats"}); err != nil {
			j.printf("==> stats: %v\n", err)
			close(statsDone)
		} else {
			go func() {
				defer close(statsDone)
				j.followStats(inst.Stream("stats"))
			}()
		}
	} else {
		close(statsDone)
	}

	type waited struct {
		res response
		err error
	}
	waitCh := make(chan waited, 1)
	go func() {
		r, err := j.call("rpc", map[string]any{"method": "WaitTask", "request": map[string]any{"task_id": taskID},
			"timeout_s": (timeout + runFor + time.Hour).Seconds()})
		waitCh <- waited{r, err}
	}()
	limit := timeout
	if jt.JobType == "service" {
		limit = runFor
	}
	var result map[string]any
	select {
	case w := <-waitCh:
		if w.err != nil {
			j.summary.Error = "WaitTask: " + w.err.Error()
		} else {
			resp, _ := w.res["response"].(map[string]any)
			result, _ = resp["result"].(map[string]any)
			if e, _ := resp["err"].(string); e != "" {
				j.summary.Error = e
			}
		}
	case sig := <-sigs:
		j.printf("==> got %v: stopping the task\n", sig)
		result = j.stop(jt, taskID)
	case <-time.After(limit):
		j.printf("==> %s passed: stopping the task\n", limit)
		result = j.stop(jt, taskID)
	}
	<-statsDone // the stats stream ends when the task exits

	// DestroyTask, then logmon drains and stops; the last lines are printed before we return.
	_, derr := j.call("run_task_destroy", map[string]any{"task_id": taskID, "force": true, "remove_alloc_dir": false})
	close(stopLogs)
	logsWG.Wait()
	finishEvents()
	if result != nil {
		j.summary.Result = result
		j.printf("==> task exited: exit code %v, signal %v, oom killed %v\n",
			numberOf(result["exit_code"]), numberOf(result["signal"]), result["oom_killed"])
	}
	if !keepAlloc && j.summary.AllocDir != "" {
		_ = os.RemoveAll(j.summary.AllocDir)
	}
	if derr != nil {
		return j.fail("DestroyTask: %v", derr)
	}
	if result == nil {
		if j.summary.Error == "" {
			j.summary.Error = "no exit result"
		}
		return j.fail("%s", j.summary.Error)
	}
	code := int(numberOf(result["exit_code"]))
	if sig := int(numberOf(result["signal"])); code == 0 && sig != 0 {
		code = 128 + sig
	}
	return code
}

// stop is `nomad job stop` for the one task: StopTask with kill_signal/kill_timeout, then WaitTask.
func (j *jobRun) stop(jt *jobTask, taskID string) map[string]any {
	j.summary.Stopped = true
	kt := "5s"
	if jt.Spec.KillTimeoutS != nil {
		kt = (time.Duration(*jt.Spec.KillTimeoutS * float64(time.Second))).String()
	}
	sig := jt.Spec.KillSignal
	if sig == "" {
		sig = "(driver default)"
	}
	j.printf("==> StopTask: kill_signal %s, kill_timeout %s\n", sig, kt)
	r, err := j.call("run_task_stop", map[string]any{"task_id": taskID, "timeout_s": 3600})
	if err != nil {
		j.summary.Error = "StopTask: " + err.Error()
		j.printf("==> %s\n", j.summary.Error)
		return nil
	}
	w, _ := r["wait"].(map[string]any)
	res, _ := w["result"].(map[string]any)
	return res
}

func (j *jobRun) followEvents(inst *Instance, stop <-chan struct{}, mine func(map[string]any) bool) {
	st := inst.Stream("events")
	seen := 0
	for {
		msgs, ended, _ := st.Poll(seen+1, 100*time.Millisecond)
		for _, m := range msgs[seen:] {
			if !mine(m) {
				continue
			}
			j.summary.Events = append(j.summary.Events, m)
			j.printf("event  %s  %v%s\n", shortTime(m["timestamp"]), m["message"], annotations(m["annotations"]))
		}
		seen = len(msgs)
		select {
		case <-stop:
			return
		default:
		}
		if ended {
			<-stop
			return
		}
	}
}

func (j *jobRun) followStats(st *Stream) {
	seen := 0
	for {
		msgs, ended, endErr := st.Poll(seen+1, 500*time.Millisecond)
		for _, m := range msgs[seen:] {
			stats, _ := m["stats"].(map[string]any)
			j.summary.Stats = append(j.summary.Stats, stats)
			agg, _ := stats["agg_resource_usage"].(map[string]any)
			cpu, _ := agg["cpu"].(map[string]any)
			mem, _ := agg["memory"].(map[string]any)
			j.printf("stats  %s  cpu %.1f%% (%.0f MHz)  memory rss %s, usage %s\n", shortTime(stats["timestamp"]),
				numberOf(cpu["percent"]), numberOf(cpu["total_ticks"]), mib(mem["rss"]), mib(mem["usage"]))
		}
		seen = len(msgs)
		if ended {
			if endErr != "" && !strings.Contains(endErr, "Canceled") {
				j.printf("stats  stream ended: %s\n", endErr)
			}
			return
		}
	}
}

// tailLog prints the lines logmon appends to one log file, as `nomad alloc logs -f` does.
func (j *jobRun) tailLog(path, stream string, stop <-chan struct{}) {
	var off int64
	var partial []byte
	flush := func(final bool) {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return
		}
		data, _ := io.ReadAll(f)
		off += int64(len(data))
		partial = append(partial, data...)
		for {
			i := strings.IndexByte(string(partial), '\n')
			if i < 0 {
				break
			}
			j.logLine(stream, string(partial[:i]))
			partial = partial[i+1:]
		}
		if final && len(partial) > 0 {
			j.logLine(stream, string(partial))
			partial = nil
		}
	}
	for {
		select {
		case <-stop:
			flush(true)
			return
		case <-time.After(100 * time.Millisecond):
			flush(false)
		}
	}
}

func (j *jobRun) logLine(stream, line string) {
	j.outMu.Lock()
	if stream == "stdout" {
		j.summary.Stdout = append(j.summary.Stdout, line)
	} else {
		j.summary.Stderr = append(j.summary.Stderr, line)
	}
	j.outMu.Unlock()
	j.printf("%s | %s\n", stream, line)
}

func shortTime(v any) string {
	s, _ := v.(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.Local().Format("15:04:05.000")
}

func annotations(v any) string {
	m, _ := v.(map[string]any)
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return "  [" + strings.Join(parts, " ") + "]"
}

// numberOf reads a protojson number (64-bit integers arrive as strings).
func numberOf(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	}
	return 0
}

func mib(v any) string {
	return fmt.Sprintf("%.1f MiB", numberOf(v)/(1<<20))
}
