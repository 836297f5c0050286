//go:build race

package tree

// raceDetector is set in builds with the race detector, in which the tests
// of size (named ...Large) skip: make test runs them in a plain build.
const raceDetector = true
