"""The nomad-driver-xc plugin process: go-plugin shim, Nomad gRPC services, task lifecycle."""
