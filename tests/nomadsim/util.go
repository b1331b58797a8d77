package main

import (
	"bytes"
	"encoding/json"
	"io"
	"time"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func secondsToDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
