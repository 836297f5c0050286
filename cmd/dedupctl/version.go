package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/spf13/cobra"
)

// versionInfo is what dedupctl version and --version print: the build's
// module version and VCS revision (from the build info), the Go version,
// and the repository formats the build reads and writes.
type versionInfo struct {
	Version  string `json:"version"` // "(devel)" for a build from a checkout
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"` // built with uncommitted changes
	Go       string `json:"go"`
	Reads    []int  `json:"reads_formats"`
	Writes   int    `json:"writes_format"`
}

func buildVersion() versionInfo {
	// Until v0.1.0 a build reads only the format it writes.
	v := versionInfo{Version: "unknown", Go: runtime.Version(), Reads: []int{chunkstore.FormatVersion}, Writes: chunkstore.FormatVersion}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func (v versionInfo) String() string {
	s := "dedupctl " + v.Version
	if v.Revision != "" {
		s += fmt.Sprintf(" (revision %s", v.Revision)
		if v.Modified {
			s += ", modified"
		}
		s += ")"
	}
	return fmt.Sprintf("%s, %s, repository format %d (reads %v)", s, v.Go, v.Writes, v.Reads)
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, its revision, the Go version and the repository format",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			if a.json {
				return a.printJSON(v)
			}
			fmt.Fprintln(a.stdout, v)
			return nil
		},
	}
}
