// Package bench holds dedupstore's benchmarks: ingest of new and repeated
// data, restore, and peak memory, each for storage/dedup beside the plain
// storage/file baseline in the same run. `make bench` runs them and prints
// a benchstat table. The demo command in bench/demo runs the main job end to
// end on generated database data.
package bench
