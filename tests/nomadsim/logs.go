package main

// Two views of a plugin's stderr: the raw lines (checked against what go-plugin's log reader
// accepts as hclog JSON, reference §1.6), and the entries go-plugin re-logged into the agent's
// logger, i.e. the level at which Nomad would really show each line.

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

const hclogTimestampLayout = "2006-01-02T15:04:05.000000Z07:00"

var hclogLevels = map[string]bool{"trace": true, "debug": true, "info": true, "warn": true, "error": true}

// lineSink collects newline-terminated writes as lines.
type lineSink struct {
	mu      sync.Mutex
	partial strings.Builder
	lines   []string
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range p {
		if b == '\n' {
			s.lines = append(s.lines, s.partial.String())
			s.partial.Reset()
			continue
		}
		s.partial.WriteByte(b)
	}
	return len(p), nil
}

func (s *lineSink) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// checkHclogLine says why go-plugin would not read a line as an hclog JSON entry ("" if it would).
func checkHclogLine(line string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return "not a JSON object (go-plugin logs it verbatim at debug)"
	}
	msg, ok := m["@message"].(string)
	if !ok {
		return "@message is missing or not a string"
	}
	_ = msg
	lvl, ok := m["@level"].(string)
	if !ok || !hclogLevels[lvl] {
		return fmt.Sprintf("@level %v is not one of trace, debug, info, warn, error", m["@level"])
	}
	ts, ok := m["@timestamp"].(string)
	if !ok {
		return "@timestamp is missing or not a string"
	}
	if _, err := time.Parse(hclogTimestampLayout, ts); err != nil {
		return fmt.Sprintf("@timestamp %q does not match %s (exactly 6 fractional digits)", ts, hclogTimestampLayout)
	}
	return ""
}

// agentEntry is one line as the agent's logger wrote it after go-plugin parsed the plugin's line.
type agentEntry struct {
	Level   string         `json:"level"`
	Module  string         `json:"module"`
	Message string         `json:"message"`
	Fields  map[string]any `json:"fields,omitempty"`
}

func parseAgentLines(lines []string) []agentEntry {
	out := make([]agentEntry, 0, len(lines))
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		e := agentEntry{Fields: map[string]any{}}
		for k, v := range m {
			switch k {
			case "@level":
				e.Level, _ = v.(string)
			case "@module":
				e.Module, _ = v.(string)
			case "@message":
				e.Message, _ = v.(string)
			case "@timestamp":
			default:
				e.Fields[k] = v
			}
		}
		out = append(out, e)
	}
	return out
}
