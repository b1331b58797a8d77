"""Nomad plugin wire protocol: our own .proto files and the Python modules generated from them.

The proto package, service, message names and field numbers are Nomad's (and go-plugin's); the
file names are ours. Regenerate with ``python -m plugin_proto.gen``.
"""
