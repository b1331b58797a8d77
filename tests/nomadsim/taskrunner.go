package main

// The part of Nomad's task runner a driver sees: the alloc dir (allocdir), the log FIFOs and
// their copy into rotated files (logmon), the TaskConfig (taskrunner's buildTaskConfig and the
// env builder for fs_isolation = image), StartTask, and the kill sequence (StopTask with the
// task's kill_signal and kill_timeout, WaitTask, DestroyTask(force)). The facts come from
// Nomad's task driver plugin documentation and the client's behaviour; no Nomad code is used.
//
// serve commands: run_task_start, run_task_stop, run_task_destroy, run_task_recover,
// run_task_get (see README.md).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"nomadsim/pb/drivers"
)

// TaskSpec is the job-file side of one task, as the tests and run-job give it.
type TaskSpec struct {
	Name          string            `json:"name"`
	Config        string            `json:"config"` // body of the task's config {} block (HCL)
	Env           map[string]string `json:"env"`
	User          string            `json:"user"`
	CPU           int64             `json:"cpu"`        // MHz (default 100, like Nomad)
	Memory        int64             `json:"memory"`     // MiB (default 300)
	MemoryMax     int64             `json:"memory_max"` // MiB, 0: none
	KillSignal    string            `json:"kill_signal"`
	KillTimeoutS  *float64          `json:"kill_timeout_s"` // default 5 s
	LogsDisabled  bool              `json:"logs_disabled"`
	VolumeMounts  []VolumeMount     `json:"volume_mounts"`
	Job           string            `json:"job"`
	Group         string            `json:"group"`
	Namespace     string            `json:"namespace"`
	AllocID       string            `json:"alloc_id"` // default: a new uuid
	TotalCompute  int64             `json:"total_compute_mhz"`
	ReservedCores int               `json:"cores"`
	Network       *NetworkSpec      `json:"network"`  // the group's network block (network.go)
	Services      []ServiceSpec     `json:"services"` // the task's service blocks (services.go)
	AllocIndex    int               `json:"alloc_index"`
}

type VolumeMount struct {
	HostPath string `json:"host_path"`
	TaskPath string `json:"task_path"`
	ReadOnly bool   `json:"read_only"`
}

// TaskRun is one started task: its paths, the handle Nomad would persist, the log copiers.
type TaskRun struct {
	Spec       TaskSpec
	TaskID     string
	AllocDir   string
	Handle     *drivers.TaskHandle
	logs       []*logCopier
	KillSignal string
	KillTO     time.Duration
	net        *allocNet // the alloc's network namespace (nil: host networking)
	Ports      []AllocatedPort
	HasPorts   bool       // holds a share of the alloc's ports
	DriverNet  *DriverNet // StartTask's network_override, kept as Nomad persists it
	Env        map[string]string
}

// registrations are the task's services as the client would register them.
func (r *TaskRun) registrations() []Registration {
	out := []Registration{}
	for _, svc := range r.Spec.Services {
		svc.Task = r.Spec.Name
		out = append(out, register(svc, r.Spec.Job, r.Spec.Group, r.Spec.AllocID, r.Env, nil, r.DriverNet,
			r.Ports, r.netStatusAddr()))
	}
	return out
}

// netStatusAddr is the group network's address (the rig's bridge stands in for Nomad's CNI).
func (r *TaskRun) netStatusAddr() string {
	if r.net == nil {
		return ""
	}
	return r.net.Addr
}

func (r *TaskRun) releasePorts() {
	if r.HasPorts {
		portsBook.release(r.Spec.AllocID)
		r.HasPorts = false
	}
}

func (r *TaskRun) paths() response {
	logs := filepath.Join(r.AllocDir, "alloc", "logs")
	return response{
		"task_id": r.TaskID, "alloc_id": r.Spec.AllocID, "alloc_dir": r.AllocDir,
		"task_dir":    filepath.Join(r.AllocDir, r.Spec.Name),
		"stdout_fifo": filepath.Join(logs, "."+r.Spec.Name+".stdout.fifo"),
		"stderr_fifo": filepath.Join(logs, "."+r.Spec.Name+".stderr.fifo"),
		"stdout_log":  filepath.Join(logs, r.Spec.Name+".stdout.0"),
		"stderr_log":  filepath.Join(logs, r.Spec.Name+".stderr.0"),
	}
}

type taskRuns struct {
	mu   sync.Mutex
	runs map[string]*TaskRun
}

var runs = &taskRuns{runs: map[string]*TaskRun{}}

