package main

import (
	"fmt"
	"regexp"
	"slices"

	"nomadsim/pb/base"
)

// goVersionRe approximates hashicorp/go-version's accepted syntax.
var goVersionRe = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)*(-([0-9A-Za-z\-~]+(\.[0-9A-Za-z\-~]+)*))?(\+([0-9A-Za-z\-~]+(\.[0-9A-Za-z\-~]+)*))?$`)

// checkPluginInfo applies the loader's checks (reference Appendix A, PluginInfoResponse).
func checkPluginInfo(r *base.PluginInfoResponse) string {
	if r.GetType() != base.PluginType_DRIVER {
		return fmt.Sprintf("type is %s, a driver must report DRIVER", r.GetType())
	}
	if len(r.GetPluginApiVersions()) == 0 {
		return "plugin_api_versions is empty"
	}
	for _, v := range r.GetPluginApiVersions() {
		if !goVersionRe.MatchString(v) {
			return fmt.Sprintf("plugin_api_versions entry %q is not a version", v)
		}
	}
	if !slices.Contains(r.GetPluginApiVersions(), "v0.1.0") {
		return fmt.Sprintf("plugin_api_versions %v lacks v0.1.0, the only driver API Nomad knows", r.GetPluginApiVersions())
	}
	if !goVersionRe.MatchString(r.GetPluginVersion()) {
		return fmt.Sprintf("plugin_version %q does not parse as a version", r.GetPluginVersion())
	}
	if r.GetName() == "" {
		return "name is empty"
	}
	return ""
}
