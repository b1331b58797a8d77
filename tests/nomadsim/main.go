// nomadsim drives a Nomad task-driver plugin the way a Nomad client does, using the libraries
// Nomad itself uses (go-plugin, hcl/v2 + hcldec, go-cty msgpack) and never Nomad's own module.
//
//	nomadsim serve
//	    JSON command per line on stdin, JSON response per line on stdout (see serve.go).
//	nomadsim agent-start --plugin-dir DIR --config agent.hcl [--name xc] [--watch-s N]
//	    Replays the agent's start-up: discovery in plugin_dir, three launches, SetConfig twice
//	    without nomad_config, then the long-lived instance; prints the first fingerprint.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nomadsim serve | nomadsim agent-start --plugin-dir DIR --config FILE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(runServe())
	case "agent-start":
		os.Exit(runAgentStart(os.Args[2:]))
	case "run-job":
		os.Exit(runRunJob(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "nomadsim: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}