func (t *taskRuns) get(id string) (*TaskRun, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.runs[id]
	if r == nil {
		return nil, fmt.Errorf("no task run %q (start it with run_task_start)", id)
	}
	return r, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// buildAllocDir creates what allocdir.Build and TaskDir.Build create.
func buildAllocDir(allocDir, task string) error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(allocDir, "alloc"), 0o755},
		{filepath.Join(allocDir, "alloc", "logs"), 0o777},
		{filepath.Join(allocDir, "alloc", "tmp"), 0o777 | os.ModeSticky},
		{filepath.Join(allocDir, "alloc", "data"), 0o777},
		{filepath.Join(allocDir, task), 0o777},
		{filepath.Join(allocDir, task, "local"), 0o777},
		{filepath.Join(allocDir, task, "secrets"), 0o777},
		{filepath.Join(allocDir, task, "private"), 0o777},
		{filepath.Join(allocDir, task, "tmp"), 0o777 | os.ModeSticky},
	} {
		if err := os.MkdirAll(d.path, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// logCopier is logmon for one stream: the FIFO's reader, appending to <task>.<stream>.0.
type logCopier struct {
	fifo *os.File
	out  *os.File
	done chan struct{}
}

func startLogCopier(fifoPath, logPath string) (*logCopier, error) {
	_ = os.Remove(fifoPath)
	if err := syscall.Mkfifo(fifoPath, 0o600); err != nil {
		return nil, fmt.Errorf("mkfifo %s: %w", fifoPath, err)
	}
	// O_RDWR: never blocks in open, and never sees EOF when a writer closes, so one reader
	// serves every writer (task restarts) like logmon's reopen loop.
	f, err := os.OpenFile(fifoPath, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		f.Close()
		return nil, err
	}
	c := &logCopier{fifo: f, out: out, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		_, _ = io.Copy(out, f)
	}()
	return c, nil
}

// stop drains what the FIFO holds, then closes both ends.
func (c *logCopier) stop() {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && c.pending() > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	_ = c.fifo.Close()
	<-c.done
	_ = c.out.Close()
}

// pending is how many bytes wait in the FIFO (FIONREAD); not Fd(), which would make the file
// blocking so that Close could not interrupt the copier's Read.
func (c *logCopier) pending() int {
	var n int32
	rc, err := c.fifo.SyscallConn()
	if err != nil {
		return 0
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	return int(n)
}

// taskEnv is what Nomad's env builder gives a task whose driver has fs_isolation = image.
func taskEnv(s TaskSpec, cpu, mem int64, ps []AllocatedPort) map[string]string {
	env := map[string]string{
		"NOMAD_ALLOC_DIR":      "/alloc",
		"NOMAD_TASK_DIR":       "/local",
		"NOMAD_SECRETS_DIR":    "/secrets",
		"NOMAD_ALLOC_ID":       s.AllocID,
		"NOMAD_SHORT_ALLOC_ID": s.AllocID[:8],
		"NOMAD_ALLOC_NAME":     fmt.Sprintf("%s.%s[%d]", s.Job, s.Group, s.AllocIndex),
		"NOMAD_ALLOC_INDEX":    strconv.Itoa(s.AllocIndex),
		"NOMAD_TASK_NAME":      s.Name,
		"NOMAD_GROUP_NAME":     s.Group,
		"NOMAD_JOB_NAME":       s.Job,
		"NOMAD_JOB_ID":         s.Job,
		"NOMAD_NAMESPACE":      s.Namespace,
		"NOMAD_REGION":         "global",
		"NOMAD_DC":             "dc1",
		"NOMAD_CPU_LIMIT":      strconv.FormatInt(cpu, 10),
		"NOMAD_MEMORY_LIMIT":   strconv.FormatInt(mem, 10),
	}
	if s.MemoryMax > 0 {
		env["NOMAD_MEMORY_MAX_LIMIT"] = strconv.FormatInt(s.MemoryMax, 10)
	}
	if s.ReservedCores > 0 {
		env["NOMAD_CPU_CORES"] = strconv.Itoa(s.ReservedCores)
	}
	for k, v := range portEnv(ps) { // the alloc's ports come before the task's own env
		env[k] = v
	}
	for k, v := range s.Env {
		env[k] = v
	}
	return env
}

func runTaskStart(ctx context.Context, inst *Instance, req request) (response, error) {
	var s TaskSpec
	if raw, ok := req["task"]; ok {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("parameter \"task\": %w", err)
		}
	}
	root, _ := param(req, "alloc_root", "")
	if s.Name == "" || root == "" || !filepath.IsAbs(root) {
		return nil, errors.New("run_task_start needs task.name and an absolute alloc_root")
	}
	if s.AllocID == "" {
		s.AllocID = newUUID()
	}
	for p, d := range map[*string]string{&s.Job: "job", &s.Group: "group", &s.Namespace: "default"} {
		if *p == "" {
			*p = d
		}
	}
	cpu, mem := s.CPU, s.Memory
	if cpu == 0 {
		cpu = 100
	}
	if mem == 0 {
		mem = 300
	}
	total := s.TotalCompute
	if total == 0 {
		total = 2000
	}
	killTO := 5 * time.Second
	if s.KillTimeoutS != nil {
		killTO = secondsToDuration(*s.KillTimeoutS)
	}
	run := &TaskRun{Spec: s, AllocDir: filepath.Join(root, s.AllocID), KillSignal: s.KillSignal, KillTO: killTO}
	run.TaskID = fmt.Sprintf("%s/%s/%s", s.AllocID, s.Name, randomHex(4))
	if err := buildAllocDir(run.AllocDir, s.Name); err != nil {
		return nil, fmt.Errorf("alloc dir: %w", err)
	}
	p := run.paths()
	stdout, stderr := p["stdout_fifo"].(string), p["stderr_fifo"].(string)
	if s.LogsDisabled {
		stdout, stderr = "/dev/null", "/dev/null"
	} else {
		for _, pair := range [][2]string{{stdout, p["stdout_log"].(string)}, {stderr, p["stderr_log"].(string)}} {
			c, err := startLogCopier(pair[0], pair[1])
			if err != nil {
				run.stopLogs()
				return nil, fmt.Errorf("logmon: %w", err)
			}
			run.logs = append(run.logs, c)
		}
	}
	if s.Network != nil && len(s.Network.Ports) > 0 {
		cfg := clientConfig()
		ip, err := hostIP(cfg.NetworkInterface)
		if err == nil {
			lo, hi := cfg.portRange()
			run.Ports, err = portsBook.acquire(s.AllocID, ip, s.Network.Ports, lo, hi)
		}
		if err != nil {
			run.stopLogs()
			return nil, withFields(err, run.paths())
		}
		run.HasPorts = true
	}
	memMax := s.MemoryMax
	limit := mem
	if memMax > limit {
		limit = memMax
	}
	task := &drivers.TaskConfig{
		Id: run.TaskID, Name: s.Name, Env: taskEnv(s, cpu, mem, run.Ports), User: s.User,
		AllocDir: run.AllocDir, StdoutPath: stdout, StderrPath: stderr,
		TaskGroupName: s.Group, JobName: s.Job, JobId: s.Job, AllocId: s.AllocID,
		Namespace: s.Namespace, NodeName: "nomadsim", NodeId: "00000000-0000-0000-0000-00000000cafe",
		Resources: &drivers.Resources{
			AllocatedResources: &drivers.AllocatedTaskResources{
				Cpu:    &drivers.AllocatedCpuResources{CpuShares: cpu},
				Memory: &drivers.AllocatedMemoryResources{MemoryMb: mem, MemoryMaxMb: memMax},
			},
			LinuxResources: &drivers.LinuxResources{
				CpuShares: cpu, MemoryLimitBytes: limit * 1024 * 1024,
				PercentTicks: float64(cpu) / float64(total),
				CpusetCpus:   reservedCpuset(s.ReservedCores),
			},
			Ports: portMappings(run.Ports),
		},
	}
	run.Env = task.Env
	for _, m := range s.VolumeMounts {
		task.Mounts = append(task.Mounts, &drivers.Mount{TaskPath: m.TaskPath, HostPath: m.HostPath, Readonly: m.ReadOnly})
	}
	out := run.paths()
	// The network hook runs before the task: the namespace exists when StartTask comes.
	net, err := acquireNetwork(s)
	if err != nil {
		run.stopLogs()
		run.releasePorts()
		return nil, withFields(fmt.Errorf("network: %w", err), out)
	}
	run.net = net
	if run.net != nil {
		task.NetworkIsolationSpec = isolationSpec(run.net, s)
		out["network"] = run.net.describe()
	}
	task.Dns = dnsConfig(s)
	envRaw, _ := json.Marshal(task.Env)
	enc, err := encodeTaskConfig(ctx, inst, request{"hcl": mustJSON(s.Config), "env": envRaw})
	if err != nil {
		run.stopLogs()
		run.releasePorts()
		releaseNetwork(run.net)
		return nil, withFields(err, out)
	}
	task.MsgpackDriverConfig = enc.Msgpack
	began := time.Now()
	resp, err := inst.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: task})
	if err != nil {
		run.stopLogs()
		run.releasePorts()
		releaseNetwork(run.net)
		return nil, withFields(rpcFailure("StartTask", err), out)
	}
	run.DriverNet = driverNetFromProto(resp.GetNetworkOverride())
	// The StartTask call alone: what the driver costs, without the client's own preparation.
	out["start_task_ms"] = float64(time.Since(began).Microseconds()) / 1000
	run.Handle = resp.GetHandle()
	runs.mu.Lock()
	runs.runs[run.TaskID] = run
	runs.mu.Unlock()
	out["handle"] = protoToMap(run.Handle)
	out["task_config"] = protoToMap(task)
	run.describeNetwork(out)
	return out, nil
}

