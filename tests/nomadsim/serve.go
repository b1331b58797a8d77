package main

// `nomadsim serve`: one JSON command per line on stdin, one JSON response per line on stdout.
// Every command carries an "id" echoed in its response and runs in its own goroutine, so a
// blocking call (WaitTask, a stream poll) never holds up the others. Responses are
// {"id", "ok": true, ...} or {"id", "ok": false, "error", ["stage"], ["code"], ...}.

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	"google.golang.org/grpc/status"

	"nomadsim/pb/base"
	"nomadsim/pb/drivers"
	"nomadsim/pb/structs"
)

type request map[string]json.RawMessage

type response map[string]any

// failure is an error response with extra fields.
type failure struct {
	msg    string
	fields response
}

func (f *failure) Error() string { return f.msg }

func fail(msg string, fields response) error { return &failure{msg: msg, fields: fields} }

func rpcFailure(what string, err error) error {
	fields := response{"stage": "rpc", "code": grpcCode(err), "message": grpcMessage(err)}
	// Nomad's driver client reads the first status detail as a RecoverableError.
	if st, ok := status.FromError(err); ok {
		if d := st.Details(); len(d) > 0 {
			if rec, ok := d[0].(*structs.RecoverableError); ok {
				fields["recoverable"] = rec.GetRecoverable()
			}
		}
	}
	return fail(fmt.Sprintf("%s: %s", what, describeErr(err)), fields)
}

type server struct {
	out       *json.Encoder
	outMu     sync.Mutex
	mu        sync.Mutex
	instances map[string]*Instance
	quit      chan struct{}
	quitOnce  sync.Once
}

func runServe() int {
	s := &server{out: json.NewEncoder(os.Stdout), instances: map[string]*Instance{}, quit: make(chan struct{})}
	lines := make(chan []byte)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(lines)
	}()
	var wg sync.WaitGroup
loop:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				break loop // stdin closed: the test process is gone; clean up
			}
			var req request
			if err := json.Unmarshal(line, &req); err != nil {
				s.write(response{"id": nil, "ok": false, "error": "bad command line: " + err.Error()})
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.handle(req) }()
		case <-s.quit:
			break loop
		}
	}
	s.killAll()
	releaseAllNetworks()
	return 0
}

func (s *server) write(r response) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	_ = s.out.Encode(r)
}

func (s *server) killAll() {
	s.mu.Lock()
	insts := s.instances
	s.instances = map[string]*Instance{}
	s.mu.Unlock()
	for _, inst := range insts {
		inst.closeStreams()
		inst.Kill()
	}
}

func (s *server) handle(req request) {
	var id any
	_ = json.Unmarshal(req["id"], &id)
	var cmd string
	_ = json.Unmarshal(req["cmd"], &cmd)
	res, err := s.dispatch(cmd, req)
	if err != nil {
		out := response{"id": id, "ok": false, "error": err.Error()}
		var f *failure
		if errors.As(err, &f) {
			for k, v := range f.fields {
				out[k] = v
			}
		}
		s.write(out)
		return
	}
	if res == nil {
		res = response{}
	}
	res["id"], res["ok"] = id, true
	s.write(res)
}

func param[T any](req request, key string, def T) (T, error) {
	raw, ok := req[key]
	if !ok || string(raw) == "null" {
		return def, nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return def, fmt.Errorf("parameter %q: %w", key, err)
	}
	return v, nil
}

func (s *server) instance(req request) (*Instance, error) {
	name, err := param(req, "instance", "main")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.instances[name]
	if inst == nil {
		return nil, fmt.Errorf("no plugin instance %q: launch it first", name)
	}
	return inst, nil
}

func rpcCtx(req request) (context.Context, context.CancelFunc) {
	timeout, _ := param(req, "timeout_s", 30.0)
	return context.WithTimeout(context.Background(), time.Duration(timeout*float64(time.Second)))
}

