package main

// One launched plugin process and the state Nomad's client keeps about it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2/hcldec"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"nomadsim/pb/base"
	"nomadsim/pb/drivers"
)

// LaunchOptions are what a `plugin` block plus the agent's environment decide.
type LaunchOptions struct {
	Argv         []string          `json:"argv"`
	Env          map[string]string `json:"env"`
	Dir          string            `json:"dir"`
	WithDriver   *bool             `json:"with_driver"`
	StartTimeout float64           `json:"start_timeout_s"` // 0: go-plugin's default, 1 minute
}

// Instance is a running plugin with its dispensed clients and open streams.
type Instance struct {
	client      *plugin.Client
	Base        base.BasePluginClient
	Driver      drivers.DriverClient
	conn        *grpc.ClientConn
	Pid         int
	Addr        string
	HandshakeMs float64
	rawStderr   *lineSink // exactly what the plugin wrote
	agentLog    *lineSink // what go-plugin re-logged into the agent logger
	mu          sync.Mutex
	ConfigSpec  hcldec.Spec
	TaskSpec    hcldec.Spec
	streams     map[string]*Stream
	senders     map[string]func(proto.Message) error // client side of bidi streams
	closers     map[string]func() error
}

// Launch starts a plugin and completes go-plugin's handshake, as the loader does.
func Launch(o LaunchOptions) (*Instance, error) {
	if len(o.Argv) == 0 {
		return nil, errors.New("launch: argv is empty")
	}
	cmd := exec.Command(o.Argv[0], o.Argv[1:]...)
	cmd.Dir = o.Dir
	// Nomad passes the agent's whole environment; extra variables override it here.
	env := os.Environ()
	for k, v := range o.Env {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	inst := &Instance{rawStderr: &lineSink{}, agentLog: &lineSink{}, streams: map[string]*Stream{},
		senders: map[string]func(proto.Message) error{}, closers: map[string]func() error{}}
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "agent", Level: hclog.Trace, JSONFormat: true,
		Output: io.MultiWriter(inst.agentLog, rigLogOutput()),
	})
	withDriver := o.WithDriver == nil || *o.WithDriver
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          pluginSet(withDriver),
		Cmd:              cmd,
		SkipHostEnv:      true, // env above already holds os.Environ(), with overrides applied last
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           inst.rawStderr,
	}
	if o.StartTimeout > 0 {
		cfg.StartTimeout = time.Duration(o.StartTimeout * float64(time.Second))
	}
	inst.client = plugin.NewClient(cfg)
	start := time.Now()
	_, err := inst.client.Client() // starts the process and reads the handshake line
	inst.HandshakeMs = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		inst.client.Kill()
		return inst, fmt.Errorf("launch: %w", err)
	}
	if rc := inst.client.ReattachConfig(); rc != nil {
		inst.Pid = rc.Pid
		if rc.Addr != nil {
			inst.Addr = rc.Addr.Network() + ":" + rc.Addr.String()
		}
	}
	if err := inst.dispense(withDriver); err != nil {
		inst.client.Kill()
		return inst, err
	}
	return inst, nil
}

// Reattach connects to a plugin that outlived the client that launched it, as Nomad does after
// an agent crash from the {pid, addr} it stored: no launch and no handshake line.
func Reattach(pid int, addr string) (*Instance, error) {
	network, address, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, fmt.Errorf("reattach: addr %q is not network:address", addr)
	}
	var na net.Addr
	var err error
	switch network {
	case "unix":
		na, err = net.ResolveUnixAddr("unix", address)
	case "tcp":
		na, err = net.ResolveTCPAddr("tcp", address)
	default:
		err = fmt.Errorf("unknown network %q", network)
	}
	if err != nil {
		return nil, fmt.Errorf("reattach: %w", err)
	}
	inst := &Instance{rawStderr: &lineSink{}, agentLog: &lineSink{}, streams: map[string]*Stream{},
		senders: map[string]func(proto.Message) error{}, closers: map[string]func() error{}, Pid: pid, Addr: addr}
	logger := hclog.New(&hclog.LoggerOptions{Name: "agent", Level: hclog.Trace, JSONFormat: true,
		Output: io.MultiWriter(inst.agentLog, rigLogOutput())})
	inst.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          pluginSet(true),
		Reattach:         &plugin.ReattachConfig{Protocol: plugin.ProtocolGRPC, Addr: na, Pid: pid},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	})
	if err := inst.dispense(true); err != nil {
		return inst, fmt.Errorf("reattach: %w", err)
	}
	return inst, nil
}

func (i *Instance) dispense(withDriver bool) error {
	rpc, err := i.client.Client()
	if err != nil {
		return err
	}
	raw, err := rpc.Dispense("base")
	if err != nil {
		return fmt.Errorf("dispense base: %w", err)
	}
	i.Base = raw.(base.BasePluginClient)
	if withDriver {
		raw, err = rpc.Dispense("driver")
		if err != nil {
			return fmt.Errorf("dispense driver: %w", err)
		}
		d := raw.(*dispensedDriver)
		i.Driver, i.conn = d.client, d.conn
	}
	return nil
}