func withFields(err error, fields response) error {
	var f *failure
	if errors.As(err, &f) {
		for k, v := range fields {
			if _, set := f.fields[k]; !set {
				f.fields[k] = v
			}
		}
		return f
	}
	return fail(err.Error(), fields)
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func (r *TaskRun) stopLogs() {
	for _, c := range r.logs {
		c.stop()
	}
	r.logs = nil
}

// runTaskStop is the task runner's kill: StopTask(kill_timeout, kill_signal) then WaitTask.
func runTaskStop(ctx context.Context, inst *Instance, req request) (response, error) {
	id, _ := param(req, "task_id", "")
	run, err := runs.get(id)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := inst.Driver.StopTask(ctx, &drivers.StopTaskRequest{TaskId: id,
		Timeout: durationpb.New(run.KillTO), Signal: run.KillSignal}); err != nil {
		return nil, rpcFailure("StopTask", err)
	}
	stopMs := float64(time.Since(start).Microseconds()) / 1000
	w, err := inst.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: id})
	if err != nil {
		return nil, rpcFailure("WaitTask", err)
	}
	return response{"stop_ms": stopMs, "wait": protoToMap(w)}, nil
}

// runTaskDestroy is clearDriverHandle: DestroyTask(force), then logmon stops.
func runTaskDestroy(ctx context.Context, inst *Instance, req request) (response, error) {
	id, _ := param(req, "task_id", "")
	force, _ := param(req, "force", true)
	run, err := runs.get(id)
	if err != nil {
		return nil, err
	}
	if _, err := inst.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: id, Force: force}); err != nil {
		return nil, rpcFailure("DestroyTask", err)
	}
	run.stopLogs()
	run.releasePorts()
	releaseNetwork(run.net)
	runs.mu.Lock()
	delete(runs.runs, id)
	runs.mu.Unlock()
	if rm, _ := param(req, "remove_alloc_dir", false); rm {
		_ = os.RemoveAll(run.AllocDir)
	}
	return nil, nil
}