func (s *server) dispatch(cmd string, req request) (response, error) {
	switch cmd {
	case "launch":
		return s.launch(req)
	case "reattach":
		return s.reattach(req)
	case "quit":
		s.quitOnce.Do(func() { close(s.quit) })
		return nil, nil
	case "run_task_get":
		return runTaskGet(req)
	case "set_client":
		var c ClientConfig
		raw, _ := json.Marshal(req)
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("set_client parameters: %w", err)
		}
		if err := setClientConfig(c); err != nil {
			return nil, err
		}
		ip, _ := hostIP(c.NetworkInterface)
		lo, hi := c.portRange()
		return response{"host_ip": ip, "min_dynamic_port": lo, "max_dynamic_port": hi}, nil
	}
	inst, err := s.instance(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := rpcCtx(req)
	defer cancel()
	switch cmd {
	case "plugin_info":
		return pluginInfo(ctx, inst)
	case "config_schema":
		return configSchema(ctx, inst)
	case "set_config":
		return setConfig(ctx, inst, req)
	case "init":
		if _, err := inst.Driver.Init(ctx, &drivers.InitRequest{}); err != nil {
			return nil, rpcFailure("Init", err)
		}
		return nil, nil
	case "task_config_schema":
		return taskConfigSchema(ctx, inst)
	case "capabilities":
		r, err := inst.Driver.Capabilities(ctx, &drivers.CapabilitiesRequest{})
		if err != nil {
			return nil, rpcFailure("Capabilities", err)
		}
		return response{"capabilities": protoToMap(r.GetCapabilities()), "set": r.Capabilities != nil}, nil
	case "fingerprint_start":
		return nil, inst.StartStream("fingerprint", func(ctx context.Context) (func() (proto.Message, error), error) {
			st, err := inst.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
			if err != nil {
				return nil, err
			}
			return func() (proto.Message, error) { return st.Recv() }, nil
		})
	case "events_start":
		return nil, inst.StartStream("events", func(ctx context.Context) (func() (proto.Message, error), error) {
			st, err := inst.Driver.TaskEvents(ctx, &drivers.TaskEventsRequest{})
			if err != nil {
				return nil, err
			}
			return func() (proto.Message, error) { return st.Recv() }, nil
		})
	case "stats_start":
		return statsStart(inst, req)
	case "exec_stream_start":
		return execStreamStart(inst, req)
	case "exec_stream_send":
		return execStreamSend(inst, req)
	case "stream_poll":
		return streamPoll(inst, req)
	case "stream_cancel":
		// What Nomad does when alloc exec's user disconnects or the stats hook stops.
		name, _ := param(req, "stream", "")
		st := inst.Stream(name)
		if st == nil {
			return nil, fmt.Errorf("stream %q was not started", name)
		}
		st.cancel()
		return nil, nil
	case "fingerprint_poll":
		req["stream"] = json.RawMessage(`"fingerprint"`)
		return streamPoll(inst, req)
	case "events_poll":
		req["stream"] = json.RawMessage(`"events"`)
		return streamPoll(inst, req)
	case "encode_task_config":
		enc, err := encodeTaskConfig(ctx, inst, req)
		if err != nil {
			return nil, err
		}
		return response{"msgpack_hex": hex.EncodeToString(enc.Msgpack), "value": ValueJSON(enc.Value)}, nil
	case "start_task":
		return startTask(ctx, inst, req)
	case "rpc":
		return genericRPC(ctx, inst, req)
	case "run_task_start":
		return runTaskStart(ctx, inst, req)
	case "run_task_stop":
		return runTaskStop(ctx, inst, req)
	case "run_task_destroy":
		return runTaskDestroy(ctx, inst, req)
	case "run_task_recover":
		return runTaskRecover(ctx, inst, req)
	case "logs":
		return logs(inst), nil
	case "kill_plugin":
		inst.closeStreams()
		if err := inst.SigKill(); err != nil {
			return nil, err
		}
		s.forget(req)
		return response{"pid": inst.Pid}, nil
	case "shutdown":
		return s.shutdown(inst, req)
	}
	return nil, fmt.Errorf("unknown command %q", cmd)
}

func (s *server) forget(req request) {
	name, _ := param(req, "instance", "main")
	s.mu.Lock()
	delete(s.instances, name)
	s.mu.Unlock()
}

func (s *server) launch(req request) (response, error) {
	var o LaunchOptions
	raw, _ := json.Marshal(req)
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("launch parameters: %w", err)
	}
	name, err := param(req, "instance", "main")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if old := s.instances[name]; old != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("instance %q is still running: shut it down or kill it first", name)
	}
	s.mu.Unlock()
	inst, err := Launch(o)
	if err != nil {
		fields := response{"stage": "handshake"}
		if inst != nil {
			fields["stderr"] = inst.rawStderr.Lines()
			fields["handshake_ms"] = inst.HandshakeMs
		}
		return nil, fail(err.Error(), fields)
	}
	s.mu.Lock()
	s.instances[name] = inst
	s.mu.Unlock()
	return response{"pid": inst.Pid, "addr": inst.Addr, "handshake_ms": inst.HandshakeMs}, nil
}

