package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// A Poll on a stream that never gets another message must still return at its timeout: the
// events follower polls a quiet stream for as long as a task runs, and a lost timer wakeup
// once hung run-job after its task had exited.
func TestPollOnAQuietStreamReturnsAtItsTimeout(t *testing.T) {
	_, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStream(cancel)
	for i := 0; i < 2000; i++ {
		timeout := time.Duration(1+i%50) * time.Microsecond
		done := make(chan struct{})
		go func() {
			defer close(done)
			msgs, ended, _ := s.Poll(1, timeout)
			if len(msgs) != 0 || ended {
				t.Errorf("poll %d: %d messages, ended %v on an empty open stream", i, len(msgs), ended)
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("poll %d with a %v timeout did not return in 5 s", i, timeout)
		}
	}
}

func TestPollReturnsWhenAMessageArrivesOrTheStreamEnds(t *testing.T) {
	_, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStream(cancel)
	go func() {
		time.Sleep(20 * time.Millisecond)
		s.mu.Lock()
		s.messages = append(s.messages, map[string]any{"n": 1})
		s.mu.Unlock()
		s.cond.Broadcast()
		time.Sleep(20 * time.Millisecond)
		s.end(nil)
	}()
	msgs, ended, _ := s.Poll(1, time.Minute)
	if len(msgs) != 1 || ended {
		t.Fatalf("first poll: %d messages, ended %v; want 1 message, open", len(msgs), ended)
	}
	msgs, ended, endErr := s.Poll(2, time.Minute)
	if len(msgs) != 1 || !ended || endErr != "" {
		t.Fatalf("second poll: %d messages, ended %v (%q); want 1 message, ended cleanly", len(msgs), ended, endErr)
	}
}

// stream_poll on a stream that has delivered nothing answers "messages": [] (Go encodes a nil
// slice as null, which a caller taking len() of it crashed on), and says whether it ended.
func TestStreamPollAnswersAnEmptyListForAQuietStream(t *testing.T) {
	_, cancel := context.WithCancel(context.Background())
	defer cancel()
	inst := &Instance{streams: map[string]*Stream{}}
	inst.streams["quiet"] = newStream(cancel)
	resp, err := streamPoll(inst, request{"stream": json.RawMessage(`"quiet"`),
		"min_count": json.RawMessage(`0`), "wait_s": json.RawMessage(`0`)})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Messages *[]map[string]any `json:"messages"`
		Ended    bool              `json:"ended"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Messages == nil || len(*got.Messages) != 0 || got.Ended {
		t.Fatalf("stream_poll answered %s; want messages [] on an open stream", raw)
	}
}
