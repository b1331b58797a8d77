"""The Nomad-client test rig (a Go program) and its Python client."""