func (s *server) reattach(req request) (response, error) {
	name, _ := param(req, "instance", "main")
	pid, _ := param(req, "pid", 0)
	addr, _ := param(req, "addr", "")
	s.mu.Lock()
	if s.instances[name] != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("instance %q is still running: shut it down or kill it first", name)
	}
	s.mu.Unlock()
	inst, err := Reattach(pid, addr)
	if err != nil {
		// No Kill here: the pid may not be the plugin's any more.
		return nil, fail(err.Error(), response{"stage": "reattach"})
	}
	s.mu.Lock()
	s.instances[name] = inst
	s.mu.Unlock()
	return response{"pid": inst.Pid, "addr": inst.Addr}, nil
}

// shutdown is what the agent does on exit: Driver.Shutdown (2 s, Unimplemented ignored), then
// go-plugin's Kill (GRPCController.Shutdown, 2 s grace, SIGKILL).
func (s *server) shutdown(inst *Instance, req request) (response, error) {
	out := response{}
	if withRPC, _ := param(req, "driver_shutdown", true); withRPC && inst.Driver != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := inst.Driver.Shutdown(ctx, &drivers.ShutdownRequest{})
		cancel()
		out["driver_shutdown_code"] = "OK"
		if err != nil {
			out["driver_shutdown_code"] = grpcCode(err)
		}
	}
	inst.closeStreams()
	k := inst.Kill()
	s.forget(req)
	out["graceful"], out["kill_ms"], out["exited"] = k.Graceful, k.KillMs, inst.Exited()
	return out, nil
}

func pluginInfo(ctx context.Context, inst *Instance) (response, error) {
	r, err := inst.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err != nil {
		return nil, rpcFailure("PluginInfo", err)
	}
	info := protoToMap(r)
	if problem := checkPluginInfo(r); problem != "" {
		return nil, fail("PluginInfo: "+problem, response{"stage": "validate", "info": info})
	}
	return response{"info": info}, nil
}

func configSchema(ctx context.Context, inst *Instance) (response, error) {
	r, err := inst.Base.ConfigSchema(ctx, &base.ConfigSchemaRequest{})
	if err != nil {
		return nil, rpcFailure("ConfigSchema", err)
	}
	out := response{"present": r.Spec != nil}
	if r.Spec == nil {
		inst.ConfigSpec = nil
		return out, nil
	}
	out["spec"] = protoToMap(r.Spec)
	spec, err := ConvertSpec(r.Spec)
	if err != nil {
		return nil, fail("ConfigSchema: "+err.Error(), response{"stage": "schema", "spec": out["spec"]})
	}
	inst.ConfigSpec = spec
	return out, nil
}

func taskConfigSchema(ctx context.Context, inst *Instance) (response, error) {
	r, err := inst.Driver.TaskConfigSchema(ctx, &drivers.TaskConfigSchemaRequest{})
	if err != nil {
		return nil, rpcFailure("TaskConfigSchema", err)
	}
	spec, err := ConvertSpec(r.Spec) // a nil spec is an error here, as in Nomad
	if err != nil {
		return nil, fail("TaskConfigSchema: "+err.Error(), response{"stage": "schema", "spec": protoToMap(r.Spec)})
	}
	inst.TaskSpec = spec
	return response{"spec": protoToMap(r.Spec)}, nil
}

// encodeConfig turns "hcl" (a config body) or "msgpack_hex" (raw bytes) into msgpack.
func encodeConfig(req request, spec hcldec.Spec, vars map[string]string) ([]byte, response, error) {
	if rawHex, err := param(req, "msgpack_hex", ""); err != nil {
		return nil, nil, err
	} else if rawHex != "" {
		b, err := hex.DecodeString(rawHex)
		return b, response{}, err
	}
	src, err := param(req, "hcl", "")
	if err != nil {
		return nil, nil, err
	}
	if spec == nil {
		if src != "" {
			return nil, nil, fail("the plugin has no config schema, so a config block is not allowed",
				response{"stage": "decode"})
		}
		return nil, response{}, nil
	}
	enc, err := EncodeConfigBody(src, spec, vars)
	if err != nil {
		var de *DiagError
		if errors.As(err, &de) {
			return nil, nil, fail(err.Error(), response{"stage": de.Stage})
		}
		return nil, nil, err
	}
	return enc.Msgpack, response{"msgpack_hex": hex.EncodeToString(enc.Msgpack), "value": ValueJSON(enc.Value)}, nil
}

