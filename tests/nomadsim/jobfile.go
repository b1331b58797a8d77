package main

// The job file as `nomad job run` reads it, for the parts run-job emulates: one group (its
// count, network with ports, services) with one task; and the agent file's `client { }` block.

import (
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// jobTask is the one task of a job file, with the job-level facts run-job needs.
type jobTask struct {
	JobType       string
	Driver        string
	Spec          TaskSpec
	Count         int           // the group's count: one alloc each
	GroupServices []ServiceSpec // the group's service blocks
	Ignored       []string      // settings the rig does not emulate
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
	count := int64(1)
	if err := intAttr(groups[0].Body, "count", &count); err != nil {
		return nil, err
	}
	if count < 1 {
		return nil, fmt.Errorf("%s: group %q: run-job runs a count of at least 1", path, jt.Spec.Group)
	}
	jt.Count = int(count)
	for _, b := range blocksOf(groups[0].Body, "service") {
		svc, ignored, err := parseServiceBlock(b)
		if err != nil {
			return nil, err
		}
		jt.GroupServices = append(jt.GroupServices, svc)
		jt.Ignored = append(jt.Ignored, ignored...)
	}
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
	for _, b := range blocksOf(task.Body, "service") {
		svc, ignored, err := parseServiceBlock(b)
		if err != nil {
			return nil, err
		}
		s.Services = append(s.Services, svc)
		jt.Ignored = append(jt.Ignored, ignored...)
	}
	for _, b := range task.Body.Blocks {
		switch b.Type {
		case "config", "env", "resources", "logs", "service":
		default:
			jt.Ignored = append(jt.Ignored, b.Type)
		}
	}
	return jt, nil
}

// parseNetworkBlock reads a group's `network { mode, hostname, port "<label>" { static, to },
// dns { servers, searches, options } }`. The ports are placed on the client's address (ports.go);
// in the group's own bridge mode the rig forwards none of them (Nomad's CNI portmap would): the
// host reaches a bridge alloc at its own address.
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
		case "port":
			p, err := parsePortBlock(inner)
			if err != nil {
				return nil, nil, err
			}
			ns.Ports = append(ns.Ports, p)
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

// parsePortBlock reads `port "<label>" { static = N, to = M, host_network = "..." }`.
func parsePortBlock(b *hclsyntax.Block) (PortSpec, error) {
	if len(b.Labels) != 1 || b.Labels[0] == "" {
		return PortSpec{}, fmt.Errorf("%s: a port block takes exactly one label", b.DefRange())
	}
	p := PortSpec{Label: b.Labels[0]}
	for name, dst := range map[string]*int{"static": &p.Static, "to": &p.To} {
		a, v, err := optionalAttr(b.Body, name)
		if err != nil {
			return p, err
		}
		if a == nil {
			continue
		}
		if v.IsNull() || !v.Type().Equals(cty.Number) {
			return p, fmt.Errorf("%s: port %q: %s must be a port number", a.SrcRange, p.Label, name)
		}
		i, acc := v.AsBigFloat().Int64()
		if acc != big.Exact || i < -1 || i > 65535 || (name == "static" && i < 0) {
			return p, fmt.Errorf("%s: port %q: %s must be a port number", a.SrcRange, p.Label, name)
		}
		*dst = int(i)
	}
	return p, nil
}

// parseServiceBlock reads a service's name, provider, address_mode, port and address; checks,
// tags and the rest are listed as ignored.
func parseServiceBlock(b *hclsyntax.Block) (ServiceSpec, []string, error) {
	var svc ServiceSpec
	for name, dst := range map[string]*string{"name": &svc.Name, "provider": &svc.Provider,
		"address_mode": &svc.AddressMode, "address": &svc.Address} {
		if err := stringAttr(b.Body, name, dst); err != nil {
			return svc, nil, err
		}
	}
	switch svc.Provider {
	case "", "consul", "nomad":
	default:
		return svc, nil, fmt.Errorf("%s: service provider %q: Nomad knows consul and nomad", b.DefRange(), svc.Provider)
	}
	switch svc.AddressMode {
	case "", "auto", "host", "driver", "alloc":
	default:
		return svc, nil, fmt.Errorf("%s: service address_mode %q: Nomad knows alloc, auto, driver and host", b.DefRange(), svc.AddressMode)
	}
	a, v, err := optionalAttr(b.Body, "port")
	if err != nil {
		return svc, nil, err
	}
	if a != nil {
		switch {
		case !v.IsNull() && v.Type().Equals(cty.String):
			svc.Port = v.AsString()
		case !v.IsNull() && v.Type().Equals(cty.Number):
			svc.Port = v.AsBigFloat().Text('f', -1)
		default:
			return svc, nil, fmt.Errorf("%s: service port must be a port label or a number", a.SrcRange)
		}
	}
	var ignored []string
	for _, inner := range b.Body.Blocks {
		ignored = append(ignored, "service."+inner.Type)
	}
	return svc, ignored, nil
}

// parseClientBlock reads the agent file's `client { network_interface, min_dynamic_port,
// max_dynamic_port }`; other client settings are not the rig's business.
func parseClientBlock(path string) (ClientConfig, error) {
	var c ClientConfig
	src, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return c, diags
	}
	for _, b := range blocksOf(file.Body.(*hclsyntax.Body), "client") {
		if err := stringAttr(b.Body, "network_interface", &c.NetworkInterface); err != nil {
			return c, err
		}
		for name, dst := range map[string]*int{"min_dynamic_port": &c.MinDynamicPort, "max_dynamic_port": &c.MaxDynamicPort} {
			var n int64
			if err := intAttr(b.Body, name, &n); err != nil {
				return c, err
			}
			if n != 0 {
				*dst = int(n)
			}
		}
	}
	return c, nil
}
