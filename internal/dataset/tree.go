package dataset

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Tree writes n files of 200 B to 12 KiB of word-like text under dir, 100
// per directory: a tree of many small files, as /etc or a source tree.
func Tree(dir string, seed uint64, n int) (bytes int64, err error) {
	r := rand.New(rand.NewPCG(seed, 0x7ee))
	words := make([][]byte, 5000)
	for i := range words {
		w := make([]byte, 2+r.IntN(8))
		for j := range w {
			w[j] = 'a' + byte(r.IntN(26))
		}
		words[i] = append(w, ' ')
	}
	buf := make([]byte, 0, 13<<10)
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return bytes, err
			}
		}
		size := 200 + r.IntN(12<<10-200+1)
		buf = buf[:0]
		for len(buf) < size {
			buf = append(buf, words[r.IntN(len(words))]...)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d.txt", i)), buf[:size], 0o644); err != nil {
			return bytes, err
		}
		bytes += int64(size)
	}
	return bytes, nil
}
