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
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

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
	Services []Registration   `json:"services"` // what the service provider would hold
	Allocs   []*allocRun      `json:"allocs"`   // one per count
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
	cc, err := parseClientBlock(*configPath)
	if err == nil {
		err = setClientConfig(cc)
	}
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

	// The allocs: one per count, each running the group's task.
	if jt.Count > 1 {
		j.printf("==> job %q (%s), group %q: count %d\n", jt.Spec.Job, jt.JobType, jt.Spec.Group, jt.Count)
	}
	stopAll := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			j.printf("==> got %v: stopping the task\n", sig)
			close(stopAll)
		case <-finished:
		}
	}()
	allocs := make([]*allocRun, jt.Count)
	var wg sync.WaitGroup
	for i := range allocs {
		spec := jt.Spec
		spec.AllocIndex = i
		spec.AllocID = newUUID()
		a := &allocRun{j: j, jt: jt, spec: spec, multi: jt.Count > 1}
		allocs[i] = a
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.rc = a.run(inst, root, runFor, timeout, statsEvery, keepAlloc, stopAll)
		}()
	}
	wg.Wait()
	close(finished)
	return j.merge(allocs)
}

// merge folds the allocs into the summary: the first alloc's fields at the top (a count of
// one reads as before), every alloc under "allocs", the group's and tasks' services.
func (j *jobRun) merge(allocs []*allocRun) int {
	rc := 0
	for i, a := range allocs {
		if i == 0 {
			j.summary.TaskID, j.summary.AllocDir, j.summary.Network = a.TaskID, a.AllocDir, a.Network
			j.summary.Result = a.Result
			rc = a.rc
		}
		if rc == 0 && a.rc != 0 {
			rc = a.rc
		}
		j.summary.Events = append(j.summary.Events, a.Events...)
		j.summary.Stats = append(j.summary.Stats, a.Stats...)
		j.summary.Stdout = append(j.summary.Stdout, a.Stdout...)
		j.summary.Stderr = append(j.summary.Stderr, a.Stderr...)
		j.summary.Stopped = j.summary.Stopped || a.Stopped
		if a.Error != "" && j.summary.Error == "" {
			j.summary.Error = a.Error
		}
		j.summary.Services = append(j.summary.Services, a.Services...)
		j.summary.Allocs = append(j.summary.Allocs, a)
	}
	return rc
}

// allocRun is one alloc of the group: its task through the task runner, and what it printed.
type allocRun struct {
	j     *jobRun
	jt    *jobTask
	spec  TaskSpec
	multi bool // prefix output lines with the alloc index
	rc    int

	Index         int              `json:"index"`
	AllocID       string           `json:"alloc_id"`
	TaskID        string           `json:"task_id,omitempty"`
	AllocDir      string           `json:"alloc_dir,omitempty"`
	Network       map[string]any   `json:"network,omitempty"`
	Ports         any              `json:"ports,omitempty"`
	DriverNetwork any              `json:"driver_network,omitempty"`
	Services      []Registration   `json:"services"`
	Events        []map[string]any `json:"-"`
	Stats         []map[string]any `json:"-"`
	Stdout        []string         `json:"stdout"`
	Stderr        []string         `json:"stderr"`
	Stopped       bool             `json:"stopped"`
	Result        map[string]any   `json:"result,omitempty"`
	Error         string           `json:"error,omitempty"`
	ExitCode      int              `json:"exit_code"`
	mu            sync.Mutex
}

func (a *allocRun) printf(format string, args ...any) {
	if a.multi {
		format = fmt.Sprintf("[%d] ", a.spec.AllocIndex) + format
	}
	a.j.printf(format, args...)
}

func (a *allocRun) fail(format string, args ...any) int {
	a.Error = fmt.Sprintf(format, args...)
	a.printf("==> error: %s\n", a.Error)
	a.ExitCode = 1
	return 1
}