// KillResult says how a plugin went away.
type KillResult struct {
	Graceful bool    `json:"graceful"` // exited after GRPCController.Shutdown, without SIGKILL
	KillMs   float64 `json:"kill_ms"`
}

// Kill is go-plugin's Kill as Nomad calls it: GRPCController.Shutdown, wait 2 s, then SIGKILL.
// A re-attached plugin is not the rig's child: go-plugin polls its pid once a second and counts
// an exited but not yet reaped process as alive, so the rig also watches /proc for the exit.
func (i *Instance) Kill() KillResult {
	start := time.Now()
	exitedAt := make(chan time.Duration, 1)
	stop := make(chan struct{})
	if i.Pid > 0 {
		go func() {
			for {
				if !procRunning(i.Pid) {
					exitedAt <- time.Since(start)
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	i.client.Kill()
	close(stop)
	forced := false
	for _, l := range i.agentLog.Lines() {
		if strings.Contains(l, "plugin failed to exit gracefully") {
			forced = true
		}
	}
	select {
	case d := <-exitedAt:
		if d < 2*time.Second {
			forced = false
		}
	default:
	}
	return KillResult{Graceful: !forced, KillMs: float64(time.Since(start).Microseconds()) / 1000}
}

// procRunning is false once the process is gone or a zombie (exited, not yet reaped).
func procRunning(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	if j := strings.LastIndexByte(s, ')'); j >= 0 && j+2 < len(s) {
		return s[j+2] != 'Z' && s[j+2] != 'X'
	}
	return true
}

// SigKill simulates a crash: SIGKILL the process, then let go-plugin notice it is gone.
func (i *Instance) SigKill() error {
	if i.Pid == 0 {
		return errors.New("plugin pid unknown")
	}
	if err := syscall.Kill(i.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !i.client.Exited() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	i.client.Kill()
	return nil
}

func (i *Instance) Exited() bool { return i.client.Exited() }

// Stream records the messages of a server stream until it ends.
type Stream struct {
	mu       sync.Mutex
	cond     *sync.Cond
	messages []map[string]any
	ended    bool
	endErr   string
	cancel   context.CancelFunc
}

func newStream(cancel context.CancelFunc) *Stream {
	s := &Stream{cancel: cancel}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *Stream) add(m proto.Message) {
	s.mu.Lock()
	s.messages = append(s.messages, protoToMap(m))
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (s *Stream) end(err error) {
	s.mu.Lock()
	s.ended = true
	if err != nil && !errors.Is(err, io.EOF) {
		s.endErr = describeErr(err)
	}
	s.mu.Unlock()
	s.cond.Broadcast()
}

// Poll waits until at least minCount messages arrived, the stream ended, or the timeout passed.
func (s *Stream) Poll(minCount int, timeout time.Duration) (msgs []map[string]any, ended bool, endErr string) {
	// The timer's flag and wakeup go through the mutex: a wakeup sent between the loop's check
	// and Wait would be lost, and a clock check could disagree with the timer (a Poll on a quiet
	// stream then slept until the next message, which after a task's exit never came).
	timedOut := false
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		timedOut = true
		s.mu.Unlock()
		s.cond.Broadcast()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.messages) < minCount && !s.ended && !timedOut {
		s.cond.Wait()
	}
	// A copy that is never nil: JSON callers get [] for a stream with no message yet, not null.
	return append([]map[string]any{}, s.messages...), s.ended, s.endErr
}

// StartStream opens a server stream (Fingerprint, TaskEvents, TaskStats) under a name.
func (i *Instance) StartStream(name string, open func(ctx context.Context) (func() (proto.Message, error), error)) error {
	ctx, cancel := context.WithCancel(context.Background())
	recv, err := open(ctx)
	if err != nil {
		cancel()
		return err
	}
	s := newStream(cancel)
	i.mu.Lock()
	if old := i.streams[name]; old != nil {
		old.cancel()
	}
	i.streams[name] = s
	i.mu.Unlock()
	go func() {
		for {
			m, err := recv()
			if err != nil {
				s.end(err)
				return
			}
			s.add(m)
		}
	}()
	return nil
}

func (i *Instance) Stream(name string) *Stream {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.streams[name]
}

func (i *Instance) closeStreams() {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, s := range i.streams {
		s.cancel()
	}
}

func protoToMap(m proto.Message) map[string]any {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return map[string]any{"_error": err.Error()}
	}
	var out map[string]any
	_ = jsonUnmarshal(raw, &out)
	return out
}

// describeErr renders an RPC error as Nomad's logs and task events show it.
func describeErr(err error) string {
	return err.Error()
}

func grpcCode(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	return ""
}

func grpcMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