func setConfig(ctx context.Context, inst *Instance, req request) (response, error) {
	if inst.ConfigSpec == nil {
		if _, err := configSchema(ctx, inst); err != nil {
			return nil, err
		}
	}
	packed, out, err := encodeConfig(req, inst.ConfigSpec, nil)
	if err != nil {
		return nil, err
	}
	apiVersion, _ := param(req, "api_version", "v0.1.0")
	r := &base.SetConfigRequest{MsgpackConfig: packed, PluginApiVersion: apiVersion}
	// The driver manager's dispense carries nomad_config; the agent-start validation does not.
	if with, _ := param(req, "nomad_config", true); with {
		// Nomad >= 1.7 sends the node's topology; the rig's node has `cores` x `core_mhz`
		// (default 2 x 1000 MHz, the total the task runner's PercentTicks assume).
		cores, _ := param(req, "cores", 2)
		mhz, _ := param(req, "core_mhz", uint64(1000))
		topo := &base.ClientTopology{}
		for i := 0; i < cores; i++ {
			topo.Cores = append(topo.Cores, &base.ClientTopologyCore{CoreId: uint32(i), BaseSpeed: mhz})
		}
		r.NomadConfig = &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMaxPort: 14512,
			ClientMinPort: 14000, Topology: topo}}
	}
	if _, err := inst.Base.SetConfig(ctx, r); err != nil {
		return nil, rpcFailure("SetConfig", err)
	}
	return out, nil
}

func encodeTaskConfig(ctx context.Context, inst *Instance, req request) (*Encoded, error) {
	if inst.TaskSpec == nil {
		if _, err := taskConfigSchema(ctx, inst); err != nil {
			return nil, err
		}
	}
	src, err := param(req, "hcl", "")
	if err != nil {
		return nil, err
	}
	env, err := param(req, "env", map[string]string{})
	if err != nil {
		return nil, err
	}
	enc, err := EncodeConfigBody(src, inst.TaskSpec, env)
	if err != nil {
		var de *DiagError
		if errors.As(err, &de) {
			return nil, fail(err.Error(), response{"stage": de.Stage})
		}
		return nil, err
	}
	return enc, nil
}

// startTask fills TaskConfig from "task" (protojson field names) and the config from "hcl"
// (parsed with the plugin's TaskConfigSchema, task env as variables) or "msgpack_hex".
func startTask(ctx context.Context, inst *Instance, req request) (response, error) {
	task := &drivers.TaskConfig{}
	if raw, ok := req["task"]; ok {
		if err := protojson.Unmarshal(raw, task); err != nil {
			return nil, fmt.Errorf("parameter \"task\": %w", err)
		}
	}
	out := response{}
	if rawHex, _ := param(req, "msgpack_hex", ""); rawHex != "" {
		b, err := hex.DecodeString(rawHex)
		if err != nil {
			return nil, err
		}
		task.MsgpackDriverConfig = b
	} else {
		r := request{"hcl": req["hcl"]}
		envRaw, _ := json.Marshal(task.GetEnv())
		r["env"] = envRaw
		enc, err := encodeTaskConfig(ctx, inst, r)
		if err != nil {
			return nil, err
		}
		task.MsgpackDriverConfig = enc.Msgpack
		out["msgpack_hex"], out["value"] = hex.EncodeToString(enc.Msgpack), ValueJSON(enc.Value)
	}
	r, err := inst.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: task})
	if err != nil {
		f := rpcFailure("StartTask", err).(*failure)
		for k, v := range out {
			f.fields[k] = v
		}
		return nil, f
	}
	out["response"] = protoToMap(r)
	return out, nil
}

// genericRPC invokes any unary Driver RPC by method name with a protojson request, so the rig
// covers the lifecycle calls (WaitTask, StopTask, DestroyTask, InspectTask, SignalTask,
// RecoverTask, ExecTask, CreateNetwork, ...) without a command each.
func genericRPC(ctx context.Context, inst *Instance, req request) (response, error) {
	method, err := param(req, "method", "")
	if err != nil || method == "" {
		return nil, errors.New("rpc: parameter \"method\" is required")
	}
	const pkg = "hashicorp.nomad.plugins.drivers.proto."
	reqType, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(pkg + method + "Request"))
	if err != nil {
		return nil, fmt.Errorf("rpc: no message %sRequest: %w", method, err)
	}
	respType, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(pkg + method + "Response"))
	if err != nil {
		return nil, fmt.Errorf("rpc: no message %sResponse: %w", method, err)
	}
	in := reqType.New().Interface()
	if raw, ok := req["request"]; ok {
		if err := protojson.Unmarshal(raw, in); err != nil {
			return nil, fmt.Errorf("rpc: request for %s: %w", method, err)
		}
	}
	resp := respType.New().Interface()
	start := time.Now()
	if err := inst.conn.Invoke(ctx, "/"+pkg+"Driver/"+method, in, resp); err != nil {
		return nil, rpcFailure(method, err)
	}
	return response{"response": protoToMap(resp), "elapsed_ms": float64(time.Since(start).Microseconds()) / 1000}, nil
}

