"""The hclspec Nomad receives and the fix hints our errors carry, pinned as data.

The schemas are derived from the option declarations in ``driver.config``; this snapshot was
taken from the hand-written schemas they replaced, so a change here is a change of the wire
contract with Nomad (or of an error message) and must be deliberate.
"""

from __future__ import annotations

from typing import Any

from driver import hclschema as hs
from driver.config import PLUGIN_SCHEMA, TASK_SCHEMA


def tree(n: hs.Node) -> list[Any]:
    if isinstance(n, hs.Object):
        return ["Object", [[k, tree(v)] for k, v in n.attributes]]
    if isinstance(n, hs.Attr):
        return ["Attr", n.name, n.type, n.required]
    if isinstance(n, hs.Literal):
        return ["Literal", n.value]
    if isinstance(n, hs.Default):
        return ["Default", tree(n.primary), tree(n.default)]
    if isinstance(n, hs.Block):
        return ["Block", n.name, tree(n.nested), n.required]
    if isinstance(n, hs.BlockList):
        return ["BlockList", n.name, tree(n.nested), n.min_items, n.max_items]
    assert isinstance(n, hs.BlockAttrs)
    return ["BlockAttrs", n.name, n.type, n.required]


def hints(schema: hs.Schema, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in schema:
        if isinstance(item, hs.Section):
            out.update(hints(item.fields, prefix + item.key + "."))
        else:
            out[prefix + item.key] = item.hint
    return out


def test_plugin_spec_is_unchanged() -> None:
    assert tree(hs.spec(PLUGIN_SCHEMA)) == PLUGIN_SPEC


def test_task_spec_is_unchanged() -> None:
    assert tree(hs.spec(TASK_SCHEMA)) == TASK_SPEC


def test_fix_hints_are_unchanged() -> None:
    assert hints(PLUGIN_SCHEMA) == PLUGIN_HINTS
    assert hints(TASK_SCHEMA) == TASK_HINTS


# ---- the snapshot ----

PLUGIN_SPEC: list[Any] = ['Object',
 [['dataset', ['Default', ['Attr', 'dataset', 'string', False], ['Literal', '"zroot/xc"']]],
  ['backend', ['Default', ['Attr', 'backend', 'string', False], ['Literal', '"auto"']]],
  ['state_dir', ['Default', ['Attr', 'state_dir', 'string', False], ['Literal', '""']]],
  ['allow_insecure_registries',
   ['Default', ['Attr', 'allow_insecure_registries', 'list(string)', False], ['Literal', '[]']]],
  ['auth',
   ['Block',
    'auth',
    ['Object',
     [['config', ['Default', ['Attr', 'config', 'string', False], ['Literal', '""']]],
      ['helper', ['Default', ['Attr', 'helper', 'string', False], ['Literal', '""']]]]],
    False]],
  ['platform', ['Default', ['Attr', 'platform', 'string', False], ['Literal', '""']]],
  ['allowed_jail_params',
   ['Default', ['Attr', 'allowed_jail_params', 'list(string)', False], ['Literal', '[]']]],
  ['volumes',
   ['Block',
    'volumes',
    ['Object',
     [['enabled', ['Default', ['Attr', 'enabled', 'bool', False], ['Literal', 'false']]],
      ['allowed_host_paths',
       ['Default', ['Attr', 'allowed_host_paths', 'list(string)', False], ['Literal', '[]']]]]],
    False]],
  ['gc',
   ['Block',
    'gc',
    ['Object',
     [['image', ['Default', ['Attr', 'image', 'bool', False], ['Literal', 'true']]],
      ['image_delay', ['Default', ['Attr', 'image_delay', 'string', False], ['Literal', '"3m"']]]]],
    False]],
  ['default_limits',
   ['Block',
    'default_limits',
    ['Object',
     [['maxproc', ['Default', ['Attr', 'maxproc', 'number', False], ['Literal', '0']]],
      ['openfiles', ['Default', ['Attr', 'openfiles', 'number', False], ['Literal', '0']]],
      ['disk', ['Default', ['Attr', 'disk', 'string', False], ['Literal', '""']]]]],
    False]],
  ['max_limits',
   ['Block',
    'max_limits',
    ['Object',
     [['maxproc', ['Default', ['Attr', 'maxproc', 'number', False], ['Literal', '0']]],
      ['openfiles', ['Default', ['Attr', 'openfiles', 'number', False], ['Literal', '0']]],
      ['disk', ['Default', ['Attr', 'disk', 'string', False], ['Literal', '""']]]]],
    False]],
  ['pull_activity_timeout',
   ['Default', ['Attr', 'pull_activity_timeout', 'string', False], ['Literal', '"2m"']]],
  ['linux_images', ['Default', ['Attr', 'linux_images', 'bool', False], ['Literal', 'false']]],
  ['image_limits',
   ['Block',
    'image_limits',
    ['Object',
     [['max_bytes', ['Default', ['Attr', 'max_bytes', 'string', False], ['Literal', '"64G"']]],
      ['max_entries',
       ['Default', ['Attr', 'max_entries', 'number', False], ['Literal', '1000000']]],
      ['max_file_size',
       ['Default', ['Attr', 'max_file_size', 'string', False], ['Literal', '"32G"']]],
      ['max_path_len', ['Default', ['Attr', 'max_path_len', 'number', False], ['Literal', '4096']]],
      ['max_component_len',
       ['Default', ['Attr', 'max_component_len', 'number', False], ['Literal', '255']]],
      ['max_depth', ['Default', ['Attr', 'max_depth', 'number', False], ['Literal', '256']]],
      ['max_link_len', ['Default', ['Attr', 'max_link_len', 'number', False], ['Literal', '4095']]],
      ['max_meta_size',
       ['Default', ['Attr', 'max_meta_size', 'string', False], ['Literal', '"1M"']]],
      ['max_meta_total',
       ['Default', ['Attr', 'max_meta_total', 'string', False], ['Literal', '"64M"']]],
      ['max_sparse_regions',
       ['Default', ['Attr', 'max_sparse_regions', 'number', False], ['Literal', '65536']]],
      ['max_layers', ['Default', ['Attr', 'max_layers', 'number', False], ['Literal', '256']]],
      ['max_index_depth',
       ['Default', ['Attr', 'max_index_depth', 'number', False], ['Literal', '4']]],
      ['max_temp_bytes',
       ['Default', ['Attr', 'max_temp_bytes', 'string', False], ['Literal', '"16G"']]],
      ['max_apply_seconds',
       ['Default', ['Attr', 'max_apply_seconds', 'string', False], ['Literal', '"1h"']]],
      ['device_nodes',
       ['Default', ['Attr', 'device_nodes', 'string', False], ['Literal', '"skip"']]]]],
     False]],
  ['network',
   ['Block',
    'network',
    ['Object',
     [['bridge', ['Default', ['Attr', 'bridge', 'string', False], ['Literal', '"xcbr0"']]],
      ['ipv4_pool',
       ['Default', ['Attr', 'ipv4_pool', 'string', False], ['Literal', '"10.213.0.0/16"']]],
      ['ipv4_gateway', ['Default', ['Attr', 'ipv4_gateway', 'string', False], ['Literal', '""']]],
      ['ipv6_pool', ['Default', ['Attr', 'ipv6_pool', 'string', False], ['Literal', '""']]],
      ['ipv6_gateway', ['Default', ['Attr', 'ipv6_gateway', 'string', False], ['Literal', '""']]],
      ['nat', ['Default', ['Attr', 'nat', 'bool', False], ['Literal', 'false']]],
      ['external_interface',
       ['Default', ['Attr', 'external_interface', 'string', False], ['Literal', '""']]],
      ['alias_interface',
       ['Default', ['Attr', 'alias_interface', 'string', False], ['Literal', '""']]],
      ['alias_pool', ['Default', ['Attr', 'alias_pool', 'string', False], ['Literal', '""']]],
      ['pf_anchor', ['Default', ['Attr', 'pf_anchor', 'string', False], ['Literal', '"xc"']]],
      ['name_prefix', ['Default', ['Attr', 'name_prefix', 'string', False], ['Literal', '"xc"']]]]],
    False]],
  ['spare_clones',
   ['Block',
    'spare_clones',
    ['Object',
     [['count', ['Default', ['Attr', 'count', 'number', False], ['Literal', '1']]],
      ['idle', ['Default', ['Attr', 'idle', 'string', False], ['Literal', '"30m"']]]]],
    False]]]]
TASK_SPEC: list[Any] = ['Object',
 [['image', ['Attr', 'image', 'string', True]],
  ['command', ['Attr', 'command', 'string', False]],
  ['args', ['Default', ['Attr', 'args', 'list(string)', False], ['Literal', '[]']]],
  ['entrypoint', ['Attr', 'entrypoint', 'list(string)', False]],
  ['work_dir', ['Attr', 'work_dir', 'string', False]],
  ['hostname', ['Attr', 'hostname', 'string', False]],
  ['mount',
   ['BlockList',
    'mount',
    ['Object',
     [['type', ['Default', ['Attr', 'type', 'string', False], ['Literal', '"bind"']]],
      ['source', ['Attr', 'source', 'string', False]],
      ['target', ['Attr', 'target', 'string', True]],
      ['readonly', ['Default', ['Attr', 'readonly', 'bool', False], ['Literal', 'false']]],
      ['tmpfs_options',
       ['Block',
        'tmpfs_options',
        ['Object',
         [['size', ['Default', ['Attr', 'size', 'number', False], ['Literal', '0']]],
          ['mode', ['Attr', 'mode', 'number', False]]]],
        False]]]],
    0,
    0]],
  ['volumes', ['Default', ['Attr', 'volumes', 'list(string)', False], ['Literal', '[]']]],
  ['jail_params', ['BlockAttrs', 'jail_params', 'string', False]],
  ['auth',
   ['Block',
    'auth',
    ['Object',
     [['username', ['Attr', 'username', 'string', False]],
      ['password', ['Attr', 'password', 'string', False]],
      ['email', ['Attr', 'email', 'string', False]],
      ['server_address', ['Attr', 'server_address', 'string', False]]]],
    False]],
  ['auth_soft_fail', ['Default', ['Attr', 'auth_soft_fail', 'bool', False], ['Literal', 'false']]],
  ['force_pull', ['Default', ['Attr', 'force_pull', 'bool', False], ['Literal', 'false']]],
  ['image_pull_timeout',
   ['Default', ['Attr', 'image_pull_timeout', 'string', False], ['Literal', '"5m"']]],
  ['platform', ['Default', ['Attr', 'platform', 'string', False], ['Literal', '""']]],
  ['maxproc', ['Default', ['Attr', 'maxproc', 'number', False], ['Literal', '0']]],
  ['openfiles', ['Default', ['Attr', 'openfiles', 'number', False], ['Literal', '0']]],
  ['cpu_hard_limit', ['Default', ['Attr', 'cpu_hard_limit', 'bool', False], ['Literal', 'false']]],
  ['readonly_rootfs',
   ['Default', ['Attr', 'readonly_rootfs', 'bool', False], ['Literal', 'false']]],
  ['labels', ['BlockAttrs', 'labels', 'string', False]],
  ['storage_opt', ['BlockAttrs', 'storage_opt', 'string', False]],
  ['network_mode', ['Default', ['Attr', 'network_mode', 'string', False], ['Literal', '"host"']]],
  ['ports', ['Default', ['Attr', 'ports', 'list(string)', False], ['Literal', '[]']]]]]
PLUGIN_HINTS: dict[str, str] = {
 'allow_insecure_registries': 'list registries allowed over plain HTTP as host[:port], e.g. '
                              '["127.0.0.1:5000"]',
 'allowed_jail_params': 'list the jail parameters tasks may set, e.g. ["allow.raw_sockets", '
                        '"sysvipc"]',
 'auth.config': 'set config to the path of a Docker config.json',
 'auth.helper': 'set helper to a credential helper name, e.g. "ecr-login"',
 'backend': 'set backend = "auto", "freebsd" or "linux"',
 'dataset': 'set dataset = "zroot/xc" (a ZFS dataset for images and task roots)',
 'default_limits.disk': 'set disk to a size such as "10G" (bytes, or k/m/g/t; "0": no quota)',
 'default_limits.maxproc': 'set maxproc to a whole number >= 0 (0: no limit)',
 'default_limits.openfiles': 'set openfiles to a whole number >= 0 (0: no limit)',
 'gc.image': 'set image = true or false',
 'gc.image_delay': 'set image_delay to a duration such as "3m"',
 'linux_images': "set linux_images = true to run Linux images through FreeBSD's Linux ABI, "
                 'or false',
 'max_limits.disk': 'set disk to a size such as "10G" (bytes, or k/m/g/t; "0": no maximum)',
 'image_limits.device_nodes': 'set device_nodes = "skip" or "create"',
 'image_limits.max_apply_seconds': 'set max_apply_seconds to a duration such as "1h" or a number '
                                   'of seconds',
 'image_limits.max_bytes': 'set max_bytes to a size such as "64G" (K/M/G/T) or a number of bytes',
 'image_limits.max_component_len': 'set max_component_len to a whole number >= 1',
 'image_limits.max_depth': 'set max_depth to a whole number >= 1',
 'image_limits.max_entries': 'set max_entries to a whole number >= 1',
 'image_limits.max_file_size': 'set max_file_size to a size such as "32G" (K/M/G/T) or a number of '
                               'bytes',
 'image_limits.max_index_depth': 'set max_index_depth to a whole number >= 1',
 'image_limits.max_layers': 'set max_layers to a whole number >= 1',
 'image_limits.max_link_len': 'set max_link_len to a whole number >= 1',
 'image_limits.max_meta_size': 'set max_meta_size to a size such as "1M" (K/M/G/T) or a number of '
                               'bytes',
 'image_limits.max_meta_total': 'set max_meta_total to a size such as "64M" (K/M/G/T) or a number '
                                'of bytes',
 'image_limits.max_path_len': 'set max_path_len to a whole number >= 1',
 'image_limits.max_sparse_regions': 'set max_sparse_regions to a whole number >= 1',
 'image_limits.max_temp_bytes': 'set max_temp_bytes to a size such as "16G" (K/M/G/T) or a number '
                                'of bytes',
 'max_limits.maxproc': 'set maxproc to a whole number >= 0 (0: no maximum)',
 'max_limits.openfiles': 'set openfiles to a whole number >= 0 (0: no maximum)',
 'network.alias_interface': 'set alias_interface to the host interface alias-mode addresses go on, '
                            'e.g. "em0"',
 'network.alias_pool': 'set alias_pool to the IPv4 network in CIDR form alias addresses come from, '
                       'e.g. "192.0.2.128/25"',
 'network.bridge': 'set bridge to an interface name such as "xcbr0"',
 'network.external_interface': 'set external_interface to the host interface outbound NAT leaves '
                               'by, e.g. "em0" ("": any)',
 'network.ipv4_gateway': "set ipv4_gateway to a host address of ipv4_pool (the bridge's own; "
                         "default: the pool's first)",
 'network.ipv4_pool': 'set ipv4_pool to a private IPv4 network in CIDR form, e.g. "10.213.0.0/16"',
 'network.ipv6_gateway': 'set ipv6_gateway to a host address of ipv6_pool',
 'network.ipv6_pool': 'set ipv6_pool to an IPv6 network in CIDR form, e.g. "fd00:xc::/64" ("": no '
                      'IPv6)',
 'network.name_prefix': 'set name_prefix to 1-15 letters, digits, "_" or "-" (starts every '
                        'namespace, chain and jail name the driver makes)',
 'network.nat': "set nat = true to masquerade the pool's outbound traffic",
 'network.pf_anchor': 'set pf_anchor to the pf anchor name your pf.conf loads, e.g. "xc"',
 'platform': 'set platform = "os/arch[/variant]", e.g. "freebsd/amd64"',
 'pull_activity_timeout': 'set pull_activity_timeout to a duration such as "2m"',
 'spare_clones.count': 'set count to a whole number >= 0 (idle clones kept per recently started '
                       'image and disk quota, at most 16; 0: none)',
 'spare_clones.idle': 'set idle to a duration such as "30m" (a spare not taken for this long is '
                      'destroyed; "0": never)',
 'state_dir': 'set state_dir to an absolute path such as "/var/db/nomad-driver-xc"',
 'volumes.allowed_host_paths': 'list absolute host paths tasks may mount, e.g. ["/srv/data"]',
 'volumes.enabled': 'set enabled = true or false'}
TASK_HINTS: dict[str, str] = {'args': 'set args = ["-c", "echo hi"]',
 'auth.email': 'set email = "user@example.com"',
 'auth.password': 'set password = "secret"',
 'auth.server_address': 'set server_address = "registry.example.com"',
 'auth.username': 'set username = "user"',
 'auth_soft_fail': 'set auth_soft_fail = true or false',
 'command': 'set command = "/bin/sh"',
 'cpu_hard_limit': 'set cpu_hard_limit = true or false',
 'entrypoint': 'set entrypoint = ["/bin/sh", "-c"]',
 'force_pull': 'set force_pull = true or false',
 'hostname': 'set hostname to a DNS name such as "web-1"',
 'image': 'set image = "registry/name:tag"',
 'image_pull_timeout': 'set image_pull_timeout to a duration such as "5m"',
 'jail_params': 'write jail_params = { "allow.raw_sockets" = true }',
 'labels': 'write labels = { team = "web" }',
 'maxproc': 'set maxproc to a whole number >= 0 (0: the plugin default)',
 'mount.readonly': 'set readonly = true or false',
 'mount.source': 'set source to a host path (absolute, or relative to the task dir)',
 'mount.target': 'set target to an absolute path in the task, e.g. "/data"',
 'mount.tmpfs_options.mode': 'set mode as a number, e.g. 1777 for sticky world-writable',
 'mount.tmpfs_options.size': 'set size in bytes (0: no limit)',
 'mount.type': 'set type = "bind" or "tmpfs"',
 'network_mode': 'set network_mode = "host", "bridge", "none" or "alias" (FreeBSD)',
 'openfiles': 'set openfiles to a whole number >= 0 (0: the plugin default)',
 'platform': 'set platform = "os/arch[/variant]", e.g. "linux/amd64"',
 'ports': 'list labels of the group\'s network { port "<label>" {} } blocks to publish, e.g. ports '
          '= ["http"]',
 'readonly_rootfs': 'set readonly_rootfs = true or false',
 'storage_opt': 'write storage_opt = { size = "1G" } (bytes, or k/m/g/t)',
 'volumes': 'write each volume as "host_path:task_path[:ro]"',
 'work_dir': 'set work_dir to an absolute path inside the image, e.g. "/srv"'}
