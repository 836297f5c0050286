package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeSize is the buffer growPipe asks for: Linux's default limit for an
// unprivileged process (/proc/sys/fs/pipe-max-size), 16 times its default.
const pipeSize = 1 << 20

// growPipe enlarges the buffer of v, if v is a pipe, from 64 KiB to
// pipeSize: a restore into `mbstream -x` moves gigabytes through it, and
// with 64 KiB the two processes wake each other for every chunk or two
// (dedupctl cat | cat ran at 553 MB/s, and at 821 with 1 MiB). Best
// effort: on a file or a terminal, or beyond the user's limits on pipe
// buffers, v stays as it is. (A backup reading a pipe gained nothing from
// it: 1136 against 1175 MB/s.)
func growPipe(v any) {
	f, ok := v.(*os.File)
	if !ok {
		return
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}
