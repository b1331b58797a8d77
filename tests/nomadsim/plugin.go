package main

// Launching and dispensing a plugin exactly as Nomad's loader does (reference §1.1): go-plugin's
// client with Nomad's handshake, gRPC only, the agent's whole environment, default ports and
// timeouts, and the two plugin names "base" and "driver".

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"nomadsim/pb/base"
	"nomadsim/pb/drivers"
)

// Handshake is Nomad's base.Handshake (plugins/base/plugin.go).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

type basePlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (basePlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (basePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return base.NewBasePluginClient(c), nil
}

type driverPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (driverPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

// dispensedDriver keeps the connection too, so any unary Driver RPC can be invoked by name.
type dispensedDriver struct {
	client drivers.DriverClient
	conn   *grpc.ClientConn
}

func (driverPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &dispensedDriver{client: drivers.NewDriverClient(c), conn: c}, nil
}

// pluginSet mirrors the loader: the fingerprint launch dispenses only "base".
func pluginSet(withDriver bool) plugin.PluginSet {
	set := plugin.PluginSet{"base": basePlugin{}}
	if withDriver {
		set["driver"] = driverPlugin{}
	}
	return set
}