func (a *allocRun) run(inst *Instance, root string, runFor, timeout, statsEvery time.Duration,
	keepAlloc bool, stopAll <-chan struct{}) int {
	jt, s := a.jt, a.spec
	a.Index, a.AllocID = s.AllocIndex, s.AllocID
	a.printf("==> job %q (%s), group %q, task %q: starting\n", s.Job, jt.JobType, s.Group, s.Name)
	stopEvents := make(chan struct{})
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		a.followEvents(inst, stopEvents, func(e map[string]any) bool {
			return e["alloc_id"] == s.AllocID && e["task_name"] == s.Name
		})
	}()
	finishEvents := func() {
		time.Sleep(300 * time.Millisecond) // events emitted just before the last call
		close(stopEvents)
		<-eventsDone
	}
	started, err := a.j.call("run_task_start", map[string]any{"task": s, "alloc_root": root, "timeout_s": 900})
	if err != nil {
		finishEvents()
		// The alloc runner removes a failed alloc's dir on GC; run-job does it now.
		var f *failure
		if errors.As(err, &f) && !keepAlloc {
			if dir, _ := f.fields["alloc_dir"].(string); dir != "" {
				_ = os.RemoveAll(dir)
			}
		}
		return a.fail("StartTask: %v", err)
	}
	a.TaskID, _ = started["task_id"].(string)
	a.AllocDir, _ = started["alloc_dir"].(string)
	a.printf("==> task %s started; alloc dir %s\n", a.TaskID, a.AllocDir)
	if net, _ := started["network"].(response); net != nil {
		a.Network = net
		if addr, _ := net["address"].(string); addr != "" {
			a.printf("==> network %v: the alloc is at %s (namespace %v)\n", net["mode"], addr, net["netns"])
		} else {
			a.printf("==> network %v: namespace %v, loopback only\n", net["mode"], net["netns"])
		}
	}
	a.describePorts(started)

	stopLogs := make(chan struct{})
	var logsWG sync.WaitGroup
	for _, stream := range []string{"stdout", "stderr"} {
		p, _ := started[stream+"_log"].(string)
		logsWG.Add(1)
		go func() {
			defer logsWG.Done()
			a.tailLog(p, stream, stopLogs)
		}()
	}
	statsDone := make(chan struct{})
	statsName := fmt.Sprintf("stats-%d", s.AllocIndex)
	if statsEvery > 0 {
		if _, err := a.j.call("stats_start", map[string]any{"task_id": a.TaskID, "interval_s": statsEvery.Seconds(), "stream": statsName}); err != nil {
			a.printf("==> stats: %v\n", err)
			close(statsDone)
		} else {
			go func() {
				defer close(statsDone)
				a.followStats(inst.Stream(statsName))
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
		r, err := a.j.call("rpc", map[string]any{"method": "WaitTask", "request": map[string]any{"task_id": a.TaskID},
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
			a.Error = "WaitTask: " + w.err.Error()
		} else {
			resp, _ := w.res["response"].(map[string]any)
			result, _ = resp["result"].(map[string]any)
			if e, _ := resp["err"].(string); e != "" {
				a.Error = e
			}
		}
	case <-stopAll:
		result = a.stop()
	case <-time.After(limit):
		a.printf("==> %s passed: stopping the task\n", limit)
		result = a.stop()
	}
	<-statsDone // the stats stream ends when the task exits

	// DestroyTask, then logmon drains and stops; the last lines are printed before we return.
	_, derr := a.j.call("run_task_destroy", map[string]any{"task_id": a.TaskID, "force": true, "remove_alloc_dir": false})
	close(stopLogs)
	logsWG.Wait()
	finishEvents()
	if result != nil {
		a.Result = result
		a.printf("==> task exited: exit code %v, signal %v, oom killed %v\n",
			numberOf(result["exit_code"]), numberOf(result["signal"]), result["oom_killed"])
	}
	if !keepAlloc && a.AllocDir != "" {
		_ = os.RemoveAll(a.AllocDir)
	}
	if derr != nil {
		return a.fail("DestroyTask: %v", derr)
	}
	if result == nil {
		if a.Error == "" {
			a.Error = "no exit result"
		}
		return a.fail("%s", a.Error)
	}
	code := int(numberOf(result["exit_code"]))
	if sig := int(numberOf(result["signal"])); code == 0 && sig != 0 {
		code = 128 + sig
	}
	a.ExitCode = code
	return code
}

// describePorts prints the alloc's ports, the driver's network and the service registrations
// (the task's own, then the group's, as the client registers them once the task runs).
func (a *allocRun) describePorts(started response) {
	ps, _ := started["ports"].([]AllocatedPort)
	if len(ps) > 0 {
		a.Ports = ps
		for _, p := range ps {
			a.printf("==> port %q: %s:%d -> %d\n", p.Label, p.HostIP, p.Value, p.To)
		}
	}
	if dn, _ := started["driver_network"].(*DriverNet); dn != nil {
		a.DriverNetwork = dn
		a.printf("==> driver network: address %s, port map %v, auto_advertise %v\n", dn.IP, dn.PortMap, dn.AutoAdvertise)
	}
	regs, _ := started["services"].([]Registration)
	env := map[string]string{}
	for k, v := range a.spec.Env {
		env[k] = v
	}
	if raw, ok := started["port_env"].(map[string]string); ok {
		for k, v := range raw {
			env[k] = v
		}
	}
	if len(a.jt.GroupServices) > 0 {
		ip, _ := hostIP(clientConfig().NetworkInterface)
		networks := []netResource{{IP: ip, Ports: ps}}
		netStatus := ""
		if a.Network != nil {
			netStatus, _ = a.Network["address"].(string)
		}
		for _, svc := range a.jt.GroupServices {
			regs = append(regs, register(svc, a.spec.Job, a.spec.Group, a.spec.AllocID, env, networks,
				groupDriverNet(ip, ps), ps, netStatus))
		}
	}
	a.Services = regs
	for _, r := range regs {
		if r.Error != "" {
			a.printf("==> service %q (%s, address_mode %s): %s\n", r.Service, r.Provider, r.AddressMode, r.Error)
			continue
		}
		a.printf("==> service %q (%s, address_mode %s): %s\n", r.Service, r.Provider, r.AddressMode,
			net.JoinHostPort(r.Address, strconv.Itoa(r.Port)))
	}
}

// stop is `nomad job stop` for the task: StopTask with kill_signal/kill_timeout, then WaitTask.
func (a *allocRun) stop() map[string]any {
	a.Stopped = true
	kt := "5s"
	if a.spec.KillTimeoutS != nil {
		kt = (time.Duration(*a.spec.KillTimeoutS * float64(time.Second))).String()
	}
	sig := a.spec.KillSignal
	if sig == "" {
		sig = "(driver default)"
	}
	a.printf("==> StopTask: kill_signal %s, kill_timeout %s\n", sig, kt)
	r, err := a.j.call("run_task_stop", map[string]any{"task_id": a.TaskID, "timeout_s": 3600})
	if err != nil {
		a.Error = "StopTask: " + err.Error()
		a.printf("==> %s\n", a.Error)
		return nil
	}
	w, _ := r["wait"].(map[string]any)
	res, _ := w["result"].(map[string]any)
	return res
}

func (a *allocRun) followEvents(inst *Instance, stop <-chan struct{}, mine func(map[string]any) bool) {
	st := inst.Stream("events")
	seen := 0
	for {
		msgs, ended, _ := st.Poll(seen+1, 100*time.Millisecond)
		for _, m := range msgs[seen:] {
			if !mine(m) {
				continue
			}
			a.mu.Lock()
			a.Events = append(a.Events, m)
			a.mu.Unlock()
			a.printf("event  %s  %v%s\n", shortTime(m["timestamp"]), m["message"], annotations(m["annotations"]))
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

func (a *allocRun) followStats(st *Stream) {
	seen := 0
	for {
		msgs, ended, endErr := st.Poll(seen+1, 500*time.Millisecond)
		for _, m := range msgs[seen:] {
			stats, _ := m["stats"].(map[string]any)
			a.Stats = append(a.Stats, stats)
			agg, _ := stats["agg_resource_usage"].(map[string]any)
			cpu, _ := agg["cpu"].(map[string]any)
			mem, _ := agg["memory"].(map[string]any)
			a.printf("stats  %s  cpu %.1f%% (%.0f MHz)  memory rss %s, usage %s\n", shortTime(stats["timestamp"]),
				numberOf(cpu["percent"]), numberOf(cpu["total_ticks"]), mib(mem["rss"]), mib(mem["usage"]))
		}
		seen = len(msgs)
		if ended {
			if endErr != "" && !strings.Contains(endErr, "Canceled") {
				a.printf("stats  stream ended: %s\n", endErr)
			}
			return
		}
	}
}

// tailLog prints the lines logmon appends to one log file, as `nomad alloc logs -f` does.
func (a *allocRun) tailLog(path, stream string, stop <-chan struct{}) {
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
			a.logLine(stream, string(partial[:i]))
			partial = partial[i+1:]
		}
		if final && len(partial) > 0 {
			a.logLine(stream, string(partial))
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

func (a *allocRun) logLine(stream, line string) {
	a.mu.Lock()
	if stream == "stdout" {
		a.Stdout = append(a.Stdout, line)
	} else {
		a.Stderr = append(a.Stderr, line)
	}
	a.mu.Unlock()
	a.printf("%s | %s\n", stream, line)
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