func statsStart(inst *Instance, req request) (response, error) {
	taskID, _ := param(req, "task_id", "")
	interval, _ := param(req, "interval_s", 1.0)
	name, _ := param(req, "stream", "stats:"+taskID)
	return response{"stream": name}, inst.StartStream(name, func(ctx context.Context) (func() (proto.Message, error), error) {
		st, err := inst.Driver.TaskStats(ctx, &drivers.TaskStatsRequest{TaskId: taskID,
			CollectionInterval: durationpb.New(secondsToDuration(interval))})
		if err != nil {
			return nil, err
		}
		return func() (proto.Message, error) { return st.Recv() }, nil
	})
}

func streamPoll(inst *Instance, req request) (response, error) {
	name, _ := param(req, "stream", "")
	st := inst.Stream(name)
	if st == nil {
		return nil, fmt.Errorf("stream %q was not started", name)
	}
	minCount, _ := param(req, "min_count", 1)
	wait, _ := param(req, "wait_s", 5.0)
	msgs, ended, endErr := st.Poll(minCount, time.Duration(wait*float64(time.Second)))
	return response{"messages": msgs, "ended": ended, "end_error": endErr}, nil
}

func logs(inst *Instance) response {
	raw := inst.rawStderr.Lines()
	problems := []response{}
	for _, l := range raw {
		if p := checkHclogLine(l); p != "" {
			problems = append(problems, response{"line": l, "problem": p})
		}
	}
	return response{"stderr": raw, "problems": problems, "agent": parseAgentLines(inst.agentLog.Lines())}
}

func rigLogOutput() io.Writer {
	if os.Getenv("NOMADSIM_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// execStreamStart opens ExecTaskStreaming and sends "request" (protojson of an
// ExecTaskStreamingRequest, normally {"setup": {...}}) as its first message, as Nomad does.
func execStreamStart(inst *Instance, req request) (response, error) {
	name, _ := param(req, "stream", "exec")
	first := &drivers.ExecTaskStreamingRequest{}
	if raw, ok := req["request"]; ok {
		if err := protojson.Unmarshal(raw, first); err != nil {
			return nil, fmt.Errorf("exec_stream_start request: %w", err)
		}
	}
	err := inst.StartStream(name, func(ctx context.Context) (func() (proto.Message, error), error) {
		st, err := inst.Driver.ExecTaskStreaming(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(first); err != nil {
			return nil, err
		}
		inst.mu.Lock()
		inst.senders[name] = func(m proto.Message) error { return st.Send(m.(*drivers.ExecTaskStreamingRequest)) }
		inst.closers[name] = st.CloseSend
		inst.mu.Unlock()
		return func() (proto.Message, error) { return st.Recv() }, nil
	})
	return response{"stream": name}, err
}

// execStreamSend sends one more ExecTaskStreamingRequest ({"stdin": {"data": "<base64>"}},
// {"stdin": {"close": true}}, {"tty_size": {...}}, or {} as the API's heartbeat), or, with
// "close_send": true, half-closes the client side.
func execStreamSend(inst *Instance, req request) (response, error) {
	name, _ := param(req, "stream", "exec")
	inst.mu.Lock()
	send, closeSend := inst.senders[name], inst.closers[name]
	inst.mu.Unlock()
	if send == nil {
		return nil, fmt.Errorf("exec stream %q was not started", name)
	}
	if c, _ := param(req, "close_send", false); c {
		return nil, closeSend()
	}
	m := &drivers.ExecTaskStreamingRequest{}
	if raw, ok := req["request"]; ok {
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("exec_stream_send request: %w", err)
		}
	}
	if err := send(m); err != nil {
		return nil, rpcFailure("ExecTaskStreaming send", err)
	}
	return nil, nil
}
