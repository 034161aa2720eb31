package deploy

import (
	"embed"
	"io/fs"
)

// pipelines holds the pipeline templates the CLI ships (factory pipeline
// run NAME): one YAML file per template, named after it.
//
//go:embed pipelines/*.yaml
var pipelines embed.FS

// Pipelines returns the built-in pipeline templates: NAME.yaml at its root.
func Pipelines() fs.FS {
	sub, err := fs.Sub(pipelines, "pipelines")
	if err != nil {
		// "pipelines" is a constant directory the embed above holds.
		panic(err)
	}
	return sub
}
