package node

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version reports the module version and VCS revision of the running
// binary, as "wsmesh VERSION REVISION[+dirty] GOVERSION".
func Version() string {
	version, rev := build()
	return fmt.Sprintf("wsmesh %s %s %s", version, rev, runtime.Version())
}

// build returns the module version and the VCS revision ("+dirty" when
// built from a modified tree) of the running binary.
func build() (version, revision string) {
	version, rev, modified := "(devel)", "unknown revision", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
	}
	return version, rev + modified
}