// runTaskRecover hands the stored handle to RecoverTask, as after a plugin crash; with
// "agent_restart" the handle lost its msgpack_driver_config, as after an agent restart.
func runTaskRecover(ctx context.Context, inst *Instance, req request) (response, error) {
	id, _ := param(req, "task_id", "")
	run, err := runs.get(id)
	if err != nil {
		return nil, err
	}
	h := proto.Clone(run.Handle).(*drivers.TaskHandle)
	if agent, _ := param(req, "agent_restart", false); agent && h.Config != nil {
		h.Config.MsgpackDriverConfig = nil
	}
	if _, err := inst.Driver.RecoverTask(ctx, &drivers.RecoverTaskRequest{Handle: h}); err != nil {
		return nil, rpcFailure("RecoverTask", err)
	}
	return response{"handle": protoToMap(h)}, nil
}

func runTaskGet(req request) (response, error) {
	id, _ := param(req, "task_id", "")
	run, err := runs.get(id)
	if err != nil {
		return nil, err
	}
	out := run.paths()
	out["handle"] = protoToMap(run.Handle)
	run.describeNetwork(out)
	raw, _ := protojson.Marshal(run.Handle)
	out["handle_json"] = string(raw)
	return out, nil
}

// reservedCpuset is the cpuset Nomad hands a task with `cores = n`: n whole host cores (the rig
// takes the lowest ones; Nomad picks free ones).
func reservedCpuset(n int) string {
	cores := make([]string, 0, n)
	for i := 0; i < n; i++ {
		cores = append(cores, strconv.Itoa(i))
	}
	return strings.Join(cores, ",")
}

// describeNetwork adds the alloc's ports, the driver network and the services to an answer.
func (r *TaskRun) describeNetwork(out response) {
	ps := r.Ports
	if ps == nil {
		ps = []AllocatedPort{}
	}
	out["ports"] = ps
	out["driver_network"] = r.DriverNet
	out["services"] = r.registrations()
	env := map[string]string{}
	for k, v := range r.Env {
		if strings.HasPrefix(k, "NOMAD_") && (strings.Contains(k, "PORT_") || strings.Contains(k, "_IP_") ||
			strings.Contains(k, "_ADDR_")) {
			env[k] = v
		}
	}
	out["port_env"] = env
}
